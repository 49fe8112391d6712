"""Table 1 and Figure 3 from experiment records, and the paper's own Table 1 to set beside them.

Every function here reads records (:class:`~lsub_helpers.experiments.records.AnchorRecord`, or their JSON
objects as :func:`~lsub_helpers.experiments.records.load_records` returns them) and solves nothing.
``table1`` gives the paper's columns per pruner and gamma plus the columns that decide whether a substitute
pays: how many anchors have an exact ``d_bnd(f)``, the attack's own error on the same anchors
(the trivial baseline), medians beside means, the whole estimate per anchor against the whole exact
computation of ``f`` (time-limited runs counted at the time they took, never dropped), and, where ``f`` did
not finish, whether the estimate lies inside ``f``'s proven interval.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .records import AnchorRecord, DistanceRecord, as_records

__all__ = ["table1", "table1_markdown", "runtime_points", "attack_comparison", "paper_table1",
           "side_by_side_markdown", "row_group_summary", "ROW_GROUPS"]

Records = Sequence["AnchorRecord | Mapping"]  # typed records or their JSON objects
PAPER_CSV = Path(__file__).with_name("paper_table1.csv")

# The row groups of Table 1 (the paper's six, plus WK17a) and the record files they read:
# (file stem, dataset, training, stand-in network or None, in the paper's table)
ROW_GROUPS = (
    ("mnist-clean", "mnist", "clean", "mnist-cnna-clean", True),
    ("mnist-adv1", "mnist", "adv1", "mnist-cnna-adv1", True),
    ("mnist-adv2", "mnist", "adv2", "mnist-cnna-adv2", True),
    ("cifar10-clean-sdp-mix", "cifar10", "clean", "cnna_cifar10_sdp_mix", True),
    ("cifar10-adv1-sdp-adv", "cifar10", "adv1", "cnna_cifar10_sdp_adv", True),
    ("cifar10-adv2-sdp-adv4", "cifar10", "adv2", "cnna_cifar10_sdp_adv4", True),
    ("mnist-wk17a", "mnist", "wk17a", "cnna_mnist_wk17a_lp_eps0.1_mipverify", False),
)


def _stats(values: Iterable[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return dict(mean=math.nan, std=math.nan, median=math.nan, n=0)
    return dict(mean=float(v.mean()), std=float(v.std()), median=float(np.median(v)), n=int(v.size))


def _ok(records: Sequence[AnchorRecord]) -> list[AnchorRecord]:
    return [r for r in records if r.ok]


def _attack_s(rec: AnchorRecord) -> float:
    return rec.timings.attack_s or 0.0


def _rel(value: float | None, ref: float) -> float | None:
    return None if value is None else abs(value - ref) / ref


def _uses_bab(rec: AnchorRecord) -> bool:
    """The campaign ran branch and bound in front of the MILP for this anchor (``config.bab > 0``)."""
    config = rec.provenance.config if rec.provenance is not None else None
    return bool((config or {}).get("bab"))


def _runs_of(d: DistanceRecord, rec: AnchorRecord) -> tuple:
    """The optimisation runs of a distance record: its MILP runs, or, where the campaign ran branch and bound
    in front of the MILP (many eps-verifications then need no MILP), its bisection steps, each one
    eps-verification with the time it took (the paper's unit: one solve per eps)."""
    return d.steps if _uses_bab(rec) else d.runs


def table1(records: Records, *, substitutes: str = "substitutes") -> list[dict]:
    """The columns of Table 1 per (pruner, gamma), with the evidence beside them.

    Over anchors where both distances are exact: ``rel_diff`` (mean, std, median, max of
    ``|d_bnd(g) - d_bnd(f)| / d_bnd(f)``) and ``attack_rel`` (the same for ``d_adv``, the attack alone);
    ``collapsed`` counts substitutes with no boundary left at all.  Per optimisation run: ``prune_per_run``
    (pruning time / the substitute's number of runs), ``run_with`` / ``run_without`` (one MILP of g / of f;
    runs of g count if their eps lies in the range f's runs explored for the same anchor, the paper's rule;
    time-limited runs count at the time they took) and ``ratio_median``, the median over anchors of f's
    mean run time over g's.  Per anchor: ``estimate_s`` (attack + pruning + g's whole exact distance) and
    ``exact_s`` (attack + f's whole exact distance, time-limited runs included), means and medians over
    all anchors.  Where f did not finish: ``inside`` / ``n_open`` anchors whose exact ``d_bnd(g)`` lies in
    f's proven interval, and that interval's median relative width ``open_width``.
    ``substitutes="plain"`` reads the substitutes built from the plain PGD attack instead.  ``n_bab``: anchors
    whose distances ran branch and bound in front of the MILP (their runs are bisection steps, see
    :func:`_runs_of`).
    """
    records = as_records(records)
    recs = _ok(records)
    acc: dict[tuple[str, float], dict[str, list]] = {}
    n_anchors = len(records)
    n_exact = sum(r.f.exact for r in recs)
    n_bab = sum(_uses_bab(r) for r in recs)
    for rec in recs:
        f = rec.f
        f_eps = [r.eps for r in _runs_of(f, rec)]
        lo, hi = (min(f_eps), max(f_eps)) if f_eps else (math.inf, -math.inf)
        f_runs = [r.time_s for r in _runs_of(f, rec)]
        if substitutes == "substitutes":
            subs, d_adv, attack_s = rec.substitutes, rec.d_adv, _attack_s(rec)
        elif rec.plain is not None:
            subs, d_adv, attack_s = rec.plain.substitutes, rec.plain.d_adv, rec.plain.attack_s
        else:
            subs, d_adv, attack_s = (), None, 0.0
        for s in subs:
            g = s.g
            if g is None:
                continue
            a = acc.setdefault((s.method, s.gamma), {k: [] for k in (
                "rel", "attack_rel", "prune", "with_", "without", "ratio", "est", "exact", "inside", "width")})
            a.setdefault("collapsed", [0])
            if f.exact and g.exact and f.value:
                if g.value is None:
                    a["collapsed"][0] += 1  # g has no adversarial point in the domain at all
                else:
                    a["rel"].append(_rel(g.value, f.value))
                    a["attack_rel"].append(_rel(d_adv, f.value))
            elif not f.exact and g.exact and g.value is not None:
                flo, fhi = f.lower or 0.0, f.upper if f.upper is not None else math.inf
                a["inside"].append(flo - 1e-9 <= g.value <= fhi + 1e-9)
                if math.isfinite(fhi) and fhi > 0:
                    a["width"].append((fhi - flo) / fhi)
            a["prune"].append(s.prune_s / max(1, len(_runs_of(g, rec))))
            g_runs = [r.time_s for r in _runs_of(g, rec) if lo <= r.eps <= hi]
            a["with_"] += g_runs
            a["without"] += f_runs
            if g_runs and f_runs and np.mean(g_runs) > 0:
                a["ratio"].append(float(np.mean(f_runs) / np.mean(g_runs)))
            a["est"].append(attack_s + s.prune_s + g.time_s)
            a["exact"].append(_attack_s(rec) + f.time_s)
    out = []
    for (method, gamma), a in sorted(acc.items()):
        rel, att = _stats(a["rel"]), _stats(a["attack_rel"])
        w, wo = _stats(a["with_"]), _stats(a["without"])
        est, ex = _stats(a["est"]), _stats(a["exact"])
        out.append(dict(
            method=method, gamma=gamma, anchors=n_anchors, n_ok=len(recs), n_exact=n_exact, n_bab=n_bab,
            rel_diff=rel["mean"], rel_diff_std=rel["std"], rel_diff_median=rel["median"], rel_n=rel["n"],
            rel_max=max(a["rel"]) if a["rel"] else math.nan, collapsed=a["collapsed"][0],
            attack_rel=att["mean"], attack_rel_std=att["std"], attack_rel_median=att["median"],
            prune_per_run=_stats(a["prune"])["mean"], prune_per_run_std=_stats(a["prune"])["std"],
            run_with=w["mean"], run_with_std=w["std"], run_with_median=w["median"], runs_with=w["n"],
            run_without=wo["mean"], run_without_std=wo["std"], run_without_median=wo["median"], runs_without=wo["n"],
            speedup=wo["mean"] / w["mean"] if w["n"] and w["mean"] > 0 else math.nan,
            ratio_median=_stats(a["ratio"])["median"],
            estimate_s=est["mean"], estimate_s_median=est["median"], exact_s=ex["mean"], exact_s_median=ex["median"],
            total_speedup_median=(ex["median"] / est["median"]) if est["n"] and est["median"] > 0 else math.nan,
            inside=int(sum(a["inside"])), n_open=len(a["inside"]), open_width=_stats(a["width"])["median"],
        ))
    return out


def _pm(mean: float, std: float) -> str:
    return "—" if mean != mean else f"{mean:.3g} ± {std:.2g}"


def _g(v: float, fmt: str = ".3g") -> str:
    return "—" if v is None or v != v else format(v, fmt)


def table1_markdown(rows: Sequence[dict], *, network: str | None = None) -> str:
    """``table1`` rows as a markdown table (one line per pruner and gamma; a first column if ``network``)."""
    head = ["pruner", "γ", "f exact / anchors", "rel. diff d_bnd (mean ± std, median)", "attack alone",
            "collapsed", "prune/run (s)", "run with pruning (s)", "run without (s)", "median per-run ratio",
            "estimate / exact D per anchor (median s)", "f open: estimate inside, width"]
    if network is not None:
        head.insert(0, "network")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['gamma']}", f"{r['n_exact']} / {r['anchors']}",
                 f"{_pm(r['rel_diff'], r['rel_diff_std'])}, {_g(r['rel_diff_median'])} (n={r['rel_n']})"
                 if r["rel_n"] else "— (n=0)",
                 f"{_pm(r['attack_rel'], r['attack_rel_std'])}, {_g(r['attack_rel_median'])}" if r["rel_n"] else "—",
                 f"{r['collapsed']}", _pm(r["prune_per_run"], r["prune_per_run_std"]),
                 f"{_pm(r['run_with'], r['run_with_std'])} (n={r['runs_with']})",
                 f"{_pm(r['run_without'], r['run_without_std'])} (n={r['runs_without']})",
                 _g(r["ratio_median"]),
                 f"{_g(r['estimate_s_median'])} / {_g(r['exact_s_median'])}",
                 f"{r['inside']}/{r['n_open']}, {_g(r['open_width'], '.2%')}" if r["n_open"] else "-"]
        if network is not None:
            cells.insert(0, network)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _decided_points(d: DistanceRecord, rec: AnchorRecord) -> list[tuple[float, float]]:
    return [(r.time_s, r.eps) for r in _runs_of(d, rec) if r.decided]


