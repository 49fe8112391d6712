"""Timing and tightness of lsub_helpers.bounds on the shared CNNa MNIST network, next to auto_LiRPA.

    .venv/bin/python benchmarks/bench_bounds.py                  # writes benchmarks/results/bounds.md
    .venv/bin/python benchmarks/bench_bounds.py --setup-auto-lirpa /tmp/alirpa_site   # once, see below

Network: cnna_mnist_wk17a_lp_eps0.1_mipverify (784 -> 3136 -> 1568 -> 100 -> 10) from ../shared.
Every time is the minimum (and median) over ``--repeats`` calls after one warm-up call, with one torch
thread by default (the machine's two cores are shared; with two threads, timings of small ops swing by
orders of magnitude under load).

auto_LiRPA: the PyPI release (0.3, 2022) pins torch < 1.13, so it is installed with ``--no-deps`` into a
separate directory (never into the project's venv) and two imports are fixed for numpy 2 and torch 2.13;
``--setup-auto-lirpa DIR`` does exactly that, and ``AUTO_LIRPA_PATH=DIR`` (default /tmp/alirpa_site) puts
it on ``sys.path``.  Without it the comparison section says so and the rest still runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsub_helpers import bounds as B  # noqa: E402
from lsub_helpers.network import ReluNetwork  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine, mnist_test, shared_data, wk17a_torch  # noqa: E402

SHARED = shared_data() or ROOT.parent / "shared" / "data"
MODEL = SHARED / "models/cnna_mnist_wk17a_lp_eps0.1_mipverify.pt"
IMAGES = SHARED / "mnist/t10k-images-idx3-ubyte.gz"
# (1-based MNIST test index, eps): 493 and 9 at about their adversarial distance (NOTES.md), 1-5 at 0.1
CASES = [(493, 0.0497), (9, 0.0945), (1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1), (5, 0.1)]


def cnna_sequential() -> nn.Sequential:
    return wk17a_torch(SHARED)


def mnist(indices_1based):
    x, y = mnist_test(SHARED)
    idx = [i - 1 for i in indices_1based]
    return x[idx], [int(v) for v in y[idx]]


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, 1000 * min(times), 1000 * statistics.median(times)


def timed_pair(f, g, repeats):
    """Time two functions alternately (so that both see the same load); min and median ms of each."""
    f(), g()
    tf, tg = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        out_f = f()
        tf.append(time.perf_counter() - t)
        t = time.perf_counter()
        out_g = g()
        tg.append(time.perf_counter() - t)
    return (out_f, 1000 * min(tf), 1000 * statistics.median(tf)), (out_g, 1000 * min(tg), 1000 * statistics.median(tg))


# ---------------------------------------------------------------------------------------------------
# auto_LiRPA
# ---------------------------------------------------------------------------------------------------


def setup_auto_lirpa(target: Path) -> None:
    """pip-install auto_LiRPA 0.3 without dependencies into ``target`` and fix two imports."""
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    subprocess.run(pip + ["auto_LiRPA==0.3", "appdirs"], check=True)
    base = target / "auto_LiRPA/operators/base.py"
    base.write_text(base.read_text().replace("from numpy.lib.arraysetops import isin", "from numpy import isin"))
    parse = target / "auto_LiRPA/parse_graph.py"
    text = parse.read_text()
    old = "from torch.onnx.utils import _optimize_graph\nfrom torch.onnx.symbolic_helper import _set_opset_version\n"
    new = (
        "try:\n"
        "    from torch.onnx.utils import _optimize_graph\n"
        "    from torch.onnx.symbolic_helper import _set_opset_version\n"
        "    def _node_get(n, k):\n"
        "        return n[k]\n"
        "except ImportError:  # torch >= 2.9 moved the TorchScript exporter helpers\n"
        "    from torch.onnx._internal.torchscript_exporter.utils import _optimize_graph\n"
        "    from torch.onnx._internal.torchscript_exporter.symbolic_helper import _node_get\n"
        "    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _G\n"
        "    def _set_opset_version(v):\n"
        "        _G.export_onnx_opset_version = v\n"
    )
    text = text.replace(old, new).replace(
        "attrs = {k: n[k] for k in n.attributeNames()}", "attrs = {k: _node_get(n, k) for k in n.attributeNames()}"
    )
    parse.write_text(text)


def import_auto_lirpa():
    path = os.environ.get("AUTO_LIRPA_PATH", "/tmp/alirpa_site")
    if path and Path(path).is_dir() and path not in sys.path:
        sys.path.insert(0, path)
    try:
        import warnings

        warnings.filterwarnings("ignore")
        import auto_LiRPA

        return auto_LiRPA
    except Exception as exc:  # noqa: BLE001 - any import failure means: not available
        print(f"auto_LiRPA not available: {exc!r}")
        return None


class LirpaCrown:
    """auto_LiRPA CROWN on the same box, in float32 or float64, sparse or full intermediate bounds."""

    def __init__(self, lirpa, seq: nn.Sequential, dtype, sparse: bool):
        self.lirpa, self.dtype = lirpa, dtype
        model = seq.to(dtype)
        opts = {} if sparse else {"sparse_intermediate_bounds": False}
        self.module = lirpa.BoundedModule(model, torch.zeros(1, 1, 28, 28, dtype=dtype), bound_opts=opts)

    def __call__(self, x, eps):
        x = x.to(self.dtype).unsqueeze(0)
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        ptb = self.lirpa.PerturbationLpNorm(norm=float("inf"), eps=eps, x_L=lo, x_U=hi)
        with torch.no_grad():
            return self.module.compute_bounds(x=(self.lirpa.BoundedTensor(x, ptb),), method="CROWN")

    def unstable(self):
        counts = []
        for node in self.module._modules.values():
            if type(node).__name__ == "BoundRelu":
                z = node.inputs[0]
                counts.append(int(((z.lower < 0) & (z.upper > 0)).sum()))
        return tuple(counts)


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pair-repeats", type=int, default=11, help="repeats of the ours/auto_LiRPA pairs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bounds.md")
    ap.add_argument("--setup-auto-lirpa", type=Path, metavar="DIR")
    args = ap.parse_args()
    if args.setup_auto_lirpa:
        setup_auto_lirpa(args.setup_auto_lirpa)
        return
    if not (MODEL.exists() and IMAGES.exists()):
        sys.exit(f"shared data missing: {MODEL} or {IMAGES}")
    torch.set_num_threads(args.threads)
    lines = ["# Bounds B: timing and tightness on CNNa MNIST", "", "Produced by `benchmarks/bench_bounds.py`.", ""]
    lines += machine().splitlines()
    seq = cnna_sequential()
    t = time.perf_counter()
    net = ReluNetwork.from_torch(seq, (1, 28, 28))
    _ = [s.weight for s in net.stages]
    setup_ms = 1000 * (time.perf_counter() - t)
    lines += [
        f"- network: {MODEL.name}, layer sizes {net.layer_sizes}; building the ReluNetwork and its dense "
        f"stage matrices (once per network, cached): {setup_ms:.0f} ms",
        f"- repeats: {args.repeats}, {args.pair_repeats} for the pairs with auto_LiRPA (times: min / median ms,"
        " after a warm-up call)",
        "",
    ]
    idx = [i for i, _ in CASES]
    xs, ys = mnist(idx)

    # -- our four methods ---------------------------------------------------------------------------
    configs = [
        ("ibp", "all"), ("crown", "all"), ("crown", "unstable"), ("fastlin", "all"), ("fastlin", "unstable"),
        ("fastlin_ibp", "all"), ("fastlin_ibp", "unstable"),
    ]
    lines += [
        "## lsub_helpers.bounds (float64)",
        "",
        "`intermediate='all'`: linear bounds for every hidden neuron; `'unstable'`: only for neurons that one",
        "IBP step leaves unstable (auto_LiRPA's default). Unstable counts are per ReLU layer (conv1, conv2, dense).",
        "'margin lb' is the lower bound of min over targets of f_label - f_target (with `spec`, not timed);",
        "> 0 proves robustness on the ball.",
        "",
        "| image | eps | method | intermediate | time ms (min / median) | unstable | total | margin lb |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ours = {}
    for k, (image, eps) in enumerate(CASES):
        x, label = xs[k], ys[k]
        spec = torch.stack([torch.eye(10, dtype=torch.float64)[label] - torch.eye(10, dtype=torch.float64)[t]
                            for t in range(10) if t != label])
        for method, mode in configs:
            b, tmin, tmed = timed(lambda: B.compute_bounds(net, x, eps, method=method, intermediate=mode), args.repeats)
            margin = B.compute_bounds(net, x, eps, method=method, intermediate=mode, spec=spec).output[0].min()
            ours[(image, method, mode)] = (b, tmin)
            lines.append(
                f"| {image} | {eps} | {method} | {mode} | {tmin:.1f} / {tmed:.1f} | {b.num_unstable_per_layer()} "
                f"| {b.num_unstable} | {margin:.4f} |"
            )
        print(f"image {image} done", flush=True)

    # -- what 'all' buys: the gaps u - l of every neuron (Algorithm 1 ranks neurons by them) -----------
    lines += [
        "",
        "## CROWN intermediate bounds: 'all' versus 'unstable' (= auto_LiRPA's sparse default)",
        "",
        "Mean gap u - l per ReLU layer, and neurons where 'all' is tighter / looser than 'unstable' (by > 1e-12).",
        "",
        "| image | eps | mean gap 'all' | mean gap 'unstable' | tighter in 'all' | looser in 'all' |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for image, eps in CASES:
        full, sparse = ours[(image, "crown", "all")][0], ours[(image, "crown", "unstable")][0]
        g_full = tuple(round(float(g.mean()), 3) for g in full.gaps())
        g_sparse = tuple(round(float(g.mean()), 3) for g in sparse.gaps())
        tighter = tuple(int(((a[0] > b[0] + 1e-12) | (a[1] < b[1] - 1e-12)).sum())
                        for a, b in zip(full.pre_activation, sparse.pre_activation))
        looser = tuple(int(((a[0] < b[0] - 1e-12) | (a[1] > b[1] + 1e-12)).sum())
                       for a, b in zip(full.pre_activation, sparse.pre_activation))
        lines.append(f"| {image} | {eps} | {g_full} | {g_sparse} | {tighter} | {looser} |")

    # -- auto_LiRPA side by side --------------------------------------------------------------------
    lines += ["", "## auto_LiRPA CROWN on the same boxes", ""]
    lirpa = import_auto_lirpa()
    if lirpa is None:
        lines.append("auto_LiRPA not importable here: comparison skipped (see the module docstring to set it up).")
    else:
        lines += [
            f"auto_LiRPA {getattr(lirpa, '__version__', '0.3')} (`method='CROWN'`, patches conv mode), same"
            " process and thread count. 'vs ours' compares the logit bounds with ours in the matching mode",
            "(sparse = `intermediate='unstable'`, full = `'all'`): the largest |difference| and whether ours",
            "are at least as tight everywhere (up to 1e-5 for float32, 1e-9 for float64).",
            "",
            "Times are measured alternately (ours, theirs, ours, ...) so that both see the same machine load;",
            "'speed-up' is auto_LiRPA's min time over ours.",
            "",
            "| image | eps | auto_LiRPA | time ms (min / median) | unstable | ours ms (min / median) | speed-up | max abs diff | ours as tight |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        speedups: dict[str, list[float]] = {}
        all_tight = True
        runners = {}
        for dtype, name in ((torch.float32, "float32"), (torch.float64, "float64")):
            for sparse in (True, False):
                runners[(name, sparse)] = LirpaCrown(lirpa, cnna_sequential(), dtype, sparse)
        for k, (image, eps) in enumerate(CASES):
            x = xs[k]
            for (name, sparse), run in runners.items():
                mode = "unstable" if sparse else "all"
                (b, ours_ms, ours_med), ((lo, up), tmin, tmed) = timed_pair(
                    lambda: B.crown(net, x, eps, intermediate=mode), lambda: run(x, eps), args.pair_repeats
                )
                ol, ou = b.output
                lo, up = lo[0].double(), up[0].double()
                diff = max((ol - lo).abs().max().item(), (ou - up).abs().max().item())
                tol = 1e-5 if name == "float32" else 1e-9
                tight = bool((ol >= lo - tol * (1 + lo.abs())).all() and (ou <= up + tol * (1 + up.abs())).all())
                label = f"{name}, {'sparse' if sparse else 'full'}"
                lines.append(
                    f"| {image} | {eps} | {label} | {tmin:.1f} / {tmed:.1f} | {run.unstable()} "
                    f"| {ours_ms:.1f} / {ours_med:.1f} | {tmin / ours_ms:.2f}x | {diff:.2e} | {'yes' if tight else 'NO'} |"
                )
                speedups.setdefault(label, []).append(tmin / ours_ms)
                all_tight = all_tight and tight
            print(f"auto_LiRPA image {image} done", flush=True)
        summary = ", ".join(f"{k}: {min(v):.2f}-{max(v):.2f}x (median {statistics.median(v):.2f}x)"
                            for k, v in speedups.items())
        lines += ["", f"Summary: auto_LiRPA time / ours, matched mode: {summary}. "
                  f"Ours at least as tight on every logit bound: {'yes' if all_tight else 'NO'}."]

    # -- a batch of anchors in one call -------------------------------------------------------------
    lines += ["", "## A batch of anchors in one call (images 1-5, eps 0.1)", "",
              "| method | intermediate | one call, 5 anchors (ms) | 5 single calls (ms) |", "| --- | --- | --- | --- |"]
    batch = xs[2:7]
    for method, mode in (("ibp", "all"), ("crown", "all"), ("crown", "unstable"), ("fastlin_ibp", "all")):
        _, t_batch, _ = timed(lambda: B.compute_bounds(net, batch, 0.1, method=method, intermediate=mode), 3)
        _, t_loop, _ = timed(lambda: [B.compute_bounds(net, xi, 0.1, method=method, intermediate=mode) for xi in batch], 3)
        lines.append(f"| {method} | {mode} | {t_batch:.1f} | {t_loop:.1f} |")

    # -- float32 versus float64 for the kernels the backward pass spends its time in ---------------
    lines += ["", "## float32 versus float64 (kernels of the backward pass; we stay in float64)", "",
              "| kernel | float64 ms | float32 ms |", "| --- | --- | --- |"]
    kernels = {
        "conv_transpose2d 200 x (32,7,7) -> (16,14,14) (dense rows through conv2)":
            lambda d: (lambda a=torch.randn(200, 32, 7, 7, dtype=d), w=torch.randn(32, 16, 4, 4, dtype=d):
                       F.conv_transpose2d(a, w, None, 2, 1)),
        "conv_transpose2d 3136 x (16,4,4) -> (1,10,10) (patches through conv1)":
            lambda d: (lambda a=torch.randn(3136, 16, 4, 4, dtype=d), w=torch.randn(16, 1, 4, 4, dtype=d):
                       F.conv_transpose2d(a, w, None, 2)),
        "matmul 200x1568 @ 1568x3136 (the same product with the dense conv2 matrix)":
            lambda d: (lambda a=torch.randn(200, 1568, dtype=d), w=torch.randn(1568, 3136, dtype=d): a @ w),
        "elementwise a*b+c on 3136x256": lambda d: (
            lambda a=torch.randn(3136, 256, dtype=d), b=torch.randn(3136, 256, dtype=d): a * b + a),
    }
    for name, make in kernels.items():
        t64 = timed(make(torch.float64), args.repeats)[1]
        t32 = timed(make(torch.float32), args.repeats)[1]
        lines.append(f"| {name} | {t64:.2f} | {t32:.2f} |")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
