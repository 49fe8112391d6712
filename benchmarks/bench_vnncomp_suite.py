"""VNN-COMP benchmarks through the suite runner (``python -m lsub_helpers vnncomp-suite``), as a user runs them.

    .venv/bin/python benchmarks/bench_vnncomp_suite.py mnist_fc [--max-timeout 30] [--workers 1]
    .venv/bin/python benchmarks/bench_vnncomp_suite.py pooled [--max-timeout 30] [--workers 1]
    .venv/bin/python benchmarks/bench_vnncomp_suite.py pooled --networks conv_bn_maxpool --images 6 \
        --csv benchmarks/results/suite_maxpool.csv --md benchmarks/results/suite_maxpool.md

``mnist_fc``: every instance of the shared VNN-COMP 2022 ``mnist_fc`` folder (3 networks x 30 properties);
answers are compared with the consensus of ``ground_truth.csv`` and times with the fastest published tool.
``pooled``: two convolutional networks with batch normalisation, average pooling and zero padding (one
ending in a Softmax) and, with ``--networks conv_bn_maxpool``, one with max pooling (after a ReLU, and
overlapping and padded before one), trained here for 3 epochs on the embedded 5,000-image MNIST subset, exported to ONNX
(one gzipped) with ``--images`` (default 15) correctly classified test images x eps {0.02, 0.05} each, in the VNN-COMP format
(robustness: no other class reaches the label's output).  There are no published times for them; every
``sat`` is re-checked with onnxruntime and every ``unsat`` is attacked with PGD (float32, 200 steps, 10
restarts) on the torch model; a success of either counts as a wrong answer.

Times are the suite's wall time per instance, interpreter start-up and ONNX loading included (what the
competition measures before subtracting its own overhead).  Writes ``benchmarks/results/suite_<name>.md`` and
keeps the runner's CSV beside it (a rerun resumes it).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine as _machine  # noqa: E402
from _common import shared_data  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _run_suite(bench: Path, out_csv: Path, args) -> str:
    cmd = [sys.executable, "-m", "lsub_helpers", "vnncomp-suite", str(bench), "--out", str(out_csv),
           "--workers", str(args.workers)]
    if args.max_timeout:
        cmd += ["--max-timeout", str(args.max_timeout)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    subprocess.run(cmd, env=env, check=True)
    shown = " ".join(["python -m lsub_helpers vnncomp-suite", str(bench), "--out", out_csv.name, "--workers",
                      str(args.workers)] + (["--max-timeout", str(args.max_timeout)] if args.max_timeout else []))
    return shown


def _rows(out_csv: Path) -> list[list[str]]:
    return [r for r in csv.reader(out_csv.open()) if len(r) == 6]


def _parse_result(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not path.exists():
        return None, None
    lines = path.read_text().splitlines()
    xs = [float(l.strip(" ()").split()[1]) for l in lines[1:] if "X_" in l]
    ys = [float(l.strip(" ()").split()[1]) for l in lines[1:] if "Y_" in l]
    return (np.array(xs), np.array(ys)) if xs else (None, None)


def _ort_reaches(onnx_path: Path, x: np.ndarray, vnnlib_path: Path) -> bool:
    import onnxruntime as ort

    from lsub_helpers.vnnlib import read_vnnlib

    data = onnx_path.read_bytes()
    data = gzip.decompress(data) if onnx_path.suffix == ".gz" else data
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    y = sess.run(None, {inp.name: x.astype(np.float32).reshape(shape)})[0].reshape(-1).astype(np.float64)
    for box, disjuncts in read_vnnlib(vnnlib_path):
        if np.all(x >= box[:, 0]) and np.all(x <= box[:, 1]) and any(np.all(m @ y <= r) for m, r in disjuncts):
            return True
    return False


def _summary(rows: list[dict], title: str, command: str, machine: str, notes: list[str], with_fastest: bool) -> str:
    solved = [r for r in rows if r["result"] in ("sat", "unsat")]
    wrong = [r for r in rows if r["wrong"]]
    times = np.array([r["time"] for r in solved]) if solved else np.zeros(0)
    lines = [f"# {title}", "", machine,
             f"- benchmark command: `.venv/bin/python benchmarks/bench_vnncomp_suite.py {' '.join(sys.argv[1:])}`",
             f"- runner command: `{command}`"] + [f"- {n}" for n in notes] + [""]
    counts = {k: sum(r["result"] == k for r in rows) for k in ("sat", "unsat", "timeout", "unknown", "error")}
    lines.append(f"**{len(solved)}/{len(rows)} solved ({100 * len(solved) / max(1, len(rows)):.0f}%), "
                 f"{len(wrong)} wrong answers.** " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                 + (f"; median time of the solved {np.median(times):.2f} s (max {times.max():.2f} s)." if len(times)
                    else "."))
    if with_fastest:
        fast = [r["fastest"] for r in solved if np.isfinite(r["fastest"])]
        if fast:
            lines.append(f"The fastest published tool on the same solved instances: median {np.median(fast):.2f} s "
                         "(runtime minus the competition's overhead).")
    lines += ["", "| network | property | ours | time (s) | check | " + ("consensus | fastest (s) | fastest tool |"
                                                                        if with_fastest else ""),
              "|---|---|---|---:|---|" + ("---|---:|---|" if with_fastest else "")]
    for r in rows:
        line = f"| {r['onnx']} | {r['vnnlib']} | {r['result']} | {r['time']:.2f} | {r['check']} |"
        if with_fastest:
            line += f" {r['truth']} | {r['fastest']:.3f} | {r['fastest_tool']} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# mnist_fc
# ---------------------------------------------------------------------------------------------------


def bench_mnist_fc(args) -> int:
    shared = shared_data()
    if shared is None:
        print("shared data not found (LSUB_SHARED)", file=sys.stderr)
        return 2
    bench = shared / "vnncomp" / "mnist_fc_2022"
    out_csv = Path(args.csv or RESULTS / "suite_mnist_fc.csv")
    machine = _machine()
    command = _run_suite(bench, out_csv, args)
    truth = {(r["onnx"], r["vnnlib"]): r for r in csv.DictReader(open(bench / "ground_truth.csv"))}
    rows = []
    res_dir = out_csv.parent / f"{out_csv.stem}_results"
    from lsub_helpers.vnncomp_suite import Instance

    for cat, onnx, vnn, prep, result, run in _rows(out_csv):
        gt = truth[(onnx, vnn)]
        check = ""
        wrong = result in ("sat", "unsat") and gt["consensus_result"] in ("sat", "unsat") \
            and result != gt["consensus_result"]
        if result == "sat":
            x, _ = _parse_result(res_dir / f"{Instance(onnx, vnn, 0).name}.txt")
            ok = x is not None and _ort_reaches(bench / onnx, x, bench / vnn)
            check = "CE ok (onnxruntime)" if ok else "CE REJECTED"
            wrong |= not ok
        rows.append(dict(onnx=Path(onnx).name, vnnlib=Path(vnn).name, result=result, time=float(run), check=check,
                         wrong=wrong, truth=gt["consensus_result"], fastest=float(gt["fastest_time_s"] or "nan"),
                         fastest_tool=gt["fastest_tool"]))
    notes = [f"timeout per instance: the benchmark's 120 s" + (f" capped at {args.max_timeout:g} s"
                                                               if args.max_timeout else ""),
             "wrong = an answer that contradicts the consensus of ground_truth.csv, or a counterexample that "
             "onnxruntime (float32) does not confirm"]
    text = _summary(rows, "VNN-COMP 2022 mnist_fc through the suite runner", command, machine, notes, True)
    for net in sorted({r["onnx"] for r in rows}):
        sub = [r for r in rows if r["onnx"] == net]
        solved = [r for r in sub if r["result"] in ("sat", "unsat")]
        med = f"{np.median([r['time'] for r in solved]):.2f} s" if solved else "-"
        fast = [r["fastest"] for r in solved if np.isfinite(r["fastest"])]
        print(f"{net}: {len(solved)}/{len(sub)} solved, median {med}, fastest tool median "
              f"{np.median(fast) if fast else float('nan'):.2f} s")
    per_net = []
    for net in sorted({r["onnx"] for r in rows}):
        sub = [r for r in rows if r["onnx"] == net]
        solved = [r for r in sub if r["result"] in ("sat", "unsat")]
        fast = [r["fastest"] for r in solved if np.isfinite(r["fastest"])]
        per_net.append(f"| {net} | {len(solved)}/{len(sub)} | {sum(r['wrong'] for r in sub)} | "
                       + (f"{np.median([r['time'] for r in solved]):.2f}" if solved else "-") + " | "
                       + (f"{np.median(fast):.2f}" if fast else "-") + " |")
    head, table = text.split("\n| network | property", 1)
    text = (head + "\n| network | solved | wrong | median time (s) | fastest tool, same instances (s) |\n"
            "|---|---:|---:|---:|---:|\n" + "\n".join(per_net) + "\n\n| network | property" + table)
    out_md = Path(args.md or RESULTS / "suite_mnist_fc.md")
    out_md.write_text(text)
    print(text.split("\n| network | property")[0])
    return 1 if any(r["wrong"] for r in rows) else 0


# ---------------------------------------------------------------------------------------------------
# pooled conv nets exported here
# ---------------------------------------------------------------------------------------------------


def pooled_models() -> dict[str, nn.Sequential]:
    torch.manual_seed(0)
    a = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 3 * 3, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10),
    )
    b = nn.Sequential(
        nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(1, 8, 4, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 48), nn.ReLU(), nn.Linear(48, 10), nn.Softmax(dim=1),
    )
    c = nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.MaxPool2d(3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    return {"conv_bn_avgpool": a, "pad_conv_bn_avgpool_softmax": b, "conv_bn_maxpool": c}


DEFAULT_POOLED = ("conv_bn_avgpool", "pad_conv_bn_avgpool_softmax")
# the ops each network's file holds, for the notes of the results
_POOLED_OPS = {"conv_bn_avgpool": "BatchNormalization, AveragePool, Dropout",
               "pad_conv_bn_avgpool_softmax": "Pad (with its amounts computed on constants), AveragePool, Softmax",
               "conv_bn_maxpool": "BatchNormalization, MaxPool after a Relu, MaxPool (overlapping, padded) before a "
                                  "Relu"}


def _train(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, epochs: int = 3) -> None:
    logits_model = model[:-1] if isinstance(model[-1], nn.Softmax) else model
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(logits_model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _pgd_finds(model: nn.Sequential, x0: torch.Tensor, label: int, eps: float) -> bool:
    """PGD in float32 on the logits (200 steps, 10 restarts): does some point of the box beat the label?"""
    logits_model = model[:-1] if isinstance(model[-1], nn.Softmax) else model
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    gen = torch.Generator().manual_seed(1)
    x = lo + (hi - lo) * torch.rand((10,) + tuple(x0.shape), generator=gen)
    x[0] = x0
    for step in range(200):
        x = x.detach().requires_grad_(True)
        out = logits_model(x)
        other = out.clone()
        other[:, label] = -torch.inf
        margin = out[:, label] - other.max(1).values
        if (margin.detach() < 0).any():
            return True
        (g,) = torch.autograd.grad(margin.sum(), x)
        size = eps / 4 if step < 100 else eps / 20
        x = torch.minimum(torch.maximum(x - size * g.sign(), lo), hi)
    with torch.no_grad():
        out = logits_model(x)
    return bool((out.argmax(1) != label).any())


def _robustness_property(x0: np.ndarray, label: int, eps: float, n_out: int = 10) -> str:
    lo, hi = np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1)
    text = f"; robustness of a test image, label {label}, eps {eps}\n"
    text += "".join(f"(declare-const X_{i} Real)\n" for i in range(x0.size))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(n_out))
    text += "".join(f"(assert (<= X_{i} {float(hi[i])!r}))\n(assert (>= X_{i} {float(lo[i])!r}))\n"
                    for i in range(x0.size))
    text += "(assert (or\n" + "".join(f"    (and (>= Y_{t} Y_{label}))\n" for t in range(n_out) if t != label) + "))\n"
    return text


def make_pooled_benchmark(folder: Path, n_images: int = 15, eps_list=(0.02, 0.05),
                          networks=DEFAULT_POOLED) -> dict:
    from lsub_helpers import data

    train = data.load("mnist5k", "train")
    test = data.load("mnist5k", "test")
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    (folder / "vnnlib").mkdir(exist_ok=True)
    rows, meta = [], {}
    for name, model in pooled_models().items():
        if name not in networks:
            continue
        _train(model, train.x, train.y)
        with torch.no_grad():
            acc = float((model(test.x).argmax(1) == test.y).float().mean())
        path = folder / "onnx" / f"{name}.onnx"
        torch.onnx.export(model, test.x[:1], str(path), dynamo=False, do_constant_folding=False)
        onnx_name = f"onnx/{name}.onnx"
        if name == "pad_conv_bn_avgpool_softmax":  # published benchmarks are often gzipped
            (folder / "onnx" / f"{name}.onnx.gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
            onnx_name += ".gz"
        meta[onnx_name] = dict(model=model, accuracy=acc)
        with torch.no_grad():
            pred = model(test.x).argmax(1)
        chosen = [i for i in range(len(test.y)) if pred[i] == test.y[i]][:n_images]
        for i in chosen:
            for eps in eps_list:
                vnn = f"vnnlib/{name}_img{i}_eps{eps}.vnnlib"
                (folder / vnn).write_text(_robustness_property(test.x[i].numpy().reshape(-1).astype(np.float64),
                                                               int(test.y[i]), eps))
                rows.append(f"{onnx_name},{vnn},60\n")
                meta[(onnx_name, vnn)] = (test.x[i], int(test.y[i]), eps)
    (folder / "instances.csv").write_text("".join(rows))
    return meta


def bench_pooled(args) -> int:
    folder = Path(args.folder or "/tmp/lsub_pooled_bench")
    out_csv = Path(args.csv or RESULTS / "suite_pooled.csv")
    machine = _machine()
    torch.manual_seed(0)
    meta = make_pooled_benchmark(folder, n_images=args.images, networks=tuple(args.networks))
    command = _run_suite(folder, out_csv, args)
    from lsub_helpers.vnncomp_suite import Instance

    res_dir = out_csv.parent / f"{out_csv.stem}_results"
    rows = []
    for cat, onnx, vnn, prep, result, run in _rows(out_csv):
        x0, label, eps = meta[(onnx, vnn)]
        model = meta[onnx]["model"]
        check, wrong = "", False
        if result == "sat":
            x, _ = _parse_result(res_dir / f"{Instance(onnx, vnn, 0).name}.txt")
            ok = x is not None and _ort_reaches(folder / onnx, x, folder / vnn)
            check, wrong = ("CE ok (onnxruntime)", False) if ok else ("CE REJECTED", True)
        elif result == "unsat":
            found = _pgd_finds(model, x0, label, eps)
            check, wrong = ("PGD found a CE: WRONG", True) if found else ("PGD found none", False)
        rows.append(dict(onnx=Path(onnx).name, vnnlib=Path(vnn).name, result=result, time=float(run), check=check,
                         wrong=wrong))
    accs = ", ".join(f"{Path(k).name} {v['accuracy']:.3f}" for k, v in meta.items() if isinstance(k, str))
    notes = ["networks trained here (3 epochs of Adam on the embedded MNIST 5k subset; test accuracy "
             f"{accs}), exported with torch.onnx.export(dynamo=False, do_constant_folding=False); the files hold "
             "Conv, Relu, Gemm and " + "; ".join(f"{n}: {_POOLED_OPS[n]}" for n in args.networks),
             "timeout per instance 60 s" + (f" capped at {args.max_timeout:g} s" if args.max_timeout else ""),
             "no published tool times exist for these networks",
             "wrong = a counterexample onnxruntime does not confirm, or an unsat where PGD finds a counterexample"]
    text = _summary(rows, "Pooled, batch-normalised conv nets exported from PyTorch, through the suite runner",
                    command, machine, notes, False)
    per_net = []
    for net in sorted({r["onnx"] for r in rows}):
        sub = [r for r in rows if r["onnx"] == net]
        solved = [r for r in sub if r["result"] in ("sat", "unsat")]
        per_net.append(f"| {net} | {len(solved)}/{len(sub)} | {sum(r['wrong'] for r in sub)} | "
                       + (f"{np.median([r['time'] for r in solved]):.2f}" if solved else "-") + " |")
    head, table = text.split("\n| network | property", 1)
    text = (head + "\n| network | solved | wrong | median time (s) |\n|---|---:|---:|---:|\n" + "\n".join(per_net)
            + "\n\n| network | property" + table)
    out_md = Path(args.md or RESULTS / "suite_pooled.md")
    out_md.write_text(text)
    print(text.split("\n| network | property")[0])
    return 1 if any(r["wrong"] for r in rows) else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["mnist_fc", "pooled"])
    ap.add_argument("--max-timeout", type=float, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--csv", default=None, help="the runner's results CSV (default benchmarks/results/suite_*.csv)")
    ap.add_argument("--md", default=None)
    ap.add_argument("--folder", default=None, help="pooled: where the generated benchmark goes")
    ap.add_argument("--images", type=int, default=15, help="pooled: test images per network (x 2 eps)")
    ap.add_argument("--networks", nargs="+", default=list(DEFAULT_POOLED), choices=list(_POOLED_OPS),
                    help="pooled: which of the networks (default: the two average-pooled ones)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    return bench_mnist_fc(args) if args.which == "mnist_fc" else bench_pooled(args)


if __name__ == "__main__":
    sys.exit(main())