def runtime_points(records: Records, *, gamma: float) -> dict[str, list[tuple[float, float]]]:
    """Figure 3: (time, eps) of every optimisation run that finished within its limit, of the substitutes
    at ``gamma`` per method and of f (key ``"original"``)."""
    pts: dict[str, list[tuple[float, float]]] = {"original": []}
    for rec in _ok(as_records(records)):
        pts["original"] += _decided_points(rec.f, rec)
        for s in rec.substitutes:
            if s.g is not None and s.gamma == gamma:
                pts.setdefault(s.method, []).extend(_decided_points(s.g, rec))
    return pts


def attack_comparison(records: Records) -> list[dict]:
    """Per anchor with an exact ``d_bnd(f)`` and a plain-attack part: the relative error of ``d_adv`` and of
    every exact ``d_bnd(g)`` for the strong attack and for the paper's plain PGD attack."""
    out = []
    for rec in _ok(as_records(records)):
        f, plain = rec.f, rec.plain
        if plain is None or not f.exact or not f.value:
            continue
        ref = f.value
        row = dict(index=rec.index, d_bnd=ref, strong_attack=_rel(rec.d_adv, ref), plain_attack=_rel(plain.d_adv, ref))
        for kind, subs in (("strong", rec.substitutes), ("plain", plain.substitutes)):
            for s in subs:
                g = s.g
                if g is not None and g.exact and g.value is not None:
                    row[f"{kind}_{s.method}_{s.gamma}"] = _rel(g.value, ref)
        out.append(row)
    return out


