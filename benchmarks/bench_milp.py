"""Speed of the exact MILP verifier on the WK17a CNNa network (MIPVerify's published network).

For each MNIST test image (1-based): the attack's d_adv; unstable neurons on the ball of radius d_adv
under IBP, CROWN, FastLin-IBP and CROWN + LP tightening; the exact distance by ``direct`` minimisation and
by ``bisection``, with their times, the number of MILP runs, and Pyomo construction time against solver
time.  Reference: MIPVerify.jl's published runs of this network with HiGHS took 14-104 s per exact
distance (median about 77 s) with 86-159 unstable neurons after LP tightening.

    .venv/bin/python benchmarks/bench_milp.py [--images 9 493] [--methods direct bisection] [--time-limit 600]

Writes ``benchmarks/results/milp.md`` (and ``milp.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import machine, mnist_test, shared_data, wk17a  # noqa: E402
REFERENCE = {9: 0.0940014207, 493: 0.04930910042}  # MIPVerify (groundtruth file; NOTES for 493)


def _sum(runs, attr):
    return float(sum(getattr(r, attr) for r in runs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[9, 493])
    ap.add_argument("--methods", nargs="+", default=["direct", "bisection"])
    ap.add_argument("--time-limit", type=float, default=600.0, help="per optimisation run")
    ap.add_argument("--tighten-lp", type=float, default=60.0, help="LP tightening budget for direct (s)")
    ap.add_argument("--tol", type=float, default=2e-6, help="bisection interval width")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "milp.md"))
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # a shared 2-core machine: intra-op threads only fight the other processes

    from lsub_helpers import milp
    from lsub_helpers.attacks import min_distance_attack
    from lsub_helpers.distance import boundary_distance

    shared = shared_data()
    if shared is None:
        print("SKIP: shared data directory not found (/work/shared or ../shared)")
        return 0
    net = wk17a(shared)
    images, labels = mnist_test(shared)
    records = []
    for i1 in args.images:
        x, y = images[i1 - 1], int(labels[i1 - 1])
        rec = dict(image=i1, label=y, reference=REFERENCE.get(i1), load_start=os.getloadavg()[0])
        t = time.perf_counter()
        att = min_distance_attack(net, x, y)
        rec["attack_time_s"] = time.perf_counter() - t
        rec["d_adv"] = att.distance
        print(f"image {i1}: label {y}, d_adv {att.distance} ({rec['attack_time_s']:.1f} s)", flush=True)
        if not att.success:
            records.append(rec)
            continue
        lo, hi = milp.input_box(x, att.distance)
        rec["unstable"] = {}
        for m in ("ibp", "crown", "fastlin_ibp"):
            t = time.perf_counter()
            b = milp.compute_bounds(net, lo, hi, m)
            rec["unstable"][m] = dict(per_layer=milp.unstable_counts(net, b), time_s=time.perf_counter() - t)
            if m == "crown":
                crown_b = b
        tb, rep = milp.tighten_bounds_lp(net, lo, hi, crown_b, time_limit=args.tighten_lp)
        rec["unstable"]["crown+lp"] = dict(per_layer=rep.unstable_after, time_s=rep.time_s, lps=rep.lps_solved,
                                           complete=rep.complete)
        print(f"  unstable: {rec['unstable']}", flush=True)
        for method in args.methods:
            kw = dict(tighten_lp=args.tighten_lp) if method == "direct" else dict(tol=args.tol)
            r = boundary_distance(net, x, y, method=method, attack=att, time_limit=args.time_limit, **kw)
            runs = r.runs
            rec[method] = dict(
                status=r.status.value, value=r.value, lower=r.lower, upper=r.upper, time_s=r.time_s,
                bounds_time_s=r.bounds_time_s, runs=len(runs), solve_s=_sum(runs, "time_s"),
                build_s=_sum(runs, "build_time_s"), load_s=_sum(runs, "load_time_s"),
                binaries=[run.num_binaries for run in runs], tolerance=r.tolerance,
                run_table=[dict(eps=run.eps, target=run.target, status=run.solver_status.value,
                                verdict=run.verdict.value, solve_s=run.time_s, build_s=run.build_time_s,
                                load_s=run.load_time_s, binaries=run.num_binaries) for run in runs],
                rel_err=None if rec["reference"] is None or r.value is None else abs(r.value - rec["reference"]) / rec["reference"],
            )
            print(f"  {method}: {r.status.value} value {r.value} [{r.lower}, {r.upper}] in {r.time_s:.1f} s, "
                  f"{len(runs)} runs, solve {rec[method]['solve_s']:.1f} s, build {rec[method]['build_s']:.1f} s, "
                  f"load {rec[method]['load_s']:.1f} s", flush=True)
        rec["load_end"] = os.getloadavg()[0]
        records.append(rec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(records, indent=1, default=str))
    out.write_text(report(records, args))
    print(out.read_text())
    return 0


def report(records, args) -> str:
    lines = [
        "# Exact MILP verifier on WK17a CNNa (MIPVerify's network): speed",
        "",
        machine(),
        "- threads = 1 for HiGHS; the machine was shared (load averages below), so wall times are inflated by",
        "  roughly the load average divided by the 2 cores",
        f"- command: `.venv/bin/python benchmarks/bench_milp.py --images {' '.join(map(str, args.images))} "
        f"--methods {' '.join(args.methods)} --time-limit {args.time_limit:g} --tighten-lp {args.tighten_lp:g} "
        f"--tol {args.tol:g}`",
        "- direct: CROWN bounds on the ball of radius d_adv + LP tightening, one MILP per candidate target, "
        "HiGHS mip_rel_gap 1e-4; bisection: CROWN bounds per eps, verdict-only MILPs, interval width "
        f"{args.tol:g}",
        "- MIPVerify.jl (published, HiGHS, LP tightening): 14-104 s per exact distance, median ~77 s, 86-159 "
        "unstable neurons after tightening",
        "",
        "## Unstable neurons on the ball of radius d_adv (per layer: conv1, conv2, dense)",
        "",
        "| image | d_adv | IBP | CROWN | FastLin-IBP | CROWN + LP | LP tightening (s) |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for r in records:
        u = r.get("unstable")
        if not u:
            continue
        f = lambda k: f"{sum(u[k]['per_layer'])} {tuple(u[k]['per_layer'])}"  # noqa: E731
        lines.append(f"| {r['image']} | {r['d_adv']:.6f} | {f('ibp')} | {f('crown')} | {f('fastlin_ibp')} | "
                     f"{f('crown+lp')} | {u['crown+lp']['time_s']:.1f} |")
    lines += ["", "## Exact distance", "",
              "| image | method | status | value | interval | MIPVerify | rel. err. | total (s) | MILP runs | "
              "solve (s) | Pyomo build (s) | Pyomo compile + load (s) | construction / solve | load avg |",
              "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        for m in args.methods:
            d = r.get(m)
            if not d:
                continue
            cons = (d["build_s"] + d["load_s"]) / max(d["solve_s"], 1e-9)
            ref = "" if r["reference"] is None else f"{r['reference']:.10f}"
            err = "" if d["rel_err"] is None else f"{d['rel_err']:.1e}"
            val = "" if d["value"] is None else f"{d['value']:.10f}"
            lines.append(f"| {r['image']} | {m} | {d['status']} | {val} | [{d['lower']:.8f}, {d['upper']:.8f}] | {ref} | "
                         f"{err} | {d['time_s']:.1f} | {d['runs']} | {d['solve_s']:.1f} | {d['build_s']:.1f} | "
                         f"{d['load_s']:.1f} | {cons:.1%} | {r['load_start']:.1f}-{r.get('load_end', float('nan')):.1f} |")
    lines += ["", "## Optimisation runs", ""]
    for r in records:
        for m in args.methods:
            d = r.get(m)
            if not d:
                continue
            lines.append(f"- image {r['image']}, {m}: " + "; ".join(
                f"eps {t['eps']:.7f} t{t['target']} {t['verdict']} ({t['status']}) {t['solve_s']:.1f} s "
                f"[{t['binaries']} bin, build {t['build_s']:.2f} s]" for t in d["run_table"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
