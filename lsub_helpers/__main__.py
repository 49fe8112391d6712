"""Command line: ``python -m lsub_helpers vnncomp ONNX VNNLIB RESULTS TIMEOUT``.

Runs the exact MILP verifier on one VNN-COMP instance and writes ``sat`` (followed by the counterexample
``((X_0 v) ... (Y_0 v) ...)``), ``unsat``, ``timeout``, ``unknown`` or ``error`` to RESULTS, as VNN-COMP
tools do.  Exit status 0 unless the answer is ``error``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback


def _vnncomp(args) -> int:
    from .vnnlib import verify_vnnlib, write_result

    t0 = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(max(1, int(args.threads)))
        from .network import ReluNetwork
        from .vnnlib import read_vnnlib

        net = ReluNetwork.from_onnx(args.onnx)
        prop = read_vnnlib(args.vnnlib)
        left = float(args.timeout) - (time.perf_counter() - t0)
        if left <= 0:
            write_result(args.results, "timeout")
            return 0
        res = verify_vnnlib(net, prop, time_limit=left, bounds=args.bounds, threads=args.threads,
                            tighten_lp=args.tighten_lp)
    except Exception:  # noqa: BLE001  (VNN-COMP expects an answer file whatever happens)
        traceback.print_exc()
        write_result(args.results, "error")
        return 2
    result = res.result
    if result in ("unknown",) and time.perf_counter() - t0 >= float(args.timeout):
        result = "timeout"
    write_result(args.results, result, res.x, res.y)
    print(f"{result} in {time.perf_counter() - t0:.2f} s ({len(res.runs)} MILP runs)")
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
    v.add_argument("--tighten-lp", type=float, default=0.0, metavar="SECONDS",
                   help="time budget for LP tightening of unstable neurons (0: off)")
    v.set_defaults(func=_vnncomp)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
