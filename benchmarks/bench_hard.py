"""Exact D where the MILP is hard (issue #10: normally and PGD-trained networks): the plain MILP beside branch
and bound in front of it, side by side on the same queries.

For random correctly classified test points (the Table 1 protocol: ``sample_anchors``, seed 0) of each
network, the attack distance d, then ``verify`` at 0.5 d and 0.9 d with 60 s per optimisation run and for the
whole call, in two variants run back to back on the same query:

``milp``  the code as it was before branch and bound (``bab=0``, LP screening): one MILP per target left;
``bab``   an attack on the ball, then up to ``--bab`` s of branch and bound per target before its MILP
          (``bab=30``, screening by bounds only: branch and bound rules out targets faster than the LPs).

plus the unstable neurons per layer that CROWN leaves.  ``--distance`` computes the exact distance by bisection
within 600 s with the ``bab`` variant for the anchors already measured (``hard/distance.jsonl``);
``--tightening S`` measures LP tightening (S s) and optimised slopes at the root (``hard/tightening.jsonl``);
``--probe`` runs a heavy PGD at 0.9-0.99 d, to see how close d is to D (``hard/probe.jsonl``).  One JSON
line per anchor goes to ``benchmarks/results/hard/<network>.jsonl`` (resumable); ``--report`` writes
``benchmarks/results/hard.md``.
The records of the first measurement (before branch and bound existed) are kept in ``hard/before/``.

    python benchmarks/bench_hard.py --anchors 4 [--only mnist-cnna-clean]
    python benchmarks/bench_hard.py --anchors 2 --distance        # then --tightening 30, or --probe
    python benchmarks/bench_hard.py --report
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

from _common import ROOT, machine, shared_data, shared_data_or_note

import torch

from lsub_helpers.attacks import min_distance_attack
from lsub_helpers.bounds import alpha_crown_spec, input_box
from lsub_helpers.milp import compute_bounds, tighten_bounds_lp
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
VARIANTS = {"milp": dict(bab=0.0, screen="lp"), "bab": dict(bab=30.0, screen="interval")}
DECIDED = ("robust", "not_robust")


def run(names, n, limit: float, cap: float, bab: float) -> None:
    shared = shared_data_or_note()
    if shared is None:
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
                    for variant, kw in VARIANTS.items():
                        kw = dict(kw, bab=bab if kw["bab"] else 0.0)
                        v = verify(f, x0, y, frac * adv.distance, time_limit=limit, total_time_limit=limit, **kw)
                        rec["queries"].append(dict(
                            variant=variant, fraction=frac, eps=frac * adv.distance, status=v.status.value,
                            time_s=v.time_s, milp_runs=len(v.runs), unstable=list(v.unstable),
                            bab=[dict(target=t, status=b.status.value, domains=b.domains, time_s=b.time_s,
                                      root_lower=b.root_lower, lower=_finite(b.lower)) for t, b in v.bab_runs]))
            append_record(path, rec)
            print(name, i, [(q["fraction"], q["status"], round(q["time_s"], 1)) for q in rec["queries"]], flush=True)


def _resume(path) -> set:
    """One thread; the record file repaired after a crash; the (network, index) pairs it already holds."""
    torch.set_num_threads(1)
    repair(path)
    return {(r["network"], r["index"]) for r in load_records(path)}


def _network(name: str):
    shared = shared_data()
    dataset, rel = NETWORKS[name]
    return load_anchor_data(name, dataset, data_root=str(shared / rel), shared_root=str(shared / "models"))


def distances(names, n: int, limit: float, cap: float, bab: float) -> None:
    """The exact distance by bisection (``bab`` variant, ``limit`` s per run, ``cap`` s in all) of the first
    ``n`` anchors (``sample_anchors``, seed 0, as the queries), one JSON line each in ``hard/distance.jsonl``."""
    path = OUT / "distance.jsonl"
    done = _resume(path)
    for name in names:
        f, xs, ys = _network(name)
        for i in sample_anchors(f, xs, ys, n, seed=0):  # the same anchors as the queries
            if (name, i) in done:
                continue
            x0, y = xs[i].to(torch.float64), int(ys[i])
            adv = min_distance_attack(f, x0, y)
            d = boundary_distance(f, x0, y, method="bisection", attack=adv, time_limit=limit, total_time_limit=cap,
                                  bab=bab, screen="interval")
            out = dict(network=name, index=i, commit=code_commit(), date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       variant="bab", d_adv=adv.distance, status=d.status.value, lower=_finite(d.lower),
                       upper=_finite(d.upper), time_s=d.time_s, attack_s=adv.time_s,
                       steps=[dict(eps=s.eps, status=s.status.value, time_s=s.time_s) for s in d.steps])
            append_record(path, out)
            print("distance", name, i, d.status.value, d.lower, d.upper, round(d.time_s), flush=True)


def tightening(names, n: int, budget: float) -> None:
    """Unstable neurons per layer before and after LP tightening of the root bounds (``budget`` s), and the
    margin bound CROWN and optimised slopes (alpha-CROWN) give, at 0.5 d and 0.9 d of the first ``n``
    anchors that have records: what tighter root bounds buy, beside what branch and bound does."""
    path = OUT / "tightening.jsonl"
    done = _resume(path)
    for name in names:
        f, xs, ys = _network(name)
        for rec in [r for r in load_records(OUT / f"{name}.jsonl") if r["queries"]][:n]:
            if (name, rec["index"]) in done:
                continue
            x0, y = xs[rec["index"]].to(torch.float64), int(ys[rec["index"]])
            out = dict(network=name, index=rec["index"], commit=code_commit(), date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       budget_s=budget, fractions=[])
            for frac in FRACTIONS:
                lo, hi = input_box(f, x0, frac * rec["d_adv"])
                spec = torch.stack([torch.eye(f.num_classes, dtype=torch.float64)[y] - torch.eye(f.num_classes, dtype=torch.float64)[t]
                                    for t in range(f.num_classes) if t != y])
                crown = compute_bounds(f, lo.numpy().reshape(-1), hi.numpy().reshape(-1), "crown")
                _, rep = tighten_bounds_lp(f, lo.numpy().reshape(-1), hi.numpy().reshape(-1), crown, time_limit=budget)
                alpha = alpha_crown_spec(f, lo, hi, spec)
                out["fractions"].append(dict(
                    fraction=frac, unstable_crown=list(rep.unstable_before), unstable_lp=list(rep.unstable_after),
                    lps=rep.lps_solved, lp_time_s=rep.time_s, complete=rep.complete,
                    margin_crown=float(alpha.base_lower.min()), margin_alpha=float(alpha.lower.min()),
                    alpha_time_s=alpha.time_s))
            append_record(path, out)
            print("tightening", name, rec["index"], [(q["fraction"], q["unstable_crown"], q["unstable_lp"]) for q in out["fractions"]], flush=True)


PROBE_FRACTIONS = (0.99, 0.97, 0.95, 0.93, 0.9)


def probe(names, n: int, restarts: int = 64, steps: int = 200) -> None:
    """Is the attack distance d close to D?  A heavy PGD (``restarts`` random starts, ``steps`` steps each) at
    fractions of d below it, on the first ``n`` anchors: a point it finds (re-checked by the attack) proves
    D below that fraction; if it finds none, an exact D needs proofs up to there.  One JSON line per anchor in
    ``hard/probe.jsonl``."""
    from lsub_helpers.attacks import pgd

    path = OUT / "probe.jsonl"
    done = _resume(path)
    for name in names:
        f, xs, ys = _network(name)
        for i in sample_anchors(f, xs, ys, n, seed=0):
            if (name, i) in done:
                continue
            x0, y = xs[i].to(torch.float64), int(ys[i])
            adv = min_distance_attack(f, x0, y)
            found = {}
            t = time.perf_counter()
            for frac in PROBE_FRACTIONS:
                found[str(frac)] = pgd(f, x0, y, frac * adv.distance, steps=steps, restarts=restarts, seed=1).success
            out = dict(network=name, index=i, commit=code_commit(), date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                       d_adv=adv.distance, restarts=restarts, steps=steps, found=found,
                       time_s=time.perf_counter() - t)
            append_record(path, out)
            print("probe", name, i, found, flush=True)


def _finite(v):
    return None if v is None or not math.isfinite(v) else float(v)


def report() -> str:
    lines = ["# Exact D on normally and PGD-trained CNNa networks: the plain MILP and branch and bound", "", machine(), "",
             "Produced by `benchmarks/bench_hard.py` (see its docstring for the two variants, run back to back on "
             "the same queries). Per network and radius (a fraction of the attack distance d): queries decided "
             "(robust or not robust) within 60 s for the whole call, median whole-call time (undecided calls "
             "counted at the time they took), median unstable neurons per ReLU layer left by CROWN at the root "
             "(the same for both variants: branch and bound tightens the bounds per subdomain, not at the root), "
             "and for `bab` the subdomains bounded (median over its runs). Exact distances by bisection with "
             "`bab` within 600 s where measured.", "",
             "| network | anchors | radius | variant | decided within 60 s | median time (s) | "
             "median unstable (per layer) | BaB subdomains (median) | exact D in 600 s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in NETWORKS:
        recs = [r for r in load_records(OUT / f"{name}.jsonl") if r["queries"]]
        if not recs:
            continue
        dist = [r for r in load_records(OUT / "distance.jsonl") if r["network"] == name]
        for frac in FRACTIONS:
            for variant in VARIANTS:
                qs = [q for r in recs for q in r["queries"] if q["fraction"] == frac and q["variant"] == variant]
                if not qs:
                    continue
                in_time = sum(q["status"] in DECIDED and q["time_s"] <= 60.0 for q in qs)
                med = statistics.median(q["time_s"] for q in qs)
                unst = " / ".join(str(int(statistics.median(q["unstable"][k] for q in qs)))
                                  for k in range(len(qs[0]["unstable"])))
                doms = [b["domains"] for q in qs for b in q["bab"]]
                dom = f"{statistics.median(doms):.0f} ({len(doms)} runs)" if doms else "—"
                exact = "—"
                if variant == "bab" and dist:
                    n_exact = sum(d["status"] == "exact" and d["time_s"] <= 600.0 for d in dist)
                    exact = f"{n_exact} / {len(dist)}"
                lines.append(f"| {name} | {len(recs)} | {frac} d | {variant} | {in_time} / {len(qs)} | {med:.3g} | "
                             f"{unst} | {dom} | {exact} |")
    lines += _goal_lines()
    tight = load_records(OUT / "tightening.jsonl")
    if tight:
        lines += ["", "Tighter root bounds (`--tightening`): unstable neurons per layer after CROWN and after LP "
                  "tightening of every unstable neuron (two LPs each, layer by layer, within the budget), and the "
                  "worst margin bound over the targets by CROWN and by optimised slopes (alpha-CROWN, 20 steps):", "",
                  "| network | anchor | radius | unstable, CROWN | unstable, + LP tightening (budget, LPs) | "
                  "margin bound CROWN | alpha-CROWN |", "|---|---|---|---|---|---|---|"]
        for r in tight:
            for q in r["fractions"]:
                lines.append(f"| {r['network']} | {r['index']} | {q['fraction']} d | {' / '.join(map(str, q['unstable_crown']))} | "
                             f"{' / '.join(map(str, q['unstable_lp']))} ({q['lp_time_s']:.0f} s, {q['lps']} LPs"
                             f"{'' if q['complete'] else ', budget spent'}) | {q['margin_crown']:.2f} | {q['margin_alpha']:.2f} |")
    times = [(d["status"], d["time_s"], d["lower"], d["upper"], d["network"]) for d in load_records(OUT / "distance.jsonl")]
    if times:
        lines += ["", "Exact distances (bisection, `bab` variant, 600 s cap):", "",
                  "| network | status | lower | upper | time (s) |", "|---|---|---|---|---|"]
        fmt = (lambda v: "—" if v is None else f"{v:.5f}")
        lines += [f"| {n} | {s} | {fmt(lo)} | {fmt(up)} | {t:.0f} |" for s, t, lo, up, n in times]
    probes = load_records(OUT / "probe.jsonl")
    if probes:
        r0 = probes[0]
        lines += ["", f"How close is the attack distance d to D?  (`--probe`): a heavy PGD ({r0['restarts']} random "
                  f"starts, {r0['steps']} steps each) at fractions of d; a point found proves D below that radius, "
                  "none found means an exact D needs proofs up to there.  Anchors with a point found, per radius:", "",
                  "| network | anchors | " + " | ".join(f"{f} d" for f in PROBE_FRACTIONS) + " |",
                  "|---|---|" + "---|" * len(PROBE_FRACTIONS)]
        for name in dict.fromkeys(r["network"] for r in probes):
            mine = [r for r in probes if r["network"] == name]
            lines.append(f"| {name} | {len(mine)} | " + " | ".join(
                str(sum(bool(r["found"].get(str(f))) for r in mine)) for f in PROBE_FRACTIONS) + " |")
    return "\n".join(lines + _campaign_lines()) + "\n"


def _goal_lines() -> list[str]:
    """The issue's goal per network: at least half of the queries at 0.5 d and 0.9 d decided within 60 s, with
    the code each anchor was measured with (the first anchors predate today's branch and bound)."""
    lines = ["", "The goal, per network: queries at 0.5 d and 0.9 d decided within 60 s by the `bab` variant, by "
             "either variant, and the commits the anchors were measured with:", "",
             "| network | anchors | bab: 0.5 d + 0.9 d | either variant: 0.5 d + 0.9 d | half reached (bab) | "
             "commits (anchors) |", "|---|---|---|---|---|---|"]
    for name in NETWORKS:
        recs = [r for r in load_records(OUT / f"{name}.jsonl") if r["queries"]]
        if not recs:
            continue
        ok = (lambda q: q["status"] in DECIDED and q["time_s"] <= 60.0)
        bab = [ok(q) for r in recs for q in r["queries"] if q["variant"] == "bab"]
        either = [any(ok(q) for q in r["queries"] if q["fraction"] == frac)
                  for r in recs for frac in FRACTIONS]
        commits = {}
        for r in recs:
            key = (r.get("commit") or "unknown")[:7]
            commits[key] = commits.get(key, 0) + 1
        lines.append(f"| {name} | {len(recs)} | {sum(bab)} / {len(bab)} | {sum(either)} / {len(either)} | "
                     f"{'yes' if 2 * sum(bab) >= len(bab) else 'no'} | "
                     + ", ".join(f"{c} ({k})" for c, k in commits.items()) + " |")
    return lines


def _campaign_lines() -> list[str]:
    """The goal's measures on the Table 1 campaign's records (random anchors, seed 0): its bisection starts at
    0.5 d, so that first step is the 0.5 d query; every exact D(f) had 600 s."""
    from lsub_helpers.experiments import ROW_GROUPS

    folder = ROOT / "benchmarks" / "results" / "table1"
    rows = []
    for stem, _, _, network, _ in ROW_GROUPS:
        recs = [r for r in load_records(folder / f"{stem}.jsonl") if r.get("status") == "ok"]
        for variant, group in (("bab", [r for r in recs if (r.get("config") or {}).get("bab")]),
                               ("milp", [r for r in recs if not (r.get("config") or {}).get("bab")])):
            if not group:
                continue
            first = [r["f"]["steps"][0] for r in group if r["f"].get("steps")]
            half = sum(st["status"] in DECIDED and st["time_s"] <= 60.0 and
                       abs(st["eps"] / r["d_adv"] - 0.5) < 1e-9 for st, r in zip(first, group))
            exact = sum(r["f"]["status"] == "exact" for r in group)
            reach = [r["f"]["lower"] / r["d_adv"] for r in group if r["f"].get("lower") is not None]
            t = [r["f"]["time_s"] for r in group]
            rows.append(f"| {network} | {variant} | {len(group)} | {half} / {len(group)} | {exact} / {len(group)} | "
                        f"{statistics.median(reach):.2f} | {statistics.median(t):.0f} |")
    if not rows:
        return []
    return ["", "## The same measures on the Table 1 campaign's random anchors", "",
            "Read from `benchmarks/results/table1/*.jsonl` (random correctly classified test points, seed 0; "
            "records computed with and without branch and bound counted apart, `bab` being the campaign's "
            "setting since it exists). The bisection's first step is the 0.5 d query; *proven lower bound*: the "
            "median over anchors of f's proven lower bound over d where the bisection ended (600 s; for `milp` "
            "records, computed before the bisection went on below an undecided radius, its first timeout).", "",
            "| network | variant | anchors | 0.5 d decided within 60 s | exact D(f) within 600 s | "
            "proven lower bound / d (median) | D(f) time (s, median) |", "|---|---|---|---|---|---|---|"] + rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=int, default=10)
    ap.add_argument("--only", nargs="*", choices=sorted(NETWORKS))
    ap.add_argument("--distance", action="store_true",
                    help="only the exact distances (bisection with branch and bound, --cap s) of the first --anchors anchors")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--cap", type=float, default=600.0)
    ap.add_argument("--bab", type=float, default=30.0, help="seconds of branch and bound per target (bab variant)")
    ap.add_argument("--tightening", type=float, default=None, metavar="SECONDS",
                    help="only measure LP tightening (this budget) and alpha-CROWN at the root on the first anchors")
    ap.add_argument("--probe", action="store_true",
                    help="only a heavy PGD at 0.9-0.99 d on the first --anchors anchors: is d close to D?")
    ap.add_argument("--report", action="store_true", help="only write benchmarks/results/hard.md from the records")
    args = ap.parse_args(argv)
    if args.tightening is not None:
        tightening(args.only or list(NETWORKS), args.anchors, args.tightening)
    elif args.probe:
        probe(args.only or list(NETWORKS), args.anchors)
    elif args.distance:
        distances(args.only or list(NETWORKS), args.anchors, args.time_limit, args.cap, args.bab)
    elif not args.report:
        run(args.only or list(NETWORKS), args.anchors, args.time_limit, args.cap, args.bab)
    text = report()
    (ROOT / "benchmarks" / "results" / "hard.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
