"""Command line: ``python -m lsub_helpers vnncomp ONNX VNNLIB RESULTS TIMEOUT`` and
``python -m lsub_helpers vnncomp-suite BENCHMARK_DIR --out results.csv``.

Runs the exact MILP verifier on one VNN-COMP instance and writes ``sat`` (followed by the counterexample
``((X_0 v) ... (Y_0 v) ...)``), ``unsat``, ``timeout``, ``unknown`` or ``error`` to RESULTS, as VNN-COMP
tools do.  Exit status 0 unless the answer is ``error``.  ``vnncomp-suite`` runs every instance of a
benchmark folder on Dask (see :mod:`lsub_helpers.vnncomp_suite`).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback


def _vnncomp(args) -> int:
    t0 = time.perf_counter()  # before the imports: under load, importing torch alone can take many seconds
    from .io.vnnlib import write_result
    from .vnnlib import verify_vnnlib

    try:
        import torch

        torch.set_num_threads(max(1, int(args.threads)))
        from .io.onnx import load_onnx
        from .io.vnnlib import apply_output_activation, check_output_activation, read_vnnlib

        loaded = load_onnx(args.onnx, softmax="drop")
        net = loaded.net
        prop = read_vnnlib(args.vnnlib)
        check_output_activation(prop, loaded.dropped)
        if loaded.dropped is not None:
            print(f"note: the final {loaded.dropped.value} is left out; the property only compares outputs, "
                  "which it does not change")
        left = float(args.timeout) - (time.perf_counter() - t0)
        if left <= 0:
            write_result(args.results, "timeout")
            return 0
        res = verify_vnnlib(net, prop, time_limit=left, bounds=args.bounds, threads=args.threads,
                            tighten_lp=args.tighten_lp, bab=args.bab)
    except Exception:  # noqa: BLE001  (VNN-COMP expects an answer file whatever happens)
        traceback.print_exc()
        write_result(args.results, "error")
        return 2
    result = res.result
    if result in ("unknown",) and time.perf_counter() - t0 >= float(args.timeout):
        result = "timeout"
    y = apply_output_activation(res.y, loaded.dropped) if res.y is not None else None
    write_result(args.results, result, res.x, y)
    print(f"{result} in {time.perf_counter() - t0:.2f} s ({len(res.runs)} MILP runs)")
    return 0


def _suite(args) -> int:
    from .vnncomp_suite import SuiteOptions, run_suite

    opts = SuiteOptions(bounds=args.bounds, threads=args.threads, tighten_lp=args.tighten_lp, bab=args.bab,
                        grace=args.grace, max_timeout=args.max_timeout)
    run_suite(args.benchmark_dir, args.out, options=opts, scheduler=args.scheduler, workers=args.workers,
              category=args.category, progress=not args.quiet)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lsub_helpers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("vnncomp", help="verify one VNN-COMP instance with the exact MILP (HiGHS)")
    v.add_argument("onnx")
    v.add_argument("vnnlib")
    v.add_argument("results")
    v.add_argument("timeout", type=float)
    v.add_argument("--bounds", default="crown", choices=["ibp", "crown", "fastlin_ibp"])
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--bab", type=float, default=0.0, metavar="SECONDS",
                   help="branch and bound on ReLU splits per disjunct before its MILP (0: the MILP alone)")
    v.add_argument("--tighten-lp", type=float, default=0.0, metavar="SECONDS",
                   help="time budget for LP tightening of unstable neurons (0: off)")
    v.set_defaults(func=_vnncomp)
    s = sub.add_parser("vnncomp-suite", help="run every instance of a VNN-COMP benchmark folder on Dask (resumable)")
    s.add_argument("benchmark_dir")
    s.add_argument("--out", required=True, help="results CSV (VNN-COMP format); existing lines are kept, "
                   "their instances are not run again")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (default: a LocalCluster on this machine)")
    s.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: cores / threads)")
    s.add_argument("--category", default=None, help="category name in the CSV (default: the folder's name)")
    s.add_argument("--max-timeout", type=float, default=None, help="cap on every instance's timeout (s)")
    s.add_argument("--grace", type=float, default=10.0, help="seconds after a timeout before the kill")
    s.add_argument("--bounds", default="crown", choices=["ibp", "crown", "fastlin_ibp"])
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--tighten-lp", type=float, default=0.0, metavar="SECONDS")
    s.add_argument("--bab", type=float, default=0.0, metavar="SECONDS",
                   help="branch and bound per disjunct before its MILP (0: the MILP alone)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=_suite)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
