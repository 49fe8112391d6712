"""HiGHS's sub-MIP heuristics (RINS, RENS) on and off, side by side on the MILPs Table 1 solves.

For random correctly classified test points (``sample_anchors``, seed 0) of every Table 1 network, the attack
distance d, and then four verdict-only MILPs per anchor, each solved twice back to back, once with the
options of the code before (``SAFE_HIGHS_OPTIONS`` with RINS and RENS on, HiGHS's default) and once with
today's (``SPEED_HIGHS_OPTIONS`` added: both off); the order alternates from model to model:

``f@0.5``            f at 0.5 d (a query of D(f)'s bisection);
``linear0.99@0.97``  the linear substitute at gamma 0.99, at 0.97 d (g's bisection near its boundary);
``activation0.99@0.97``  the same with activation pruning;
``linear0.9@0.9``    the linear substitute at gamma 0.9, at 0.9 d.

The target is the class the attack reached.  Bounds are CROWN, as ``verify``'s.  A verdict is the solver's
status read by ``milp.interpret`` (every counterexample re-checked in float64); the two runs of a model must
never disagree where both decide.  One JSON line per model in ``benchmarks/results/highs_options.jsonl``
(resumable); ``--report`` writes ``benchmarks/results/highs_options.md``.

    python benchmarks/bench_highs_options.py --anchors 2 [--only mnist-cnna-clean]
    python benchmarks/bench_highs_options.py --report
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from _common import ROOT, WK17A, machine, shared_data_or_note
from bench_hard import NETWORKS as HARD

import torch

from lsub_helpers import milp
from lsub_helpers.attacks import AttackOptions, min_distance_attack
from lsub_helpers.experiments import code_commit, load_anchor_data, sample_anchors
from lsub_helpers.pruning import prune

NETWORKS = {**HARD, WK17A: ("mnist", "mnist")}  # Table 1's networks: name -> (dataset, data path under the shared data)
MODELS = (("f", None, None, 0.5), ("linear0.99", "linear", 0.99, 0.97), ("activation0.99", "activation", 0.99, 0.97),
          ("linear0.9", "linear", 0.9, 0.9))
BEFORE = {"mip_heuristic_run_rins": True, "mip_heuristic_run_rens": True}  # HiGHS's defaults
VARIANTS = {"before": BEFORE, "now": {}}
OUT = ROOT / "benchmarks" / "results" / "highs_options.jsonl"
LIMIT = 60.0


def _solve(net, model, options: dict) -> dict:
    res = milp.solve_model(model, time_limit=LIMIT, threads=1, objective_bound=0.0, objective_target=-1e-5,
                           options=options)
    verdict, _ = milp.interpret(net, model, res)
    return dict(verdict=verdict.name.lower(), solver_status=res.status.name.lower(), time_s=res.time_s,
                nodes=res.nodes)


def run(names, n: int) -> None:
    shared = shared_data_or_note()
    if shared is None:
        return
    torch.set_num_threads(1)
    done = set()
    if OUT.exists():
        done = {(r["network"], r["index"], r["model"]) for r in map(json.loads, OUT.read_text().splitlines())}
    commit = code_commit()
    for name in names:
        dataset, path = NETWORKS[name]
        f, xs, ys = load_anchor_data(name, dataset, data_root=str(shared / path), shared_root=str(shared))
        for i in sample_anchors(f, xs, ys, n, seed=0):
            if all((name, i, m[0]) in done for m in MODELS):
                continue
            x0, y = xs[i], int(ys[i])
            adv = min_distance_attack(f, x0, y, options=AttackOptions())
            d = float(adv.eps)
            target = int(f.predict(adv.x_adv.reshape((1,) + tuple(f.input_shape)))[0])
            for k, (key, method, gamma, frac) in enumerate(MODELS):
                if (name, i, key) in done:
                    continue
                net = f if method is None else prune(f, x0, y, method=method, gamma=gamma, gamma0=0.25,
                                                     bounds="fastlin_ibp", attack=adv).network
                lo, hi = milp.input_box(x0.reshape(-1).numpy(), frac * d)
                bounds = milp.compute_bounds(net, lo, hi, "crown")
                model = milp.build_model(net, lo, hi, bounds, label=y, target=target)
                order = ("before", "now") if k % 2 == 0 else ("now", "before")
                out = {v: _solve(net, model, VARIANTS[v]) for v in order}
                rec = dict(network=name, index=i, model=key, eps=frac * d, d_adv=d, target=target,
                           binaries=model.counts["binaries"], commit=commit, date=time.strftime("%Y-%m-%dT%H:%M:%S"),
                           **out)
                with OUT.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(name, i, key, rec["binaries"], {v: (out[v]["verdict"], round(out[v]["time_s"], 2)) for v in order},
                      flush=True)


def report() -> str:
    recs = [json.loads(line) for line in OUT.read_text().splitlines()]
    decided = ("robust", "not_robust")
    disagree = [r for r in recs if r["before"]["verdict"] in decided and r["now"]["verdict"] in decided
                and r["before"]["verdict"] != r["now"]["verdict"]]
    lines = ["# HiGHS's sub-MIP heuristics (RINS, RENS) on and off, on the MILPs of Table 1", "", machine(), "",
             f"{len(recs)} models on {len({(r['network'], r['index']) for r in recs})} anchors "
             "(`python benchmarks/bench_highs_options.py --anchors N --only NETWORK`; see the n column).  Each model was solved twice back to back "
             f"(verdict-only, {LIMIT:.0f} s limit, one thread): **before** = `SAFE_HIGHS_OPTIONS` with HiGHS's "
             "default heuristics; **now** = RINS and RENS off (`SPEED_HIGHS_OPTIONS`).  Decided = robust or a "
             "re-checked counterexample.  The ratio is before/now per model, over models both decided.", "",
             f"Verdicts that disagree where both decided: **{len(disagree)}**.", "",
             "| network | model | n | binaries (median) | decided before | decided now | median s before | median s now "
             "| median ratio | total s before | total s now |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in recs:
        groups.setdefault((r["network"], r["model"]), []).append(r)
    for (net, key), rs in groups.items():
        tb = [r["before"]["time_s"] for r in rs]
        tn = [r["now"]["time_s"] for r in rs]
        both = [r["before"]["time_s"] / max(r["now"]["time_s"], 1e-3) for r in rs
                if r["before"]["verdict"] in decided and r["now"]["verdict"] in decided]
        lines.append(f"| {net} | {key} | {len(rs)} | {statistics.median(r['binaries'] for r in rs):.0f} "
                     f"| {sum(r['before']['verdict'] in decided for r in rs)} | {sum(r['now']['verdict'] in decided for r in rs)} "
                     f"| {statistics.median(tb):.2f} | {statistics.median(tn):.2f} "
                     f"| {statistics.median(both):.2f} | {sum(tb):.0f} | {sum(tn):.0f} |" if both else
                     f"| {net} | {key} | {len(rs)} | {statistics.median(r['binaries'] for r in rs):.0f} "
                     f"| {sum(r['before']['verdict'] in decided for r in rs)} | {sum(r['now']['verdict'] in decided for r in rs)} "
                     f"| {statistics.median(tb):.2f} | {statistics.median(tn):.2f} | - | {sum(tb):.0f} | {sum(tn):.0f} |")
    tb = sum(r["before"]["time_s"] for r in recs)
    tn = sum(r["now"]["time_s"] for r in recs)
    lines += ["", f"All models: {tb:.0f} s before, {tn:.0f} s now (timeouts counted at the {LIMIT:.0f} s they took); "
              f"decided {sum(r['before']['verdict'] in decided for r in recs)} before, "
              f"{sum(r['now']['verdict'] in decided for r in recs)} now, of {len(recs)}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchors", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=list(NETWORKS))
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args(argv)
    if not args.report:
        run(args.only, args.anchors)
    text = report()
    (ROOT / "benchmarks" / "results" / "highs_options.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
