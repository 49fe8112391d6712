"""Branch and bound in front of the MILP: the schedule per target, side by side on the same queries.

With ``bab=30`` the campaign used to give branch and bound a first turn of up to 30 s per target before any
MILP.  Where the MILP is small (the certified WK17a network, the substitutes) it decides a query in about a
second, and a target branch and bound cannot prove cost 30 s before that MILP ran.  The variants, back to
back on each query:

``milp``      no branch and bound (``bab=0``, LP screening): the code before branch and bound;
``bab-30``    the former schedule: a first turn of up to 30 s per target, a second turn if it could be 1.5
              times longer, then the MILP (``bab_first=30, milp_first_below=-1``);
``bab-size``  today's schedule (``bab=30``): a first turn of branch and bound of at most 2 s per target
              (0.5 s if the MILP has at most 1,000 binaries, and then a MILP probe of at most 10 s, at most
              half the target's share), a second turn of up to 30 s, the MILP, and time left over to the
              undecided targets; with the branch and bound of before (children's intermediate bounds
              recomputed by CROWN, 8 subdomains per batch, 4 steps: ``BabOptions(recompute=True, batch=8,
              iterations=4)``);
``bab-light`` today's default: the same schedule, but branch and bound keeps the parent's intermediate
              bounds in its children (only the split neuron's clipped; the split constraints enter the bound
              through their multipliers, as in beta-CROWN) and bounds 64 subdomains at once with 2 steps on the
              slopes and multipliers (``BabOptions()``): a subdomain costs about a sixth as much
              (``mnist-cnna-adv2`` 3577 at 0.9 d, its worst target: 7,743 subdomains in 60 s against 1,311;
              17,663 with these batch and step counts).

Three intermediate schedules measured on the way are kept in the records (run by the commits they name):
``bab-probe`` (a first turn of at most 2 s for every MILP, then a MILP probe of at most 2 s, commit 9dd7765),
``bab-probe10`` (the same with a 10 s probe, commit 41f754a) and ``bab-size0`` (a MILP with at most 1,000
binaries: the 10 s probe first and no first turn, commit 5ed0f4a; it lost the 0.9 d query of
``mnist-cnna-adv2`` 8925 that branch and bound proves in 2 s).

Queries: (a) the exact distance of f by bisection (tol 1e-5, ``open_tol`` 1%, 60 s per eps, 600 s cap) on
WK17a anchors near the boundary (the supplementary set's first anchors: there the MILP finishes); (b) the
same for the linear substitute at gamma 0.9 of WK17a's first random anchor; (c) eps-verifications at 0.5 d
and 0.9 d on random anchors of the normally and PGD-trained networks, where branch and bound is what
decides (``bab-30`` against ``bab-probe`` only: the MILP alone decides none at 0.9 d, see ``hard.md``);
(``hard-all``) the same on every Table 1 network, ``bab-size`` against ``bab-light``; (``hard-d``) the
distance of f by bisection, as the campaign runs it, on the first random anchor of ``mnist-cnna-adv2`` and
``cnna_cifar10_sdp_adv4`` (run with one process per variant at the same time).
Every verdict of the variants must agree where two decide.  One JSON line per query goes to
``benchmarks/results/bab_schedule.jsonl`` (resumable); ``--report`` writes ``bab_schedule.md``.

    python benchmarks/bench_bab_schedule.py [--only wk17a-f wk17a-g hard hard-all hard-d] [--variants ...]
    python benchmarks/bench_bab_schedule.py --report
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import ROOT, WK17A, machine, shared_data_or_note

import torch

from lsub_helpers.attacks import min_distance_attack
from lsub_helpers.bab import BabOptions
from lsub_helpers.distance import boundary_distance, verify
from lsub_helpers.experiments import append_record, code_commit, load_anchor_data, load_records, sample_anchors
from lsub_helpers.pruning import prune

OUT = ROOT / "benchmarks" / "results" / "bab_schedule.jsonl"
VARIANTS = {
    "milp": dict(bab=0.0, screen="lp"),
    "bab-30": dict(bab=30.0, bab_first=30.0, milp_first_below=-1, screen="interval"),
    "bab-size": dict(bab=30.0, screen="interval", bab_options=BabOptions(recompute=True, batch=8, iterations=4)),
    "bab-light": dict(bab=30.0, screen="interval"),
}
EARLIER = ("bab-probe", "bab-probe10", "bab-size0")  # in the records only (see the docstring)
WK17A_NEAR = (8, 62, 92, 115)  # the supplementary set's first anchors (d_adv <= 0.1, not certified at 0.1)
_CIFAR = ("cifar10", "cifar10/cifar10_test_first100.npz")
HARD_ALL = {"mnist-cnna-clean": ("mnist", "mnist"), "mnist-cnna-adv1": ("mnist", "mnist"),  # every Table 1 network
            "mnist-cnna-adv2": ("mnist", "mnist"), "cnna_cifar10_sdp_mix": _CIFAR, "cnna_cifar10_sdp_adv": _CIFAR,
            "cnna_cifar10_sdp_adv4": _CIFAR}
HARD = {name: HARD_ALL[name] for name in ("mnist-cnna-clean", "mnist-cnna-adv2", "cnna_cifar10_sdp_adv4")}
HARD_D = {name: HARD_ALL[name] for name in ("mnist-cnna-adv2", "cnna_cifar10_sdp_adv4")}
DECIDED = ("robust", "not_robust", "exact")


def _done() -> set:
    return {(r["case"], r["network"], r["index"], r.get("fraction"), r["variant"]) for r in load_records(OUT)}


def _distance(net, x0, y, adv, variant: str) -> dict:
    t = time.perf_counter()
    d = boundary_distance(net, x0, y, method="bisection", attack=adv, time_limit=60.0, total_time_limit=600.0,
                          tol=1e-5, open_tol=0.01, **VARIANTS[variant])
    return dict(status=d.status.value, lower=d.lower, upper=d.upper, time_s=time.perf_counter() - t,
                steps=len(d.steps))


def run(cases, anchors: int, variants=None) -> None:
    shared = shared_data_or_note()
    if shared is None:
        return
    torch.set_num_threads(1)
    commit, done = code_commit(), _done()
    chosen = [v for v in VARIANTS if not variants or v in variants]

    def put(case, network, index, variant, fraction=None, **out):
        rec = dict(case=case, network=network, index=index, fraction=fraction, variant=variant, commit=commit,
                   date=time.strftime("%Y-%m-%dT%H:%M:%S"), **out)
        append_record(OUT, rec)
        print(rec, flush=True)

    if "wk17a-f" in cases or "wk17a-g" in cases:
        f, xs, ys = load_anchor_data(WK17A, "mnist", data_root=str(shared / "mnist"),
                                     shared_root=str(shared / "models"))
    if "wk17a-f" in cases:
        for i in WK17A_NEAR[:anchors]:
            x0, y = xs[i].reshape(f.input_shape).double(), int(ys[i])
            adv = min_distance_attack(f, x0, y, seed=0)
            for v in chosen:
                if ("wk17a-f", WK17A, i, None, v) not in done:
                    put("wk17a-f", WK17A, i, v, d_adv=adv.distance, **_distance(f, x0, y, adv, v))
    if "wk17a-g" in cases:
        for i in sample_anchors(f, xs, ys, 1, seed=0):
            x0, y = xs[i].reshape(f.input_shape).double(), int(ys[i])
            adv = min_distance_attack(f, x0, y, seed=0)
            g = prune(f, x0, y, method="linear", gamma=0.9, gamma0=0.25, bounds="fastlin_ibp", attack=adv).network
            for v in chosen:
                if ("wk17a-g", WK17A + " linear 0.9", i, None, v) not in done:
                    put("wk17a-g", WK17A + " linear 0.9", i, v, d_adv=adv.distance, **_distance(g, x0, y, adv, v))
    if "hard-d" in cases:  # the exact distance on hard networks, as the campaign runs it (600 s cap)
        for name, (dataset, path) in HARD_D.items():
            net, xs, ys = load_anchor_data(name, dataset, data_root=str(shared / path),
                                           shared_root=str(shared / "models"))
            for i in sample_anchors(net, xs, ys, 1, seed=0):
                x0, y = xs[i].reshape(net.input_shape).double(), int(ys[i])
                adv = min_distance_attack(net, x0, y, seed=0)
                for v in (v for v in chosen if v != "milp"):
                    if ("hard-d", name, i, None, v) not in done:
                        put("hard-d", name, i, v, d_adv=adv.distance, **_distance(net, x0, y, adv, v))
    for case, networks in (("hard", HARD), ("hard-all", HARD_ALL)):
        if case not in cases:
            continue
        for name, (dataset, path) in networks.items():
            net, xs, ys = load_anchor_data(name, dataset, data_root=str(shared / path),
                                           shared_root=str(shared / "models"))
            for i in sample_anchors(net, xs, ys, anchors, seed=0):
                x0, y = xs[i].reshape(net.input_shape).double(), int(ys[i])
                adv = min_distance_attack(net, x0, y, seed=0)
                for frac in (0.5, 0.9):
                    for v in (v for v in chosen if v != "milp"):
                        if (case, name, i, frac, v) in done:
                            continue
                        t = time.perf_counter()
                        r = verify(net, x0, y, frac * adv.distance, time_limit=60.0, total_time_limit=60.0,
                                   **VARIANTS[v])
                        put(case, name, i, v, frac, d_adv=adv.distance, status=r.status.value,
                            time_s=time.perf_counter() - t, milp_runs=len(r.runs), bab_runs=len(r.bab_runs))


def report() -> str:
    recs = load_records(OUT)
    lines = ["# Branch and bound in front of the MILP: the schedule per target", "", machine(), "",
             "Produced by `benchmarks/bench_bab_schedule.py` (its docstring defines the variants and queries; "
             "the variants ran back to back on each query, on a machine also running the Table 1 campaign, so "
             "compare the variants side by side rather than the absolute times).", ""]
    disagree = 0
    keys = sorted({(r["case"], r["network"], r["index"], r.get("fraction")) for r in recs},
                  key=lambda k: (k[0], k[1], k[2], k[3] or 0))
    for case, title in (("wk17a-f", "Exact distance of f, WK17a anchors near the boundary"),
                        ("wk17a-g", "Exact distance of the linear substitute (gamma 0.9) of WK17a's first random "
                                    "anchor"),
                        ("hard", "eps-verification at 0.5 d and 0.9 d on random anchors (60 s for the whole call)"),
                        ("hard-all", "The same on every Table 1 network: children bounded with recomputed "
                                     "intermediate bounds (bab-size) or with their parent's (bab-light)"),
                        ("hard-d", "Distance of f by bisection on a random anchor of two hard networks (600 s cap; "
                                   "lower / d: the proven lower bound over the attack distance)")):
        rows = [k for k in keys if k[0] == case]
        if not rows:
            continue
        variants = [v for v in (*VARIANTS, *EARLIER) if any(r["variant"] == v and r["case"] == case for r in recs)]
        lines += [f"## {title}", "", "| network | anchor | radius | " + " | ".join(variants) + " |",
                  "|---|---|---|" + "---|" * len(variants)]
        for k in rows:
            by = {r["variant"]: r for r in recs if (r["case"], r["network"], r["index"], r.get("fraction")) == k}
            cells = []
            for v in variants:
                r = by.get(v)
                if r is None:
                    cells.append("—")
                elif case in ("hard", "hard-all"):
                    cells.append(f"{r['status']} {r['time_s']:.1f} s")
                elif case == "hard-d":
                    cells.append(f"{r['status']}, lower / d = {r['lower'] / r['d_adv']:.3f}, {r['steps']} steps, "
                                 f"{r['time_s']:.0f} s")
                else:
                    cells.append(f"{r['status']} [{r['lower']:.5f}, {r['upper']:.5f}] {r['time_s']:.0f} s")
            verdicts = {by[v]["status"] for v in variants if v in by and by[v]["status"] in ("robust", "not_robust")}
            disagree += len(verdicts) > 1
            radius = "D" if k[3] is None else f"{k[3]} d"
            lines.append(f"| {k[1]} | {k[2]} | {radius} | " + " | ".join(cells) + " |")
        totals = []
        for v, frac in ((v, f) for v in variants for f in ((0.5, 0.9) if case == "hard-all" else (None,))):
            mine = [r for r in recs if r["case"] == case and r["variant"] == v and frac in (None, r.get("fraction"))]
            ts = [r["time_s"] for r in mine]
            dec = sum(r["status"] in DECIDED for r in mine)
            what = v if frac is None else f"{v} at {frac} d"
            totals.append(f"{what}: {dec} of {len(ts)} decided, total {sum(ts):.0f} s, median {statistics.median(ts):.1f} s")
        lines += ["", "; ".join(totals) + " (undecided queries counted at the time they took).", ""]
    lines += [f"Verdicts that disagree between variants (both decided): {disagree}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=("wk17a-f", "wk17a-g", "hard", "hard-all", "hard-d"))
    ap.add_argument("--anchors", type=int, default=2, help="anchors per network for wk17a-f (at most 4) and hard")
    ap.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), help="only these (default: all)")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args(argv)
    if not args.report:
        run(args.only or ["wk17a-f", "wk17a-g", "hard"], args.anchors, args.variants)
    text = report()
    (ROOT / "benchmarks" / "results" / "bab_schedule.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
