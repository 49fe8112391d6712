"""VNN-COMP 2022 ``mnist_fc`` (784-256xL-10 instances) with the exact MILP verifier.

Runs every ``mnist-net_<--net>`` instance of ``instances.csv`` (default 256x2) with a time limit, checks that no answer
contradicts ``ground_truth.csv`` (``consensus_result``), re-checks every counterexample with onnxruntime
(float32, as VNN-COMP does) and compares the time with the fastest trusted tool.

    .venv/bin/python benchmarks/bench_vnncomp.py [--timeout 60] [--limit N] [--cli] [--net 256x4] [--bab 20]

``--bab S``: up to S seconds of branch and bound on ReLU splits per disjunct before its MILP.

``--cli`` runs each instance through ``python -m lsub_helpers vnncomp`` in a subprocess (includes the
interpreter start-up, as the competition measured); the default runs in-process (times exclude start-up,
as ``fastest_time_s`` = runtime minus overhead).  Writes ``benchmarks/results/vnncomp_mnist_fc.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine as _machine  # noqa: E402
BENCH = Path(os.environ.get("LSUB_SHARED", ROOT.parent / "shared")) / "data" / "vnncomp" / "mnist_fc_2022"


def _ort_check(onnx_path: Path, x: np.ndarray, prop) -> bool:
    """Does the counterexample reach the unsafe set when evaluated by onnxruntime in float32?"""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    y = sess.run(None, {inp.name: x.astype(np.float32).reshape(shape)})[0].reshape(-1).astype(np.float64)
    for box, disjuncts in prop:
        if np.all(x >= box[:, 0] - 1e-12) and np.all(x <= box[:, 1] + 1e-12):
            if any(np.all(m @ y <= r) for m, r in disjuncts):
                return True
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--cli", action="store_true")
    ap.add_argument("--bounds", default="crown")
    ap.add_argument("--tighten-lp", type=float, default=0.0)
    ap.add_argument("--no-attack", action="store_true", help="MILP only (no falsifier before it)")
    ap.add_argument("--net", default="256x2", choices=["256x2", "256x4", "256x6"])
    ap.add_argument("--bab", type=float, default=0.0, help="seconds of branch and bound per disjunct first")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vnncomp_mnist_fc.md"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: intra-op threads only fight the other processes

    from lsub_helpers.network import ReluNetwork
    from lsub_helpers.vnnlib import read_vnnlib, verify_vnnlib

    truth = {}
    with open(BENCH / "ground_truth.csv") as f:
        for row in csv.DictReader(f):
            truth[(row["onnx"], row["vnnlib"])] = row
    with open(BENCH / "instances.csv") as f:
        inst = [r for r in csv.DictReader(f) if args.net in r["onnx"]]
    if args.limit:
        inst = inst[: args.limit]
    machine = _machine()
    nets = {}
    rows = []
    for r in inst:
        onnx_p, vnn_p = BENCH / r["onnx"], BENCH / r["vnnlib"]
        gt = truth[(r["onnx"], r["vnnlib"])]
        prop = read_vnnlib(vnn_p)
        t0 = time.perf_counter()
        if args.cli:
            with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
                subprocess.run([sys.executable, "-m", "lsub_helpers", "vnncomp", str(onnx_p), str(vnn_p), out.name,
                                str(args.timeout), "--bounds", args.bounds, "--tighten-lp", str(args.tighten_lp),
                                "--bab", str(args.bab)],
                               cwd=ROOT, capture_output=True, text=True)
                lines = Path(out.name).read_text().splitlines()
            result = lines[0].strip() if lines else "error"
            x = None
            if result == "sat":
                vals = [float(tok.strip("()").split()[1]) for tok in "\n".join(lines[1:]).split("\n") if "X_" in tok]
                x = np.array(vals)
            n_runs = None
        else:
            if r["onnx"] not in nets:
                nets[r["onnx"]] = ReluNetwork.from_onnx(onnx_p)
            res = verify_vnnlib(nets[r["onnx"]], prop, time_limit=args.timeout, bounds=args.bounds,
                                tighten_lp=args.tighten_lp, attack_steps=0 if args.no_attack else 50, bab=args.bab)
            result, x, n_runs = res.result, res.x, len(res.runs)
        wall = time.perf_counter() - t0
        ce_ok = _ort_check(onnx_p, x, prop) if result == "sat" and x is not None else None
        want = gt["consensus_result"]
        contradiction = result in ("sat", "unsat") and want in ("sat", "unsat") and result != want
        rows.append(dict(vnnlib=r["vnnlib"].split("/")[-1], result=result, truth=want, time=wall,
                         fastest=float(gt["fastest_time_s"] or "nan"), fastest_tool=gt["fastest_tool"], ce_ok=ce_ok,
                         contradiction=contradiction, runs=n_runs))
        print(f"{rows[-1]['vnnlib']:22s} {result:8s} truth {want:6s} {wall:7.2f} s  fastest {gt['fastest_time_s']:>6s} s"
              f" ({gt['fastest_tool']})  ce_ort={ce_ok}  milp_runs={n_runs}", flush=True)
    solved = [r for r in rows if r["result"] in ("sat", "unsat")]
    bad = [r for r in rows if r["contradiction"]]
    bad_ce = [r for r in rows if r["ce_ok"] is False]
    times = np.array([r["time"] for r in solved]) if solved else np.zeros(0)
    ratio = np.array([r["time"] / max(r["fastest"], 1e-3) for r in solved]) if solved else np.zeros(0)
    lines = [
        f"# VNN-COMP 2022 mnist_fc, 784-{args.net}-10: exact MILP (Pyomo + HiGHS)"
        + (f", {args.bab:g} s of branch and bound per disjunct first" if args.bab else ""),
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        machine,
        f"- command: `.venv/bin/python benchmarks/bench_vnncomp.py --timeout {args.timeout:g}"
        f"{' --cli' if args.cli else ''} --bounds {args.bounds} --tighten-lp {args.tighten_lp:g}"
        f"{' --no-attack' if args.no_attack else ''} --net {args.net} --bab {args.bab:g}`"
        + (" (times include interpreter start-up)" if args.cli else " (in-process: times exclude start-up)"),
        f"- threads: 1; bounds: {args.bounds}; LP tightening budget {args.tighten_lp:g} s; "
        f"{'no falsifier' if args.no_attack else 'sign-gradient falsifier (50 steps, 5 starts) first'}; "
        "then a verdict-only MILP per remaining disjunct",
        "",
        f"**{len(solved)}/{len(rows)} solved, {len(bad)} contradictions with the consensus, "
        f"{len(bad_ce)} counterexamples rejected by onnxruntime.**  "
        + (f"Median {np.median(times):.2f} s, max {times.max():.2f} s; median ratio to the fastest tool "
           f"{np.median(ratio):.1f}x." if len(times) else ""),
        "",
        "| property | ours | consensus | our time (s) | fastest (s) | fastest tool | CE ok (onnxruntime) | MILP runs |",
        "|---|---|---|---:|---:|---|---|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['vnnlib']} | {r['result']} | {r['truth']} | {r['time']:.2f} | {r['fastest']:.3f} | "
                     f"{r['fastest_tool']} | {'' if r['ce_ok'] is None else r['ce_ok']} | "
                     f"{'' if r['runs'] is None else r['runs']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return 1 if bad or bad_ce else 0


if __name__ == "__main__":
    sys.exit(main())