def paper_table1() -> list[dict]:
    """The paper's Table 1 as published (36 rows; numbers as printed, NaN where the paper gives none)."""
    rows = []
    with PAPER_CSV.open() as fh:
        for r in csv.DictReader(fh):
            rows.append({k: (float(v) if v else math.nan) if k not in ("dataset", "training", "pruner") else v
                         for k, v in r.items()})
    return rows


def side_by_side_markdown(ours: dict[tuple[str, str], list[dict]]) -> str:
    """The paper's 36 rows with ours beside them: ``ours[(dataset, training)]`` is ``table1`` of that row
    group (missing groups show as not run)."""
    head = ["dataset", "training", "pruner", "γ", "paper: rel. diff", "ours: rel. diff (n)", "ours: attack alone",
            "paper: run with / without (s)", "ours: run with / without (s)", "ours: f exact / anchors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in paper_table1():
        rows = ours.get((p["dataset"], p["training"]), [])
        o = next((r for r in rows if r["method"] == p["pruner"] and abs(r["gamma"] - p["gamma"]) < 1e-9), None)
        paper_rel = _g(p["rel_diff"]) + ("" if p["rel_diff_std"] != p["rel_diff_std"] else f" ± {_g(p['rel_diff_std'])}")
        paper_run = f"{_g(p['run_with'])} / {_g(p['run_without'])}"
        if o is None:
            mine = ["not run", "-", "-", "0 / 0"]
        else:
            mine = [f"{_pm(o['rel_diff'], o['rel_diff_std'])} (n={o['rel_n']})",
                    _pm(o["attack_rel"], o["attack_rel_std"]),
                    f"{_g(o['run_with'])} / {_g(o['run_without'])}", f"{o['n_exact']} / {o['anchors']}"]
        lines.append("| " + " | ".join([p["dataset"], p["training"], p["pruner"], _g(p["gamma"]), paper_rel,
                                         *mine[:2], paper_run, *mine[2:]]) + " |")
    return "\n".join(lines)


def row_group_summary(records: Records) -> dict:
    """Per row group: anchors, with an adversarial point, f exact, and the median d_adv and f interval."""
    records = as_records(records)
    recs = _ok(records)
    exact = [r for r in recs if r.f.exact]
    return dict(anchors=len(records), ok=len(recs), f_exact=len(exact),
                d_adv_median=_stats(r.d_adv for r in recs)["median"],
                f_time_median=_stats(_attack_s(r) + r.f.time_s for r in recs)["median"])
