"""The experiment runner: records, resuming after a crash, and the columns of Table 1 by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lsub_helpers.experiments import (ExperimentConfig, load_records, run_anchor, run_experiment, runtime_points,
                                      select_anchors,
                                      table1, table1_markdown)
from lsub_helpers.network import ReluNetwork


def _run(eps, status, t):
    return dict(eps=eps, target=1, status=status, solver_status="x", time_s=t, build_time_s=0.0, binaries=3)


def _dist(value, runs, status="exact", time_s=10.0, attack_s=1.0):
    return dict(status=status, value=value, lower=value, upper=value, time_s=time_s, attack_s=attack_s, runs=runs)


RECORDS = [
    dict(index=0, label=1, status="ok", d_adv=0.12,
         f=_dist(0.1, [_run(0.05, "robust", 2.0), _run(0.075, "not_robust", 4.0), _run(0.2, "timeout", 60.0)],
                 time_s=21.0),
         substitutes=[
             dict(method="linear", gamma=0.9, prune_s=0.4,
                  g=_dist(0.11, [_run(0.06, "robust", 1.0), _run(0.09, "robust", 0.5)], time_s=4.0)),
             dict(method="constant", gamma=0.9, prune_s=0.3, g=_dist(None, [], time_s=2.0)),
         ]),
    dict(index=1, label=0, status="ok", d_adv=0.3,
         f=_dist(None, [_run(0.1, "timeout", 60.0)], status="timeout"),
         substitutes=[dict(method="linear", gamma=0.9, prune_s=0.2,
                           g=_dist(0.2, [_run(0.15, "robust", 3.0)], time_s=6.0))]),
    dict(index=2, label=3, status="misclassified"),
]


def test_table1_by_hand():
    rows = {(r["method"], r["gamma"]): r for r in table1(RECORDS)}
    lin = rows[("linear", 0.9)]
    assert lin["anchors"] == 2
    assert lin["rel_diff"] == pytest.approx(0.1) and lin["rel_n"] == 1  # anchor 1: f timed out, not counted
    # prune time per run: 0.4 / 2 runs and 0.2 / 1 run
    assert lin["prune_per_run"] == pytest.approx(0.2)
    # runs of g inside f's explored range [0.05, 0.075] (anchor 0) and, for anchor 1, f explored nothing
    assert lin["runs_with"] == 1 and lin["run_with"] == pytest.approx(1.0)
    # runs of f without a timeout: 2 s and 4 s
    assert lin["run_without"] == pytest.approx(3.0) and lin["speedup"] == pytest.approx(3.0)
    # whole computation per anchor without the attack, where both are exact: (4 - 1) against (21 - 1)
    assert lin["total_with"] == pytest.approx(3.0) and lin["total_without"] == pytest.approx(20.0)
    con = rows[("constant", 0.9)]
    assert con["collapsed"] == 1 and con["rel_n"] == 0 and math.isnan(con["rel_diff"])
    md = table1_markdown(table1(RECORDS), network="toy")
    assert md.count("\n") == 3 and "| toy | linear | 0.9 | 0.1 ± 0 (n=1) |" in md


def test_runtime_points():
    pts = runtime_points(RECORDS, gamma=0.9)
    assert sorted(pts["original"]) == [(2.0, 0.05), (4.0, 0.075)]  # timeouts are not points
    assert sorted(pts["linear"]) == [(0.5, 0.09), (1.0, 0.06), (3.0, 0.15)]


def _tiny():
    torch.manual_seed(4)  # three classes inside the unit square
    seq = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for p in seq.parameters():
            p.mul_(4.0)  # several decision regions inside the unit square
    return ReluNetwork.from_torch(seq, (2,))


def test_run_anchor_and_resume(tmp_path):
    net = _tiny()
    xs = torch.rand(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ys = net.predict(xs)
    ys[5] = (ys[5] + 1) % 3  # a misclassified anchor
    config = ExperimentConfig(methods=("linear", "activation"), gammas=(0.5,), gamma0=0.2, time_limit=20,
                              total_time_limit=120, tol=1e-4)
    rec = run_anchor(net, xs[0], int(ys[0]), 0, config)
    assert rec["status"] == "ok" and rec["f"]["status"] == "exact"
    assert rec["f"]["value"] <= rec["d_adv"] + 1e-12
    lin = next(s for s in rec["substitutes"] if s["method"] == "linear")
    assert lin["attack_reused"]  # g(x_adv) = f(x_adv) for the linear substitute
    assert lin["g"]["value"] is None or lin["g"]["value"] <= rec["d_adv"] + 1e-12
    assert len(rec["f"]["steps"]) >= 1  # every bisection step, MILP or not
    json.dumps(rec)  # JSON-able
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps(rec) + "\n" + '{"index": 1, "sta')  # a line cut by a crash
    assert [r["index"] for r in load_records(out)] == [0]
    out.write_text(json.dumps(rec) + "\n")
    recs = run_experiment(net, xs, ys, [0, 5], config=config, results=out, progress=False)
    assert [r["index"] for r in recs] == [0, 5]  # anchor 0 not recomputed, 5 appended
    assert recs[1]["status"] == "misclassified"
    assert len(out.read_text().splitlines()) == 2


def test_select_anchors_keeps_what_bounds_cannot_certify():
    net = _tiny()
    xs = torch.rand(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ys = net.predict(xs)
    ys[0] = (ys[0] + 1) % 3  # misclassified: never an anchor
    every = select_anchors(net, xs, ys, 100)
    assert 0 not in every and len(every) == 39 and every == sorted(every)
    assert select_anchors(net, xs, ys, 5, first=10) == [i for i in every if i >= 10][:5]
    r = 0.05
    kept = select_anchors(net, xs, ys, 100, not_certified_at=r)
    assert 0 < len(kept) < len(every)
    from lsub_helpers.estimate import certified_radius

    for i in every:  # a dropped point is certified at r; a kept one is not
        cert = certified_radius(net, xs[i], int(ys[i]), hi=r, iters=0) >= r
        assert (i not in kept) == cert


def test_select_anchors_by_attack_distance():
    from lsub_helpers.attacks import min_distance_attack

    net = _tiny()
    xs = torch.rand(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ys = net.predict(xs)
    m = 0.05
    kept = select_anchors(net, xs, ys, 100, max_d_adv=m)
    for i in range(12):
        adv = min_distance_attack(net, xs[i], int(ys[i]))
        assert (i in kept) == (adv.success and adv.distance <= m)
    assert 0 < len(kept) < 12
