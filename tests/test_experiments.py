"""The experiment runner: records, resuming after a crash, and the columns of Table 1 by hand."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from lsub_helpers.distance import DistanceStatus
from lsub_helpers.experiments import (SCHEMA_VERSION, AnchorRecord, DistanceRecord, ExperimentConfig, RecordStatus,
                                      anchor_record, records_summary_markdown,
                                      SchemaError, SubstituteRecord, attack_comparison, load_records, paper_table1,
                                      per_anchor_markdown,
                                      read_records, repair, run_anchor, run_experiment, runtime_points,
                                      sample_anchors, select_anchors, side_by_side_markdown, side_by_side_tables_markdown,
                                      table1, table1_markdown, table1_quality_markdown, table1_speed_markdown,
                                      table1_tables_markdown)
from lsub_helpers.milp import VerificationStatus
from lsub_helpers.network import ReluNetwork


def _run(eps, status, t):
    return dict(eps=eps, target=1, status=status, solver_status="optimal", time_s=t, build_time_s=0.0, binaries=3)


def _dist(value, runs, status="exact", time_s=10.0, attack_s=1.0, lower=None, upper=None):
    return dict(status=status, value=value, lower=value if lower is None else lower,
                upper=value if upper is None else upper, time_s=time_s, attack_s=attack_s, runs=runs)


RECORDS = [
    dict(index=0, label=1, status="ok", d_adv=0.12, attack_s=2.0,
         f=_dist(0.1, [_run(0.05, "robust", 2.0), _run(0.075, "not_robust", 4.0), _run(0.2, "timeout", 60.0)],
                 time_s=21.0),
         substitutes=[
             dict(method="linear", gamma=0.9, prune_s=0.4,
                  g=_dist(0.11, [_run(0.06, "robust", 1.0), _run(0.09, "robust", 0.5)], time_s=4.0)),
             dict(method="constant", gamma=0.9, prune_s=0.3, g=_dist(None, [], time_s=2.0)),
         ]),
    dict(index=1, label=0, status="ok", d_adv=0.3,
         f=_dist(None, [_run(0.1, "timeout", 60.0)], status="timeout", lower=0.15, upper=0.3),
         substitutes=[dict(method="linear", gamma=0.9, prune_s=0.2,
                           g=_dist(0.2, [_run(0.15, "robust", 3.0)], time_s=6.0))]),
    dict(index=2, label=3, status="misclassified"),
]


def test_table1_by_hand():
    rows = {(r["method"], r["gamma"]): r for r in table1(RECORDS)}
    lin = rows[("linear", 0.9)]
    assert (lin["anchors"], lin["n_ok"], lin["n_exact"]) == (3, 2, 1)
    assert lin["rel_diff"] == pytest.approx(0.1) and lin["rel_n"] == 1  # anchor 1: f timed out, not counted
    assert lin["attack_rel"] == pytest.approx(0.2)  # |0.12 - 0.1| / 0.1 on the same anchor: the baseline
    # prune time per run: 0.4 / 2 runs and 0.2 / 1 run
    assert lin["prune_per_run"] == pytest.approx(0.2)
    # runs of g inside the eps range f explored, time-limited runs of f included: [0.05, 0.2] for anchor 0,
    # [0.1, 0.1] for anchor 1 (g's run at 0.15 is outside)
    assert lin["runs_with"] == 2 and lin["run_with"] == pytest.approx(0.75)
    # every run of f counts, the time-limited ones at the time they took: 2, 4, 60 and 60 s
    assert lin["runs_without"] == 4 and lin["run_without"] == pytest.approx(31.5)
    assert lin["ratio_median"] == pytest.approx(22.0 / 0.75)  # anchor 0 only: anchor 1 has no run of g in range
    # whole estimate (attack + pruning + g) against whole exact D (attack + f), over both anchors
    assert lin["estimate_s_median"] == pytest.approx((6.4 + 6.2) / 2)
    assert lin["exact_s_median"] == pytest.approx((23.0 + 10.0) / 2)
    # anchor 1: f open on [0.15, 0.3]; g's 0.2 lies inside; relative width 0.5
    assert (lin["inside"], lin["n_open"]) == (1, 1) and lin["open_width"] == pytest.approx(0.5)
    assert lin["attack_inside"] == 1  # d_adv 0.3 is the interval's upper end: the attack passes as well
    con = rows[("constant", 0.9)]
    assert con["collapsed"] == 1 and con["rel_n"] == 0 and math.isnan(con["rel_diff"])
    md = table1_markdown(table1(RECORDS), network="toy")
    assert md.count("\n") == 3 and "| toy | linear | 0.9 | 1 / 3 | 0.1 ± 0, 0.1 (n=1) | 0.2 ± 0, 0.2 |" in md


def _open_anchor(i, value):
    """An anchor where f did not finish (proven interval [0.15, 0.3], d_adv 0.3) and activation 0.99 estimates
    ``value``."""
    return dict(index=i, label=0, status="ok", d_adv=0.3, attack_s=1.0, schema=2, commit=None, machine=None,
                date=None, versions=None, config={"tol": 1e-6},
                f=_dist(None, [_run(0.1, "timeout", 60.0)], status="timeout", lower=0.15, upper=0.3),
                substitutes=[dict(method="activation", gamma=0.99, prune_s=0.1,
                                  g=_dist(value, [_run(0.1, "robust", 1.0)], time_s=2.0))])


def test_estimates_outside_f_interval_by_hand():
    """Where f did not finish: an estimate above f's proven upper end (g claims robustness beyond a point proven
    adversarial), one below its lower end, each with the least relative error any d_bnd(f) in the interval
    allows, and an estimate within the recorded bisection tolerance of an end counted inside."""
    anchor = _open_anchor
    rows = table1([anchor(0, 0.45), anchor(1, 0.1), anchor(2, 0.3 + 5e-7), anchor(3, 0.15 - 5e-7)])
    (r,) = rows
    assert (r["n_open"], r["inside"], r["over"], r["under"]) == (4, 2, 1, 1)
    # (0.45 - 0.3) / 0.3 = 0.5 above; (0.15 - 0.1) / 0.15 = 1/3 below; 0 for the two within the tolerance
    assert r["min_err_max"] == pytest.approx(0.5) and r["min_err_median"] == pytest.approx((0 + 1 / 3) / 2)
    assert r["attack_inside"] == 4 and r["estimate_f_exact"] == 0 and r["n_estimate"] == 4
    assert "| activation | 0.99 | 0 | — | — | 0/4 | 2/4 (attack 4), 50% | 1/4 | 0.17 (0.5) |" in table1_quality_markdown(rows)
    # without the recorded tolerance the two near the ends count outside
    strict = [dict(a, config={}) for a in (anchor(2, 0.3 + 5e-7), anchor(3, 0.15 - 5e-7))]
    assert table1(strict)[0]["inside"] == 0


def test_findings_and_conclusions_are_computed_from_the_records():
    """The summary's sentences: a proven overestimate named with its count and least error, f's interval width
    over all its anchors, the estimate's time against f's as a lower bound where f did not finish, and the
    pooled conclusions (no exact d_bnd(f): the paper's measure cannot be checked)."""
    from lsub_helpers.experiments import conclusions_markdown, findings_markdown, row_group_findings

    records = {"mnist-wk17a": [_open_anchor(0, 0.45), _open_anchor(1, 0.2), _open_anchor(2, 0.6)]}
    findings = row_group_findings(records)
    wk = findings[findings.index("mnist wk17a"):]  # its sentence and its list of findings, the last group
    assert "3 anchors" in wk and "d_bnd(f) exact on 0" in wk and "median width of 50%" in wk
    assert "inside f's proven interval on 1 of 3 (activation 0.99)" in wk
    # above f on anchors 0 and 2: least errors 0.5 and 1.0, median 75% of those, up to 100%
    assert "activation 0.99 on 2 of 3, by at least 75% in the median of those (up to 100%)" in wk
    assert "underestimate" not in wk  # nothing below f's lower end 0.15
    below = row_group_findings({"mnist-wk17a": [_open_anchor(0, 0.12)]})
    assert "activation 0.99 on 1 of 1, by at least 20% in the median of those" in below  # (0.15 - 0.12) / 0.15
    assert "Proven underestimates**, below f's proven lower end: activation 0.99 on 1 of 1 anchors" in \
        conclusions_markdown({"mnist-wk17a": [_open_anchor(0, 0.12)]})
    # estimate 1 + 0.1 + 2 = 3.1 s per anchor; f 1 + 10 = 11 s, unfinished everywhere: a lower bound
    assert "activation 0.99 3.1 s against at least 11 s for f (all 3 anchors)" in wk
    assert "x faster" not in wk
    assert "* **mnist clean** (`mnist-cnna-clean`): no records yet." in findings
    # once f is exact somewhere: the paper's measure beside the attack's on the same anchors, three digits
    exact = dict(RECORDS[0], schema=2, commit=None, machine=None, date=None, versions=None, config={})
    one = findings_markdown([exact], name="toy")
    assert one.startswith("toy: 1 anchor, d_bnd(f) exact on 1.")
    assert "- Linear 0.9 is off by 10% (n = 1), better than the attack alone (20% on the same anchors)." in one
    conclusions = conclusions_markdown(records)
    assert "The paper's measure cannot be checked here" in conclusions and "none of the 3 random anchors" in conclusions
    assert "activation 0.99 on 2 of 3 anchors" in conclusions and "1 of 3 (activation 0.99)" in conclusions
    # pruning 0.1 s over one run per anchor: at the paper's 0.1 s, not within it
    assert "costs 0.1 s per run of g" in conclusions and "above the paper's figure" in conclusions
    # once f is exact, the conclusions say on how many anchors the paper's measure rests instead
    assert "finished on 1 of the 4 random anchors" in conclusions_markdown(
        {"mnist-wk17a": records["mnist-wk17a"] + [exact]})


def _columns(md: str) -> set[int]:
    return {line.count("|") - 1 for line in md.splitlines() if line.startswith("|")}


def test_table1_as_two_tables_that_fit_a_page():
    """Quality and cost, each with at most 9 short columns (a book page holds about 9 at 1280 px), and every
    number of table1_markdown still shown."""
    rows = table1(RECORDS)
    quality, speed = table1_quality_markdown(rows), table1_speed_markdown(rows)
    assert _columns(quality) == {9} and _columns(speed) == {8}
    # one exact anchor: no ± for a single value; anchor 1: g inside f's open interval, not above it, error >= 0
    assert "| linear | 0.9 | 1 | 0.1 | 0.2 | 0/2 | 1/1 (attack 1), 50% | 0/1 | 0 (0) |" in quality
    assert "| constant | 0.9 | 0 | — | — | 1/1 | — | — | — |" in quality  # collapsed: no boundary left, no estimate
    # prune/run 0.2 ± 0; g's runs 0.75 ± 0.25 over 2; f's 31.5 ± 28.5 over 4; ratio 22/0.75; estimate 6.3 s over 2
    # anchors, f 16.5 s there, a lower bound (+): f did not finish on anchor 1
    assert "| linear | 0.9 | 0.2 ± 0 | 0.75 ± 0.25 (2) | 31.5 ± 29 (4) | 29.3 | 6.3 (2) | 16.5+ |" in speed
    # the collapsed substitute has no run (no prune/run) and no estimate
    assert "| constant | 0.9 | — | — | 22 ± 27 (3) | — | — (0) | — |" in speed  # anchor 0 only
    both = table1_tables_markdown(rows)
    assert quality in both and speed in both and "d_bnd(f) is exact on 1 of 3 anchors" in both
    # several networks: one table, each network's rows under a line that names it and its exact anchors
    grouped = table1_quality_markdown({"toy": rows, "other": rows})
    assert _columns(grouped) == {9} and "| **toy** (f exact 1/3) |" in grouped and "| **other** (f exact 1/3) |" in grouped
    assert table1_tables_markdown({"none": []}).startswith("*No anchor")


def test_per_anchor_table():
    md = per_anchor_markdown(RECORDS)
    assert md.splitlines() == [
        "| anchor | d_adv | d_bnd(f) | runs of f | linear (0.9) | constant (0.9) |", "|---|---|---|---|---|---|",
        "| 0 | 0.1200 | 0.1000 | 3 | 0.1100 | no boundary |",
        "| 1 | 0.3000 | timeout [0.1500, 0.3000] | 1 | 0.2000 | — |",  # f's proven interval; no constant pruner
        "| 2 | — | misclassified | — | — | — |"]
    # with branch and bound in front of the MILP, f's runs are its bisection steps, as the cost table counts them
    steps = [dict(eps=e, status="robust", milp_runs=0, time_s=1.0) for e in (0.05, 0.075)]
    bab = dict(RECORDS[0], schema=2, commit=None, machine=None, date=None, versions=None, config={"bab": 30.0},
               f=dict(RECORDS[0]["f"], runs=[], steps=steps))
    assert "| 0 | 0.1200 | 0.1000 | 2 |" in per_anchor_markdown([bab])


def test_runtime_points():
    pts = runtime_points(RECORDS, gamma=0.9)
    assert sorted(pts["original"]) == [(2.0, 0.05), (4.0, 0.075)]  # timeouts are not points
    assert sorted(pts["linear"]) == [(0.5, 0.09), (1.0, 0.06), (3.0, 0.15)]


def test_paper_table_and_side_by_side():
    paper = paper_table1()
    assert len(paper) == 36
    assert {(r["dataset"], r["training"]) for r in paper} == {(d, t) for d in ("mnist", "cifar10")
                                                             for t in ("clean", "adv1", "adv2")}
    row = next(r for r in paper if (r["dataset"], r["training"], r["pruner"], r["gamma"]) == ("mnist", "clean", "linear", 0.99))
    assert (row["rel_diff"], row["run_with"], row["run_without"]) == (0.0054, 16.91, 33.28)  # as printed
    assert math.isnan(next(r for r in paper if r["training"] == "adv2" and r["dataset"] == "mnist")["rel_diff_std"])
    md = side_by_side_markdown({("mnist", "clean"): table1(RECORDS)})
    lines = md.splitlines()
    assert len(lines) == 2 + 36
    assert "| mnist | clean | linear | 0.9 | 0 ± 0 | 0.1 ± 0 (n=1) | 0.2 ± 0 |" in md
    assert sum("not run" in line for line in lines) == 36 - 2  # only linear 0.9 and constant 0.9 were run
    two = side_by_side_tables_markdown({("mnist", "clean"): table1(RECORDS)})
    assert _columns(two) == {7, 8}  # quality: 7 columns, time: 8
    assert "| **mnist clean, `mnist-cnna-clean`** (f exact 1/3) |" in two  # every row group names its network,
    assert "| **cifar10 adv2, stand-in `cnna_cifar10_sdp_adv4`** (not run) |" in two  # CIFAR-10's as stand-ins
    # paper, ours (n), the attack alone, and where f is open (anchor 1): the least error, above f / estimates
    assert "| linear | 0.9 | 0 ± 0 | 0.1 ± 0 | 1 | 0.2 ± 0 | 0 (0/1) |" in two
    # pruning per run and one run of g, of f: the paper's, ours (n)
    assert "| linear | 0.9 | 0.04 | 0.2 | 31.6 | 0.75 (2) | 33.3 | 31.5 (4) |" in two


def test_attack_comparison_reads_both_attacks():
    rec = dict(RECORDS[0], plain=dict(d_adv=0.15, attack_s=1.0, substitutes=[
        dict(method="linear", gamma=0.9, prune_s=0.1, g=_dist(0.13, [], time_s=1.0))]))
    (row,) = attack_comparison([rec, RECORDS[1], RECORDS[2]])  # anchor 1: f not exact; 2: misclassified
    assert row["strong_attack"] == pytest.approx(0.2) and row["plain_attack"] == pytest.approx(0.5)
    assert row["strong_linear_0.9"] == pytest.approx(0.1) and row["plain_linear_0.9"] == pytest.approx(0.3)
    plain_rows = {(r["method"], r["gamma"]): r for r in table1([rec], substitutes="plain")}
    assert plain_rows[("linear", 0.9)]["attack_rel"] == pytest.approx(0.5)


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
    line = json.loads(json.dumps(rec))  # JSON-able
    typed = AnchorRecord.from_json(line)
    assert typed.to_json() == line  # read back and written again: the same object
    assert typed.status is RecordStatus.OK and typed.schema == SCHEMA_VERSION and typed.ok
    assert isinstance(typed.f, DistanceRecord) and typed.f.status is DistanceStatus.EXACT
    assert typed.f.value == rec["f"]["value"] and typed.timings.attack_s == rec["attack_s"] > 0
    assert typed.provenance.config["gamma0"] == 0.2 and typed.timings.wall_s >= typed.timings.attack_s
    assert all(isinstance(s, SubstituteRecord) and s.g is not None for s in typed.substitutes)
    assert [r.status for r in typed.f.runs] == [VerificationStatus(r["status"]) for r in rec["f"]["runs"]]
    out = tmp_path / "r.jsonl"
    for key in ("commit", "machine", "date", "versions", "config", "schema"):
        assert key in rec
    assert rec["config"]["gamma0"] == 0.2 and rec["machine"]["cpus"] >= 1
    out.write_text(json.dumps(rec) + "\n" + '{"index": 1, "sta')  # a line cut by a crash
    assert [r["index"] for r in load_records(out)] == [0]
    recs = run_experiment(net, xs, ys, [0, 5], config=config, results=out, progress=False)
    assert [r["index"] for r in recs] == [0, 5]  # anchor 0 not recomputed, 5 appended
    assert recs[1]["status"] == "misclassified"
    assert len(out.read_text().splitlines()) == 2
    typed = read_records(out)
    assert [r.status for r in typed] == [RecordStatus.OK, RecordStatus.MISCLASSIFIED]
    assert typed[1].f is None and typed[1].timings.attack_s is None and typed[1].to_json() == recs[1]
    assert table1(typed) == table1(recs)  # the report reads typed records and their JSON objects alike


def test_an_interrupted_anchor_resumes_after_its_last_finished_part(tmp_path, monkeypatch):
    """Each finished part (f, each substitute) goes to the checkpoint at once; a second run takes them from
    there (no distance is computed again), names them in ``resumed``, and gives the same numbers.  A part of
    another configuration, or a line cut short, is never used."""
    from lsub_helpers.experiments import anchor_record, checkpoint_dir
    from lsub_helpers.experiments import runner

    net = _tiny()
    xs = torch.rand(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = int(net.predict(xs)[0])
    config = ExperimentConfig(methods=("linear", "activation"), gammas=(0.5,), gamma0=0.2, time_limit=20,
                              total_time_limit=120, tol=1e-4)
    ck = checkpoint_dir(tmp_path / "r.jsonl")
    assert ck == tmp_path / "r.jsonl.partial"
    first = anchor_record(net, xs[0], y, 7, config, checkpoint=ck)
    assert first.resumed is None
    lines = [json.loads(line) for line in (ck / "7.jsonl").read_text().splitlines()]
    assert [d["part"] for d in lines] == ["f", "linear-0.5", "activation-0.5"]
    # what a kill in the middle of the last write leaves behind: only f and the linear substitute are whole
    text = (ck / "7.jsonl").read_text().splitlines()
    (ck / "7.jsonl").write_text("\n".join(text[:2]) + "\n" + text[2][: len(text[2]) // 2])
    calls = []
    real = runner.boundary_distance

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(runner, "boundary_distance", counted)
    second = anchor_record(net, xs[0], y, 7, config, checkpoint=ck)
    assert len(calls) == 1  # only the activation substitute ran again
    assert set(second.resumed) == {"f", "linear-0.5"}
    assert second.f == first.f and second.substitutes[0] == first.substitutes[0]
    assert second.substitutes[1].g.value == pytest.approx(first.substitutes[1].g.value, abs=2e-4)
    line = json.loads(json.dumps(second.to_json()))
    assert AnchorRecord.from_json(line).to_json() == line and line["resumed"]["f"] == second.provenance.commit
    # another configuration: nothing is taken over
    calls.clear()
    other = dataclasses.replace(config, tol=2e-4)
    third = anchor_record(net, xs[0], y, 7, other, checkpoint=ck)
    assert third.resumed is None and len(calls) == 3


def test_committed_records_load_unchanged():
    """The Table 1 records in the repository (schema 1 without provenance, schema 2 with it) load as typed
    records and are written back to the very same JSON objects; the files are only read."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "table1"
    files = sorted(folder.glob("*.jsonl"))
    assert files
    schemas = set()
    for path in files:
        raw = load_records(path)
        typed = read_records(path)
        assert len(typed) == len(raw) > 0
        for d, r in zip(raw, typed):
            assert r.to_json() == d
            assert r.schema == d.get("schema", 1) and (r.provenance is None) == (r.schema == 1)
            schemas.add(r.schema)
    assert schemas == {1, 2}


def test_old_schema_1_record_reads_without_provenance():
    old = dict(RECORDS[0])  # a schema-1 record: no schema field, no provenance
    r = AnchorRecord.from_json(old)
    assert r.schema == 1 and r.provenance is None and r.d_adv == 0.12
    assert r.substitutes[1].g.value is None and r.substitutes[1].g.exact  # a collapsed substitute
    assert "schema" not in r.to_json() and AnchorRecord.from_json(r.to_json()) == r


@pytest.mark.parametrize("schema", [3, 0, "2", None, True])
def test_unknown_schema_version_is_refused(schema):
    bad = dict(RECORDS[2], schema=schema, commit=None, machine=None, date=None, versions=None, config=None)
    with pytest.raises(SchemaError, match=r"schema version .* this code reads versions \[1, 2\]"):
        AnchorRecord.from_json(bad)


def test_malformed_records_are_refused_clearly():
    with pytest.raises(SchemaError, match=r"unknown fields \['colour'\]"):
        AnchorRecord.from_json(dict(RECORDS[2], colour="red"))
    with pytest.raises(SchemaError, match=r"missing fields \['commit'"):
        AnchorRecord.from_json(dict(RECORDS[2], schema=2))  # schema 2 must say where it was computed
    with pytest.raises(SchemaError, match="'maybe' is not one of"):
        AnchorRecord.from_json(dict(RECORDS[2], status="maybe"))
    bad_run = dict(RECORDS[1], f=_dist(None, [dict(_run(0.1, "robust", 1.0), solver_status="x")]))
    with pytest.raises(SchemaError, match="run solver_status: 'x'"):
        AnchorRecord.from_json(bad_run)
    with pytest.raises(SchemaError):
        table1([dict(RECORDS[0], schema=99)])  # the report refuses what it cannot read, never guesses


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


def test_repair_cuts_only_a_broken_tail(tmp_path):
    out = tmp_path / "r.jsonl"
    good = '{"index": 0}\n{"index": 1}\n'
    out.write_text(good + '{"index": 2, "st')
    assert repair(out) == len('{"index": 2, "st') and out.read_text() == good
    assert repair(out) == 0 and out.read_text() == good
    out.write_text(good + '{"index": 2}')  # complete JSON but no newline: cut as well, it may be partial
    assert repair(out) > 0 and out.read_text() == good


def test_sample_anchors_is_the_papers_protocol():
    net = _tiny()
    xs = torch.rand(60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ys = net.predict(xs)
    wrong = [0, 7, 13]
    for i in wrong:
        ys[i] = (ys[i] + 1) % 3
    a = sample_anchors(net, xs, ys, 20, seed=3)
    assert len(a) == len(set(a)) == 20 and not set(a) & set(wrong)
    assert a == sample_anchors(net, xs, ys, 20, seed=3)  # reproducible from the recorded seed
    assert sample_anchors(net, xs, ys, 8, seed=3) == a[:8]  # a larger n extends the same list
    assert a != sorted(a) and sample_anchors(net, xs, ys, 20, seed=4) != a  # random, not the first points
    assert len(sample_anchors(net, xs, ys, 1000, seed=0)) == 57  # every correct point at most once


def test_config_refuses_gamma0_above_gamma():
    with pytest.raises(ValueError, match="gamma0"):
        ExperimentConfig(gammas=(0.3, 0.9), gamma0=0.3)
    with pytest.raises(ValueError, match="gamma"):
        ExperimentConfig(gammas=(1.0,))


def test_experiment_notebook_pair_is_in_sync():
    """notebooks/experiment.md is the source; experiment.ipynb, which papermill runs, is its jupytext pair."""
    from pathlib import Path

    import jupytext
    import nbformat

    here = Path(__file__).resolve().parents[1] / "notebooks"
    md = jupytext.read(here / "experiment.md")
    nb = nbformat.read(here / "experiment.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in md.cells] == [(c.cell_type, c.source) for c in nb.cells]
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "network =" in params[0].source  # papermill's injection point
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,md:myst"


def test_with_branch_and_bound_the_runs_are_the_bisection_steps():
    # an anchor whose distances ran branch and bound in front of the MILP: eps-verifications decided without
    # any MILP still count, each as one run with its whole time (the bisection steps)
    rec = dict(index=7, label=0, status="ok", schema=2, commit=None, machine={}, date=None, versions={},
               config=dict(bab=30.0), d_adv=0.11, attack_s=1.0,
               f=dict(status="exact", value=0.1, lower=0.1, upper=0.1, time_s=9.0, attack_s=0.0, runs=[],
                      steps=[dict(eps=0.05, status="robust", milp_runs=0, time_s=2.0),
                             dict(eps=0.15, status="not_robust", milp_runs=0, time_s=4.0)]),
               substitutes=[dict(method="linear", gamma=0.9, prune_s=0.3, g=dict(
                   status="exact", value=0.1, lower=0.1, upper=0.1, time_s=3.0, attack_s=0.0, runs=[],
                   steps=[dict(eps=0.06, status="robust", milp_runs=0, time_s=1.0),
                          dict(eps=0.2, status="not_robust", milp_runs=0, time_s=0.5)]))])
    (row,) = table1([rec])
    assert row["n_bab"] == 1 and row["runs_without"] == 2 and row["run_without"] == pytest.approx(3.0)
    assert row["runs_with"] == 1 and row["run_with"] == pytest.approx(1.0)  # the step at 0.2 is out of f's range
    assert row["prune_per_run"] == pytest.approx(0.15)
    assert sorted(runtime_points([rec], gamma=0.9)["original"]) == [(2.0, 0.05), (4.0, 0.15)]
    with pytest.raises(ValueError, match="bab"):
        ExperimentConfig(bab=-1.0)


def test_a_resumed_campaign_goes_on_with_the_networks_that_have_the_fewest_anchors(tmp_path, monkeypatch):
    from lsub_helpers.experiments import Job, append_record, run_jobs
    from lsub_helpers.experiments import runner

    calls = []

    def fake(net, x0, label, index, config, *, commit=None, checkpoint=None):
        assert checkpoint is not None  # the runner always keeps the finished parts of the anchor in progress
        calls.append((net, index))
        return AnchorRecord(index=index, label=label, status=RecordStatus.MISCLASSIFIED)

    monkeypatch.setattr(runner, "anchor_record", fake)
    xs, ys = torch.zeros(10, 2), torch.zeros(10, dtype=torch.long)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for i in (0, 1):  # network "A" already has its first two anchors
        append_record(a, AnchorRecord(index=i, label=0, status=RecordStatus.MISCLASSIFIED))
    jobs = [Job("A", xs, ys, (0, 1, 2), ExperimentConfig(), a), Job("B", xs, ys, (3, 4, 5), ExperimentConfig(), b)]
    run_jobs(jobs, progress=False)
    assert calls == [("B", 3), ("B", 4), ("A", 2), ("B", 5)]
    assert [r["index"] for r in load_records(a)] == [0, 1, 2] and [r["index"] for r in load_records(b)] == [3, 4, 5]


def test_every_distance_of_an_anchor_gets_the_configured_bisection_tolerances(monkeypatch):
    import lsub_helpers.experiments.runner as runner
    from lsub_helpers.distance import boundary_distance

    seen = []

    def spy(*args, **kw):
        seen.append({k: kw.get(k) for k in ("method", "tol", "open_tol", "bab")})
        return boundary_distance(*args, **kw)

    monkeypatch.setattr(runner, "boundary_distance", spy)
    net = _tiny()
    x0 = torch.tensor([0.3, 0.6], dtype=torch.float64)
    config = ExperimentConfig(methods=("linear",), gammas=(0.5,), gamma0=0.2, time_limit=20, total_time_limit=60,
                              tol=1e-4, open_tol=0.03)
    rec = run_anchor(net, x0, int(net.predict(x0[None])[0]), 0, config)
    assert rec["config"]["open_tol"] == 0.03
    assert seen == [dict(method="bisection", tol=1e-4, open_tol=0.03, bab=None)] * 2  # f, then g


def test_records_summary_counts_in_words_and_names_settings_that_differ():
    def rec(index, f_status, config, commit):
        return {"index": index, "label": 0, "status": "ok", "d_adv": 0.1, "attack_s": 1.0, "schema": 2,
                "commit": commit, "machine": {"cpus": 2, "processor": "x86_64"}, "date": f"2026-12-0{index}",
                "versions": {}, "config": config, "substitutes": [], "wall_s": 3.0,
                "f": {"status": f_status, "value": 0.1 if f_status == "exact" else None, "lower": 0.05,
                      "upper": 0.1, "time_s": 2.0, "attack_s": 0.0, "runs": [], "steps": []}}

    one = records_summary_markdown([rec(1, "exact", {"tol": 1e-5}, "a" * 40)], 20)
    assert one.startswith("1 anchor recorded (20 asked for); 1 with an adversarial point; "
                          "d_bnd(f) exact within the limits on 1.")
    assert "commit `aaaaaaaaaaaa`" in one and "different settings" not in one
    mixed = records_summary_markdown([rec(1, "exact", {"tol": 1e-5}, "a" * 40),
                                      rec(2, "timeout", {"tol": 1e-5, "bab": 30.0}, "b" * 40),
                                      rec(3, "timeout", {"tol": 1e-5, "bab": 30.0}, "b" * 40)])
    assert mixed.startswith("3 anchors recorded; 3 with an adversarial point; d_bnd(f) exact within the limits on 1.")
    assert "commits `aaaaaaaaaaaa`, `bbbbbbbbbbbb`" in mixed and "last record 2026-12-03" in mixed
    assert "`bab` absent (older code) on 1 anchor, 30.0 on 2 anchors" in mixed and "`tol`" not in mixed


def test_attack_comparison_table_counts_where_the_substitute_beats_its_attack():
    from lsub_helpers.experiments import attack_comparison_markdown

    cmp = [{"index": 1, "d_bnd": 1.0, "strong_attack": 0.01, "plain_attack": 0.2, "strong_linear_0.99": 0.005,
            "plain_linear_0.99": 0.1, "plain_activation_0.9": 0.3},
           {"index": 2, "d_bnd": 1.0, "strong_attack": 0.0, "plain_attack": 0.1, "strong_linear_0.99": 0.01}]
    lines = attack_comparison_markdown(cmp).splitlines()
    assert lines[0].startswith("| attack | substitute | anchors | g closer than its attack |")
    assert "| strong | linear 0.99 | 2 | 1 of 2 | 0.5% | 0.75% |" in lines  # medians of (1%, 0%) and (0.5%, 1%)
    assert "| plain PGD | linear 0.99 | 1 | 1 of 1 | 20% | 10% |" in lines
    assert "| plain PGD | activation 0.9 | 1 | 0 of 1 | 20% | 30% |" in lines
    assert attack_comparison_markdown([]).startswith("No anchor")


def test_the_substitutes_closest_point_is_rechecked_on_f_and_bounds_d_bnd_f_from_above():
    net = _tiny()
    xs = torch.rand(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ys = net.predict(xs)
    config = ExperimentConfig(methods=("linear", "activation"), gammas=(0.5, 0.9), gamma0=0.2, time_limit=20,
                              total_time_limit=120, tol=1e-4)
    seen = {True: 0, False: 0}
    for i in range(5):
        rec = anchor_record(net, xs[i], int(ys[i]), i, config)
        if not rec.ok or not rec.f.exact:
            continue
        for s in rec.substitutes:
            if s.g is None or s.fools_f is None:
                continue
            seen[s.fools_f] += 1
            if s.fools_f:  # sound: no adversarial point of f is closer than d_bnd(f); it is g's best point
                assert rec.f.value - 1e-9 <= s.f_upper <= s.g.upper + 1e-9
            else:
                assert s.f_upper is None
        rows = {(r["method"], r["gamma"]): r for r in table1([rec])}
        for s in rec.substitutes:
            if s.fools_f is not None:
                row = rows[(s.method, s.gamma)]
                closer = bool(s.fools_f and s.f_upper < rec.d_adv * (1 - 1e-9))
                assert row["n_checked"] == 1 and row["closer"] == int(closer)
    assert seen[True] >= 1  # the check ran and found points that fool f too


def test_closer_points_table_counts_proven_improvements_of_fs_upper_bound():
    from lsub_helpers.experiments import closer_points_markdown

    def sub(method, fools, upper):
        g = {"status": "exact", "value": 0.09, "lower": 0.09, "upper": 0.09, "time_s": 1.0, "attack_s": 0.0,
             "runs": [], "steps": []}
        out = {"method": method, "gamma": 0.99, "prune_s": 0.1, "g": g}
        if fools is not None:
            out["fools_f"] = fools
        if upper is not None:
            out["f_upper"] = upper
        return out

    def rec(index, subs):
        return {"index": index, "label": 0, "status": "ok", "d_adv": 0.1, "attack_s": 1.0, "substitutes": subs,
                "f": {"status": "timeout", "value": None, "lower": 0.05, "upper": 0.1, "time_s": 2.0,
                      "attack_s": 0.0, "runs": [], "steps": []}}

    recs = [rec(1, [sub("linear", True, 0.08), sub("activation", False, None)]),
            rec(2, [sub("linear", True, 0.1), sub("activation", True, 0.09)]),  # 0.1: the attack's own point
            rec(3, [sub("linear", None, None)])]  # a record from before the check: no say
    lines = closer_points_markdown({"net": recs, "other": recs[2:]}).splitlines()
    assert "| net | strong | linear 0.99 | 2 | 1 of 2 | 20% |" in lines
    assert "| net | strong | activation 0.99 | 2 | 1 of 2 | 10% |" in lines
    assert lines.index("| net | strong | linear 0.99 | 2 | 1 of 2 | 20% |") < lines.index(
        "| net | strong | activation 0.99 | 2 | 1 of 2 | 10% |")  # in the order of `methods`
    alone = closer_points_markdown({"net": recs}).splitlines()  # one group: no column naming it
    assert alone[0].startswith("| attack |") and "| strong | linear 0.99 | 2 | 1 of 2 | 20% |" in alone
    assert closer_points_markdown({"net": [recs[2]]}).startswith("No record")


def test_attack_findings_name_the_best_substitute_and_say_whether_it_beats_the_attack():
    from lsub_helpers.experiments import attack_findings

    cmp = [{"index": 1, "d_bnd": 1.0, "strong_attack": 0.01, "plain_attack": 0.2, "strong_linear_0.99": 0.005,
            "strong_activation_0.99": 0.5, "plain_linear_0.99": 0.1, "plain_activation_0.9": 0.3},
           {"index": 2, "d_bnd": 1.0, "strong_attack": 0.0, "plain_attack": 0.1, "strong_linear_0.99": 0.01,
            "strong_activation_0.99": 0.4, "plain_linear_0.99": 0.05},
           {"index": 3, "d_bnd": 1.0, "strong_attack": 0.002, "plain_attack": 0.1, "strong_linear_0.99": 0.02,
            "strong_activation_0.99": 0.3, "plain_linear_0.99": 0.01, "strong_constant_0.99": 0.0}]
    text = attack_findings(cmp)
    # strong: attack medians (0.01, 0, 0.002) -> 0.2%; linear 0.99 (0.005, 0.01, 0.02) -> 1% beats activation
    # (40%); constant has one anchor of three: not eligible although its error is 0
    assert ("With the strong attack, d_adv is off by a median 0.2%; the best substitute, linear at gamma 0.99, "
            "by 1%, and it is closer than its attack on 1 of 3 anchors: the attack alone is the better "
            "estimate.") in text
    # plain: linear 0.99 (0.1, 0.05, 0.01) -> 5% against the attack's (0.2, 0.1, 0.1) -> 10%; activation 0.9
    # has one anchor of three
    assert ("With the paper's plain PGD, d_adv is off by a median 10%; the best substitute, linear at gamma 0.99, "
            "by 5%, and it is closer than its attack on 3 of 3 anchors: the substitute adds information.") in text
    assert attack_findings([]).startswith("No anchor")
    # closer on 2 of 3 anchors, yet a larger median error (1.9% against 1%): the sentence says both
    mixed = [{"index": i, "d_bnd": 1.0, "strong_attack": a, "strong_linear_0.9": e}
             for i, (a, e) in enumerate([(0.01, 0.009), (0.02, 0.019), (0.001, 0.5)])]
    assert ("closer than its attack on 2 of 3 anchors (more often closer, but by less than it is off elsewhere: "
            "its median error is larger): the attack alone is the better estimate.") in attack_findings(mixed)


def test_attack_comparison_prints_large_errors_as_whole_percentages():
    from lsub_helpers.experiments import attack_comparison_markdown

    cmp = [{"index": 1, "d_bnd": 1.0, "strong_attack": 0.006, "strong_constant_0.99": 9.88}]
    assert "| strong | constant 0.99 | 1 | 0 of 1 | 0.6% | 988% |" in attack_comparison_markdown(cmp).splitlines()


def test_attack_scatter_plots_one_point_per_anchor_and_the_diagonal():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lsub_helpers.plots import attack_scatter

    cmp = [{"index": 1, "d_bnd": 1.0, "strong_attack": 0.01, "plain_attack": 0.2, "strong_linear_0.9": 0.005,
            "plain_linear_0.9": 0.1, "strong_linear_0.99": 9.0},
           {"index": 2, "d_bnd": 1.0, "strong_attack": 0.02, "plain_attack": None, "strong_linear_0.9": 0.03,
            "plain_linear_0.9": 0.05}]
    fig, ax = plt.subplots()
    attack_scatter(ax, cmp, 0.9)
    sizes = sorted(len(c.get_offsets()) for c in ax.collections)
    assert sizes == [1, 2]  # strong linear on both anchors; plain linear only where the plain attack exists
    (diag,) = ax.lines
    assert list(diag.get_xdata()) == [0, 0.2]  # up to the largest plotted error, not the 0.99 substitute's 9.0
    assert ax.get_title() == "gamma 0.9"
    plt.close(fig)
