"""Exact D where the MILP is hard (issue: normally and PGD-trained networks): measure before improving.

For random correctly classified test points (the Table 1 protocol: ``sample_anchors``, seed 0) of each
network, the attack distance d, then ``verify`` at 0.5 d and 0.9 d with 60 s (one optimisation run and the
whole call), the unstable neurons per layer that CROWN leaves at those radii, and optionally
(``--distance``) the exact distance by bisection within 600 s.  One JSON line per anchor goes to
``benchmarks/results/hard/<network>.jsonl`` (resumable); ``--report`` writes ``benchmarks/results/hard.md``.

    python benchmarks/bench_hard.py --anchors 10 [--only mnist-cnna-clean] [--distance]
    python benchmarks/bench_hard.py --report
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import ROOT, machine, shared_data

import torch

from lsub_helpers.attacks import min_distance_attack
from lsub_helpers.distance import boundary_distance, verify
from lsub_helpers.experiments import append_record, code_commit, load_anchor_data, load_records, repair, sample_anchors

NETWORKS = {  # name: (dataset, data path under the shared data directory)
    "mnist-cnna-clean": ("mnist", "mnist"),
    "mnist-cnna-adv1": ("mnist", "mnist"),
    "mnist-cnna-adv2": ("mnist", "mnist"),
    "cnna_cifar10_sdp_mix": ("cifar10", "cifar10/cifar10_test_first100.npz"),
    "cnna_cifar10_sdp_adv": ("cifar10", "cifar10/cifar10_test_first100.npz"),
    "cnna_cifar10_sdp_adv4": ("cifar10", "cifar10/cifar10_test_first100.npz"),
}
OUT = ROOT / "benchmarks" / "results" / "hard"
FRACTIONS = (0.5, 0.9)


def run(names, n, distance: bool, limit: float, cap: float) -> None:
    shared = shared_data()
    if shared is None:
        print("no shared data directory (LSUB_SHARED, /work/shared or ../shared): nothing to run")
        return
    torch.set_num_threads(1)
    commit = code_commit()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        dataset, rel = NETWORKS[name]
        f, xs, ys = load_anchor_data(name, dataset, data_root=str(shared / rel), shared_root=str(shared / "models"))
        path = OUT / f"{name}.jsonl"
        repair(path)
        done = {r["index"] for r in load_records(path)}
        for i in sample_anchors(f, xs, ys, n, seed=0):
            if i in done:
                continue
            x0, y = xs[i].to(torch.float64), int(ys[i])
            adv = min_distance_attack(f, x0, y)
            rec = dict(network=name, index=i, commit=commit, date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       d_adv=adv.distance, attack_s=adv.time_s, queries=[])
            if adv.success:
                for frac in FRACTIONS:
                    v = verify(f, x0, y, frac * adv.distance, time_limit=limit, total_time_limit=limit)
                    rec["queries"].append(dict(fraction=frac, eps=frac * adv.distance, status=v.status.value,
                                               time_s=v.time_s, milp_runs=len(v.runs), unstable=list(v.unstable)))
                if distance:
                    d = boundary_distance(f, x0, y, method="bisection", attack=adv, time_limit=limit,
                                          total_time_limit=cap)
                    rec["distance"] = dict(status=d.status.value, lower=d.lower, upper=d.upper, time_s=d.time_s)
            append_record(path, rec)
            print(name, i, [(q["fraction"], q["status"], round(q["time_s"], 1)) for q in rec["queries"]], flush=True)


def report() -> str:
    lines = ["# Exact D on normally and PGD-trained CNNa networks: today's code", "", machine(), "",
             "Per network and radius (a fraction of the attack distance d): queries decided (robust or not robust) "
             "within 60 s, median time, median unstable neurons per ReLU layer left by CROWN; exact distances "
             "(bisection) within 600 s where measured.", "",
             "| network | anchors | radius | decided within 60 s (whole call) | median time (s) | median unstable (conv1 / conv2 / dense) | "
             "exact D in 600 s |", "|---|---|---|---|---|---|---|"]
    for name in NETWORKS:
        recs = load_records(OUT / f"{name}.jsonl")
        if not recs:
            continue
        dist = [r["distance"] for r in recs if "distance" in r]
        exact = f"{sum(d['status'] == 'exact' for d in dist)} / {len(dist)}" if dist else "not run"
        for frac in FRACTIONS:
            qs = [q for r in recs for q in r["queries"] if q["fraction"] == frac]
            if not qs:
                continue
            decided = sum(q["status"] in ("robust", "not_robust") for q in qs)
            in_time = sum(q["status"] in ("robust", "not_robust") and q["time_s"] <= 60.0 for q in qs)
            med = statistics.median(q["time_s"] for q in qs)
            unst = " / ".join(str(int(statistics.median(q["unstable"][k] for q in qs))) for k in range(len(qs[0]["unstable"])))
            lines.append(f"| {name} | {len(recs)} | {frac} d | {in_time} / {len(qs)} ({decided} in any time) | {med:.3g} | "
                         f"{unst} | {exact} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=int, default=10)
    ap.add_argument("--only", nargs="*", choices=sorted(NETWORKS))
    ap.add_argument("--distance", action="store_true", help="also the exact distance (600 s cap)")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--cap", type=float, default=600.0)
    ap.add_argument("--report", action="store_true", help="only write benchmarks/results/hard.md from the records")
    args = ap.parse_args(argv)
    if not args.report:
        run(args.only or list(NETWORKS), args.anchors, args.distance, args.time_limit, args.cap)
    text = report()
    (ROOT / "benchmarks" / "results" / "hard.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
