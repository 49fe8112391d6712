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

__all__ = ["table1", "table1_markdown", "table1_quality_markdown", "table1_speed_markdown", "table1_tables_markdown",
           "runtime_points", "attack_comparison", "paper_table1", "side_by_side_markdown",
           "side_by_side_quality_markdown", "side_by_side_speed_markdown", "side_by_side_tables_markdown", "row_group_summary",
           "row_group_markdown", "per_anchor_markdown", "records_summary_markdown", "attack_comparison_markdown",
           "closer_points_markdown", "findings_markdown", "row_group_findings", "conclusions_markdown",
           "ROW_GROUPS"]

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


_METHOD_ORDER = {"constant": 0, "linear": 1, "activation": 2}  # the paper's order of the pruners


def _uses_bab(rec: AnchorRecord) -> bool:
    """The campaign ran branch and bound in front of the MILP for this anchor (``config.bab > 0``)."""
    config = rec.provenance.config if rec.provenance is not None else None
    return bool((config or {}).get("bab"))


def _runs_of(d: DistanceRecord, rec: AnchorRecord) -> tuple:
    """The optimisation runs of a distance record: its MILP runs, or, where the campaign ran branch and bound
    in front of the MILP (many eps-verifications then need no MILP), its bisection steps, each one
    eps-verification with the time it took (the paper's unit: one solve per eps)."""
    return d.steps if _uses_bab(rec) else d.runs


def _tol(rec: AnchorRecord) -> float:
    """The recorded bisection tolerance of an anchor: a distance is known to within it (0 when not recorded)."""
    config = rec.provenance.config if rec.provenance is not None else None
    return float((config or {}).get("tol") or 0.0)


def _proven_error(value: float, lower: float, upper: float, tol: float) -> float:
    """The least relative error ``|value - D| / D`` over every ``D`` in f's proven interval ``[lower, upper]``
    (each end known to within ``tol``): 0 inside it, else how far outside relative to the nearer end."""
    if value > upper + tol:
        return (value - upper) / upper
    if value < lower - tol and lower > 0:
        return (lower - value) / lower
    return 0.0


def table1(records: Records, *, substitutes: str = "substitutes") -> list[dict]:
    """The columns of Table 1 per (pruner, gamma), with the evidence beside them.

    Over anchors where both distances are exact: ``rel_diff`` (mean, std, median, max of
    ``|d_bnd(g) - d_bnd(f)| / d_bnd(f)``) and ``attack_rel`` (the same for ``d_adv``, the attack alone).
    ``collapsed``: anchors whose substitute has no boundary left at all (no estimate), of ``n_g`` anchors with
    a substitute; ``n_g_exact`` of them had g's distance finish.  Per optimisation run: ``prune_per_run``
    (pruning time / the substitute's number of runs, over substitutes with runs), ``run_with`` /
    ``run_without`` (one MILP of g / of f; runs of g count if their eps lies in the range f's runs explored for
    the same anchor, the paper's rule; time-limited runs count at the time they took) and ``ratio_median``, the
    median over anchors of f's mean run time over g's.  Per anchor, over the ``n_estimate`` anchors where g
    gave an estimate (its distance finished with a boundary): ``estimate_s`` (attack + pruning + g's whole
    exact distance) and ``exact_s`` (attack + f's whole exact distance on the same anchors, time-limited runs
    included), means and medians; ``estimate_f_exact`` of those anchors have an exact ``d_bnd(f)`` (elsewhere
    ``exact_s`` is only a lower bound on what f needs).  Where f did not finish (``n_open`` anchors with an
    estimate): ``inside`` of them lie in f's proven interval (each end within the recorded bisection
    tolerance), ``open_width`` is that interval's median relative width, ``attack_inside`` the same test for the
    attack's ``d_adv`` (the baseline: ``d_adv`` is f's proven upper end unless a closer point was found, so it
    nearly always passes); ``over`` estimates lie above f's proven upper end (g claims robustness beyond a point
    proven adversarial for f) and ``under`` below its lower end; ``min_err_median`` / ``min_err_max``: the least
    relative error each estimate has whatever the exact distance in f's interval (0 inside it), and
    ``over_err_median`` / ``under_err_median`` its median over the estimates above / below f's interval.  ``closer`` /
    ``n_checked``: anchors where g's closest point, re-checked on f, is adversarial for f at a distance
    below the attack's ``d_adv`` (a proven improvement of f's upper bound), out of those where it was
    checked; ``closer_gain`` the median relative improvement ``1 - f_upper / d_adv`` on them.
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
        f, tol = rec.f, _tol(rec)
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
                "rel", "attack_rel", "prune", "with_", "without", "ratio", "est", "exact", "est_f_exact", "inside",
                "width", "attack_inside", "min_err", "over_err", "under_err", "over", "under", "checked", "gain", "g", "g_exact",
                "collapsed")})
            a["g"].append(True)
            a["g_exact"].append(g.exact)
            estimate = g.value if g.exact else None
            if g.exact and g.value is None:
                a["collapsed"].append(True)  # g has no adversarial point in the domain at all: no estimate
            if estimate is not None:
                a["est"].append(attack_s + s.prune_s + g.time_s)
                a["exact"].append(_attack_s(rec) + f.time_s)
                a["est_f_exact"].append(f.exact)
            if f.exact and f.value and estimate is not None:
                a["rel"].append(_rel(estimate, f.value))
                a["attack_rel"].append(_rel(d_adv, f.value))
            elif not f.exact and estimate is not None:
                flo, fhi = f.lower or 0.0, f.upper if f.upper is not None else math.inf
                a["inside"].append(flo - tol <= estimate <= fhi + tol)
                a["attack_inside"].append(d_adv is not None and flo - tol <= d_adv <= fhi + tol)
                a["over"].append(estimate > fhi + tol)
                a["under"].append(estimate < flo - tol)
                if math.isfinite(fhi) and fhi > 0:
                    a["width"].append((fhi - flo) / fhi)
                    a["min_err"].append(_proven_error(estimate, flo, fhi, tol))
                    if estimate > fhi + tol:
                        a["over_err"].append(a["min_err"][-1])
                    elif estimate < flo - tol:
                        a["under_err"].append(a["min_err"][-1])
            if s.fools_f is not None and d_adv:
                a["checked"].append(True)
                if s.fools_f and s.f_upper is not None and s.f_upper < d_adv * (1 - 1e-9):
                    a["gain"].append(1.0 - s.f_upper / d_adv)
            g_all = _runs_of(g, rec)
            if g_all:
                a["prune"].append(s.prune_s / len(g_all))
            g_runs = [r.time_s for r in g_all if lo <= r.eps <= hi]
            a["with_"] += g_runs
            a["without"] += f_runs
            if g_runs and f_runs and np.mean(g_runs) > 0:
                a["ratio"].append(float(np.mean(f_runs) / np.mean(g_runs)))
    out = []
    for (method, gamma), a in sorted(acc.items(), key=lambda kv: (_METHOD_ORDER.get(kv[0][0], 9), kv[0])):
        rel, att = _stats(a["rel"]), _stats(a["attack_rel"])
        w, wo = _stats(a["with_"]), _stats(a["without"])
        est, ex = _stats(a["est"]), _stats(a["exact"])
        err = _stats(a["min_err"])
        out.append(dict(
            method=method, gamma=gamma, anchors=n_anchors, n_ok=len(recs), n_exact=n_exact, n_bab=n_bab,
            rel_diff=rel["mean"], rel_diff_std=rel["std"], rel_diff_median=rel["median"], rel_n=rel["n"],
            rel_max=max(a["rel"]) if a["rel"] else math.nan,
            collapsed=len(a["collapsed"]), n_g=len(a["g"]), n_g_exact=sum(a["g_exact"]),
            attack_rel=att["mean"], attack_rel_std=att["std"], attack_rel_median=att["median"],
            prune_per_run=_stats(a["prune"])["mean"], prune_per_run_std=_stats(a["prune"])["std"],
            run_with=w["mean"], run_with_std=w["std"], run_with_median=w["median"], runs_with=w["n"],
            run_without=wo["mean"], run_without_std=wo["std"], run_without_median=wo["median"], runs_without=wo["n"],
            speedup=wo["mean"] / w["mean"] if w["n"] and w["mean"] > 0 else math.nan,
            ratio_median=_stats(a["ratio"])["median"],
            estimate_s=est["mean"], estimate_s_median=est["median"], exact_s=ex["mean"], exact_s_median=ex["median"],
            n_estimate=est["n"], estimate_f_exact=int(sum(a["est_f_exact"])),
            total_speedup_median=(ex["median"] / est["median"]) if est["n"] and est["median"] > 0 else math.nan,
            inside=int(sum(a["inside"])), n_open=len(a["inside"]), open_width=_stats(a["width"])["median"],
            attack_inside=int(sum(a["attack_inside"])), over=int(sum(a["over"])), under=int(sum(a["under"])),
            min_err_median=err["median"], min_err_max=max(a["min_err"]) if a["min_err"] else math.nan,
            over_err_median=_stats(a["over_err"])["median"], under_err_median=_stats(a["under_err"])["median"],
            closer=len(a["gain"]), n_checked=len(a["checked"]), closer_gain=_stats(a["gain"])["median"],
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
                 f"{r['collapsed']}/{r['n_g']}", _pm(r["prune_per_run"], r["prune_per_run_std"]),
                 f"{_pm(r['run_with'], r['run_with_std'])} (n={r['runs_with']})",
                 f"{_pm(r['run_without'], r['run_without_std'])} (n={r['runs_without']})",
                 _g(r["ratio_median"]),
                 f"{_g(r['estimate_s_median'])} / {_g(r['exact_s_median'])}",
                 _open_cell(r, ".2%", "-") + (f"; above f {r['over']}, error ≥ {_g(r['min_err_median'])}"
                                              if r["n_open"] else "")]
        if network is not None:
            cells.insert(0, network)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Tables that fit a book page (about 690 px at a 1280 px window): at most ~9 short columns, short headers
# explained by a legend sentence, and Table 1 split by theme into the quality of the estimate and its cost.

def _table(head: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _num(v: float | None, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits, whole numbers from 10**digits on (never 1.5e+02)."""
    if v is None or v != v:
        return "—"
    return f"{v:.0f}" if abs(v) >= 10 ** digits else format(v, f".{digits}g")


def _pmc(mean: float, std: float) -> str:
    """mean ± std, compact: three significant digits for the mean, two for the std."""
    return "—" if mean != mean else f"{_num(mean)} ± {_num(std, 2)}"


def _pm_n(mean: float, std: float, n: int) -> str:
    return "—" if not n else f"{_pmc(mean, std)} ({n})"


def _open_cell(r: dict, width: str, empty: str) -> str:
    """Where f did not finish: estimates inside f's interval / anchors (the attack's count), median width."""
    if not r["n_open"]:
        return empty
    return f"{r['inside']}/{r['n_open']} (attack {r['attack_inside']}), {_g(r['open_width'], width)}"


def _mean_n(mean: float, n: int) -> str:
    return "—" if not n else f"{_num(mean)} ({n})"


def _label(dataset: str, training: str) -> str:
    return f"{dataset} {training}"


def _network_label(dataset: str, training: str) -> str:
    """The row group's name with its network: the stand-in's name for the CIFAR-10 rows."""
    network = next((n for _, d, t, n, _ in ROW_GROUPS if (d, t) == (dataset, training)), None)
    if network is None:
        return _label(dataset, training)
    kind = "stand-in " if dataset == "cifar10" else ""
    return f"{_label(dataset, training)}, {kind}`{network}`"


QUALITY_LEGEND = ("**Quality of the estimate.**  *rel. diff*: |d̂_bnd − d_bnd| / d_bnd over the *n* anchors "
                  "where both distances are exact, mean ± std and (median); *attack*: the same for the attack "
                  "distance d_adv on those anchors, the baseline a substitute must beat; *no bnd.*: anchors where "
                  "g has no boundary left at all, so it gives no estimate, of all anchors.  Where f did not "
                  "finish, out of the anchors where g's own distance did (the count after the slash): *inside f*: "
                  "estimates inside f's proven interval (each end within the bisection tolerance), the attack's "
                  "d_adv in brackets, and that interval's median width relative to its upper end; d_adv is the "
                  "upper end unless a closer point was found, so the attack passes almost always, and an estimate "
                  "at or below d_adv only meets the lower end; *above f*: estimates above f's proven upper end, "
                  "where g claims robustness beyond a point proven adversarial for f; *error ≥*: the least relative "
                  "error of the estimate whatever d_bnd(f) is in that interval, median (and max).")
SPEED_LEGEND = ("**Cost of the estimate** (seconds).  *prune/run*: pruning time per optimisation run of g; "
                "*run g* / *run f*: mean ± std time of one optimisation run of g / of f (number of runs in "
                "brackets; runs of g count where their ε lies in the range f's runs explored, time-limited runs "
                "count at the time they took; where the campaign ran branch and bound in front of the MILP, a "
                "run is one bisection step, an eps-verification with all its targets, elsewhere one MILP for "
                "one target); *ratio*: median over anchors of f's mean run time over g's; "
                "*estimate (n)*: median per anchor of the whole estimate (attack, pruning and every run of g), "
                "over the *n* anchors where g's distance finished with a boundary (elsewhere there is no "
                "estimate); *f there*: median of the whole computation of f (attack and every run) on the same "
                "anchors, marked + where f did not finish on some of them (its time is then only a lower bound on what "
                "f needs).")


def _mean_median(mean: float, std: float, median: float, n: int) -> str:
    """mean ± std (median); no ± for a single value."""
    if not n:
        return "—"
    return _num(mean) if n == 1 else f"{_pmc(mean, std)} ({_num(median)})"


def _quality_cells(r: dict) -> list[str]:
    n, k = r["rel_n"], r["n_open"]
    return [r["method"], _g(r["gamma"]), f"{n}",
            _mean_median(r["rel_diff"], r["rel_diff_std"], r["rel_diff_median"], n),
            _mean_median(r["attack_rel"], r["attack_rel_std"], r["attack_rel_median"], n),
            f"{r['collapsed']}/{r['n_g']}",
            _open_cell(r, ".0%", "—"),
            f"{r['over']}/{k}" if k else "—",
            f"{_num(r['min_err_median'], 2)} ({_num(r['min_err_max'], 2)})" if k else "—"]


def _speed_cells(r: dict) -> list[str]:
    return [r["method"], _g(r["gamma"]), _pmc(r["prune_per_run"], r["prune_per_run_std"]),
            _pm_n(r["run_with"], r["run_with_std"], r["runs_with"]),
            _pm_n(r["run_without"], r["run_without_std"], r["runs_without"]), _num(r["ratio_median"]),
            f"{_num(r['estimate_s_median'])} ({r['n_estimate']})" if r["n_estimate"] else "— (0)",
            _num(r["exact_s_median"]) + ("" if r["estimate_f_exact"] == r["n_estimate"] else "+")]


_QUALITY_HEAD = ["pruner", "γ", "n", "rel. diff", "attack", "no bnd.", "inside f", "above f", "error ≥"]
_SPEED_HEAD = ["pruner", "γ", "prune/run", "run g (n)", "run f (n)", "ratio", "estimate (n)", "f there"]


def _f_exact(rows: Sequence[dict]) -> str:
    return f"f exact {rows[0]['n_exact']}/{rows[0]['anchors']}" if rows else "no records"


def _grouped(groups: "Mapping[str | None, Sequence[dict]]", head: list[str], cells, *, f_exact: bool) -> str:
    """One table; with named groups, each group's rows under a row that names it (a column of names would not
    fit): ``**name**``, and with ``f_exact`` how many of its anchors have an exact d_bnd(f)."""
    body = []
    for name, rows in groups.items():
        if name is not None:
            label = f"**{name}**" + (f" ({_f_exact(rows)})" if f_exact else "")
            body.append([label] + [""] * (len(head) - 1))
        body += [cells(r) for r in rows]
    return _table(head, body)


def _as_groups(rows: "Sequence[dict] | Mapping[str, Sequence[dict]]", network: str | None):
    return dict(rows) if isinstance(rows, Mapping) else {network: rows}


def table1_quality_markdown(rows: "Sequence[dict] | Mapping[str, Sequence[dict]]", *,
                            network: str | None = None) -> str:
    """The quality half of ``table1``: rel. diff and the attack alone (mean ± std, median) over the ``n``
    anchors where both distances are exact, collapsed substitutes and, where f did not finish, estimates inside
    f's interval (:data:`QUALITY_LEGEND` says what each short header means).  ``rows``: one network's
    ``table1`` rows, or ``{network: rows}`` for several networks (each group under a row naming it and its
    anchors with an exact d_bnd(f); so does ``network`` for one)."""
    return _grouped(_as_groups(rows, network), _QUALITY_HEAD, _quality_cells, f_exact=True)


def table1_speed_markdown(rows: "Sequence[dict] | Mapping[str, Sequence[dict]]", *,
                          network: str | None = None) -> str:
    """The cost half of ``table1``: pruning per run, one run of g and of f, their median ratio and the whole
    estimate against the whole exact computation per anchor (:data:`SPEED_LEGEND`).  ``rows`` as in
    :func:`table1_quality_markdown`."""
    return _grouped(_as_groups(rows, network), _SPEED_HEAD, _speed_cells, f_exact=False)


def table1_tables_markdown(rows: "Sequence[dict] | Mapping[str, Sequence[dict]]", *,
                           network: str | None = None) -> str:
    """All the columns of :func:`table1_markdown` as two tables that fit a book page, each under its legend:
    quality (:func:`table1_quality_markdown`), then cost (:func:`table1_speed_markdown`)."""
    groups = {k: v for k, v in _as_groups(rows, network).items() if v}
    if not groups:
        return "*No anchor with an adversarial point recorded yet.*"
    if list(groups) == [None]:
        quality = QUALITY_LEGEND + (f"  d_bnd(f) is exact on {groups[None][0]['n_exact']} of "
                                    f"{groups[None][0]['anchors']} anchors.")
    else:
        quality = QUALITY_LEGEND + ("  The line naming a network says on how many of its anchors d_bnd(f) is exact "
                                    "(*f exact*), of all its anchors.")
    return "\n\n".join([quality, table1_quality_markdown(groups), SPEED_LEGEND, table1_speed_markdown(groups)])


def _distance_cell(d: DistanceRecord | None, *, interval: bool = True) -> str:
    if d is None:
        return "error"
    if d.exact:
        return "no boundary" if d.value is None else f"{d.value:#.4g}"
    if not interval:
        return d.status.value
    upper = "∞" if d.upper is None else f"{d.upper:#.4g}"
    return f"{d.status.value} [{d.lower or 0:#.4g}, {upper}]"


def per_anchor_markdown(records: Records) -> str:
    """One line per anchor: d_adv, d_bnd(f) (exact, or its status and proven interval) with f's number of
    optimisation runs (as the cost tables count them: MILP runs, or bisection steps where branch and bound ran
    in front of the MILP), and d_bnd(g) of every substitute (exact, ``no boundary``, or the status of an unfinished one), one
    column per pruner with its gammas side by side."""
    records = as_records(records)
    pairs = list(dict.fromkeys((s.method, s.gamma) for r in records for s in r.substitutes))
    methods = list(dict.fromkeys(m for m, _ in pairs))
    gammas = {m: [g for mm, g in pairs if mm == m] for m in methods}
    head = ["anchor", "d_adv", "d_bnd(f)", "runs of f"] + [f"{m} ({' / '.join(_g(g) for g in gammas[m])})"
                                                           for m in methods]
    body = []
    for r in records:
        if not r.ok:
            body.append([f"{r.index}", "—", r.status.value, "—"] + ["—"] * len(methods))
            continue
        subs = {(s.method, s.gamma): _distance_cell(s.g, interval=False) for s in r.substitutes}
        body.append([f"{r.index}", _g(r.d_adv, "#.4g"), _distance_cell(r.f), f"{len(_runs_of(r.f, r))}"] +
                    [" / ".join(subs.get((m, g), "—") for g in gammas[m]) for m in methods])
    return _table(head, body) if body else "*No anchor recorded yet.*"


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


def _percent(v: float) -> str:
    """A fraction as a percentage with two significant digits, whole numbers from 100% on (990%, not 9.9e+02%)."""
    return f"{100 * v:.0f}%" if abs(v) >= 1 else f"{100 * v:.2g}%"


def _comparison_pairs(comparison: Sequence[dict]) -> list[tuple[str, str, float, list[tuple[float, float]]]]:
    """Per attack kind and substitute in :func:`attack_comparison`'s rows: (kind, method, gamma, pairs of the
    relative errors (d_adv, d_bnd(g)) on the anchors where both are known)."""
    keys = list(dict.fromkeys(k for row in comparison for k in row if k.startswith(("strong_", "plain_"))
                              and not k.endswith("_attack")))
    out = []
    for key in keys:
        kind, method, gamma = key.split("_", 2)
        pairs = [(row[f"{kind}_attack"], row[key]) for row in comparison
                 if row.get(key) is not None and row.get(f"{kind}_attack") is not None]
        if pairs:
            out.append((kind, method, float(gamma), pairs))
    return out


def attack_comparison_markdown(comparison: Sequence[dict]) -> str:
    """The rows of :func:`attack_comparison` in one table: per attack (strong, plain PGD) and substitute
    (pruner and gamma), on how many anchors d_bnd(g) is closer to d_bnd(f) than the d_adv it was built from,
    and the median relative errors of both (the attack alone is the baseline the substitute must beat)."""
    head = ["attack", "substitute", "anchors", "g closer than its attack", "median error of d_adv",
            "median error of d_bnd(g)"]
    body = []
    for kind, method, gamma, pairs in _comparison_pairs(comparison):
        closer = sum(g < a for a, g in pairs)
        body.append([kind if kind == "strong" else "plain PGD", f"{method} {gamma:g}", str(len(pairs)),
                     f"{closer} of {len(pairs)}", _percent(_stats(a for a, _ in pairs)['median']),
                     _percent(_stats(g for _, g in pairs)['median'])])
    if not body:
        return "No anchor with an exact d_bnd(f) and an exact d_bnd(g) from both attacks."
    return _table(head, body)


def attack_findings(comparison: Sequence[dict]) -> str:
    """:func:`attack_comparison`'s rows in sentences: per attack, its median relative error, the substitute
    with the smallest median error (among those with an exact distance on at least half the anchors) and on
    how many anchors it is closer than the attack, and whether it beats the attack alone."""
    sentences = []
    pairs = _comparison_pairs(comparison)
    for kind, name in (("strong", "the strong attack"), ("plain", "the paper's plain PGD")):
        mine = [(m, g, p) for k, m, g, p in pairs if k == kind]
        if not mine:
            continue
        most = max(len(p) for _, _, p in mine)
        method, gamma, best = min(((m, g, p) for m, g, p in mine if 2 * len(p) >= most),
                                  key=lambda t: _stats(e for _, e in t[2])["median"])
        att = _stats(a for a, _ in best)["median"]
        sub = _stats(e for _, e in best)["median"]
        closer = sum(e < a for a, e in best)
        verdict = ("the substitute adds information" if sub < att else
                   "the attack alone is the better estimate")
        mixed = ""
        if sub >= att and 2 * closer > len(best):
            mixed = " (more often closer, but by less than it is off elsewhere: its median error is larger)"
        elif sub < att and 2 * closer < len(best):
            mixed = " (less often closer, but its median error is smaller)"
        sentences.append(f"With {name}, d_adv is off by a median {_percent(att)}; the best substitute, "
                         f"{method} at gamma {gamma:g}, by {_percent(sub)}, and it is closer than its attack on "
                         f"{closer} of {len(best)} anchors{mixed}: {verdict}.")
    return " ".join(sentences) if sentences else "No anchor with an exact d_bnd(f) and both attacks."


def closer_points_markdown(groups: "Mapping[str, Records]", *, methods: Sequence[str] = ("linear", "activation"),
                           gammas: Sequence[float] = (0.99,)) -> str:
    """Does the substitute find a closer adversarial point than its attack?  Per group of records (e.g. a
    row group), attack (strong; the paper's plain PGD where recorded) and substitute: on how many anchors
    g's closest point, re-checked on f in float64, is adversarial for f below ``d_adv``, and by how much
    (median of ``1 - f_upper / d_adv``).  Unlike the relative error, this needs no exact d_bnd(f): it is a
    proven improvement of f's upper bound.  Records from before the check have no say.  With one group the
    column naming it is left out."""
    one = len(groups) == 1  # one group (a network's own page): no column naming it
    head = ["records", "attack", "substitute", "anchors checked", "closer point for f", "median gain"][one:]
    body = []
    for name, recs in groups.items():
        for kind in ("substitutes", "plain"):
            rows = {(r["method"], r["gamma"]): r for r in table1(recs, substitutes=kind)}
            for r in (rows[k] for k in ((m, g) for m in methods for g in gammas) if k in rows):
                if r["n_checked"]:
                    gain = "—" if not r["closer"] else _percent(r["closer_gain"])
                    body.append([name, "strong" if kind == "substitutes" else "plain PGD",
                                 f"{r['method']} {r['gamma']}", str(r["n_checked"]),
                                 f"{r['closer']} of {r['n_checked']}", gain][one:])
    if not body:
        return "No record re-checked the substitute's closest point on f yet."
    return _table(head, body)


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


def _paper_and_ours(ours: dict[tuple[str, str], list[dict]]):
    for p in paper_table1():
        rows = ours.get((p["dataset"], p["training"]), [])
        yield p, next((r for r in rows if r["method"] == p["pruner"] and abs(r["gamma"] - p["gamma"]) < 1e-9), None)


SIDE_BY_SIDE_QUALITY_LEGEND = (
    "**Quality, the paper's and ours.**  *rel. diff*: mean ± std of |d̂_bnd − d_bnd| / d_bnd, ours over the *n* "
    "anchors where both distances are exact; *attack*: the same for our attack distance d_adv on those anchors, "
    "the baseline a substitute must beat; *error ≥ (above f)*: where our f did not finish, the least relative "
    "error the estimate has whatever d_bnd(f) is in f's proven interval, median over the anchors where g's "
    "distance finished, and how many of those lie above f's proven upper end (a proven overestimate: g claims "
    "robustness beyond a point proven adversarial for f).  The line naming a row group says on how many of our anchors d_bnd(f) "
    "is exact (*f exact 0/n*: f never finished, so there is no relative difference) or that the group was "
    "*not run* yet.")
SIDE_BY_SIDE_SPEED_LEGEND = (
    "**Time of one optimisation run (s), the paper's and ours.**  *prune*: mean pruning time per run of g "
    "(the paper reports it below 0.1 s); *run g* / *run f*: mean time of one run of "
    "the substitute g / of the network f (ours count runs that hit the time limit at the time they took; the "
    "paper's count only finished runs; where the campaign ran branch and bound in front of the MILP, a run is "
    "one bisection step, an eps-verification with all its targets); *(n)*: how many of our runs the mean is "
    "over.  Ours ran HiGHS on one thread per worker of a 2-core machine; the paper's solver and machine differ, "
    "so the ratio of g to f within a row says more than either time alone.")


def _by_row_group(ours: dict[tuple[str, str], list[dict]], head: list[str], cells, note) -> str:
    """The paper's rows, each row group under a line naming it (``note(our rows)`` beside the name)."""
    body, group = [], None
    for p, o in _paper_and_ours(ours):
        if (p["dataset"], p["training"]) != group:
            group = (p["dataset"], p["training"])
            label = f"**{_network_label(*group)}**" + note(ours.get(group, []))
            body.append([label] + [""] * (len(head) - 1))
        body.append(cells(p, o))
    return _table(head, body)


def side_by_side_quality_markdown(ours: dict[tuple[str, str], list[dict]]) -> str:
    """The paper's 36 rows with our relative difference and the attack alone beside the paper's relative
    difference, each row group under a line with its anchors whose d_bnd(f) is exact (``ours`` as in
    :func:`side_by_side_markdown`)."""
    def cells(p, o):
        paper = _pmc(p["rel_diff"], p["rel_diff_std"]) if p["rel_diff_std"] == p["rel_diff_std"] else _num(p["rel_diff"])
        mine = (["—", "—", "—", "—"] if o is None else
                [_pmc(o["rel_diff"], o["rel_diff_std"]) if o["rel_n"] else "—", f"{o['rel_n']}",
                 _pmc(o["attack_rel"], o["attack_rel_std"]) if o["rel_n"] else "—",
                 f"{_num(o['min_err_median'], 2)} ({o['over']}/{o['n_open']})" if o["n_open"] else "—"])
        return [p["pruner"], _g(p["gamma"]), paper, *mine]

    return _by_row_group(ours, ["pruner", "γ", "paper: rel. diff", "ours: rel. diff", "n", "ours: attack",
                                "ours: error ≥ (above f)"], cells,
                         lambda rows: f" ({_f_exact(rows)})" if rows else " (not run)")


def side_by_side_speed_markdown(ours: dict[tuple[str, str], list[dict]]) -> str:
    """The paper's 36 rows with the mean time of one run of g and of f, the paper's beside ours."""
    def cells(p, o):
        mine = (["—", "—", "—"] if o is None else
                [_num(o["prune_per_run"], 2), _mean_n(o["run_with"], o["runs_with"]),
                 _mean_n(o["run_without"], o["runs_without"])])
        return [p["pruner"], _g(p["gamma"]), _num(p["prune_per_run"], 2), mine[0], _num(p["run_with"]), mine[1],
                _num(p["run_without"]), mine[2]]

    return _by_row_group(ours, ["pruner", "γ", "paper: prune", "ours: prune", "paper: run g", "ours: run g (n)",
                                "paper: run f", "ours: run f (n)"],
                         cells,
                         lambda rows: "" if rows else " (not run)")


def side_by_side_tables_markdown(ours: dict[tuple[str, str], list[dict]]) -> str:
    """:func:`side_by_side_markdown`'s columns as two tables that fit a book page, each under its legend."""
    return "\n\n".join([SIDE_BY_SIDE_QUALITY_LEGEND, side_by_side_quality_markdown(ours),
                          SIDE_BY_SIDE_SPEED_LEGEND, side_by_side_speed_markdown(ours)])


def row_group_markdown(records: "Mapping[str, Records]") -> str:
    """One line per row group of :data:`ROW_GROUPS` (``records[stem]``: its records): anchors, how many have an
    adversarial point and an exact d_bnd(f), the median d_adv and the median time of the exact D(f); its
    networks in a sentence under the table (their names are too long for a column)."""
    body, names = [], []
    for stem, dataset, training, network, in_paper in ROW_GROUPS:
        s = row_group_summary(records.get(stem, []))
        label = _label(dataset, training) + ("" if in_paper else " (not in the paper)")
        body.append([label, f"{s['anchors']}", f"{s['ok']}", f"{s['f_exact']}", _g(s["d_adv_median"], ".4f"),
                     _g(s["f_time_median"])])
        names.append(f"{label}: `{network}`")
    head = ["row group", "anchors", "with adv. point", "f exact", "median d_adv", "median D(f) (s)"]
    legend = ("*with adv. point*: anchors where the attack found an adversarial point; *f exact*: anchors whose "
              "d_bnd(f) is exact; *median D(f)*: median time per anchor of the whole exact computation of f "
              "(attack and every run, time-limited ones included).  Networks: " + "; ".join(names) + ".")
    return _table(head, body) + "\n\n" + legend


def row_group_summary(records: Records) -> dict:
    """Per row group: anchors, with an adversarial point, f exact, and the median d_adv and f interval."""
    records = as_records(records)
    recs = _ok(records)
    exact = [r for r in recs if r.f.exact]
    widths = [(r.f.upper - (r.f.lower or 0.0)) / r.f.upper for r in recs
              if not r.f.exact and r.f.upper is not None and math.isfinite(r.f.upper) and r.f.upper > 0]
    return dict(anchors=len(records), ok=len(recs), f_exact=len(exact),
                d_adv_median=_stats(r.d_adv for r in recs)["median"],
                f_time_median=_stats(_attack_s(r) + r.f.time_s for r in recs)["median"],
                f_open=len(widths), f_width_median=_stats(widths)["median"])


def _pct(v: float) -> str:
    return "n/a" if v != v else _percent(v)


def _pct3(v: float) -> str:
    """A relative difference as a percentage with three significant digits (two would print 2.40% and 2.43%
    alike)."""
    return "n/a" if v != v else f"{100 * v:.3g}%"


def _name(r: dict) -> str:
    return f"{r['method']} {r['gamma']:g}"


def _estimate_time(r: dict) -> str:
    """A substitute's whole estimate against f's computation on the anchors where g finished, as a phrase."""
    if not r["n_estimate"]:
        return f"{_name(r)} finished on none of {r['n_g']}"
    est, ex, k, kf = r["estimate_s_median"], r["exact_s_median"], r["n_estimate"], r["estimate_f_exact"]
    where = f"the {k} of {r['n_g']} anchors where g finished" if k < r["n_g"] else f"all {k} anchors"
    if kf == k and est > 0:
        ratio = ex / est
        how = ("about as fast" if 0.95 <= ratio <= 1.05 else
               f"{ratio:.1f}x faster" if ratio > 1 else f"{1 / ratio:.1f}x slower")
        return f"{_name(r)} {_num(est)} s against {_num(ex)} s for f's exact distance on {where} ({how})"
    finished = "" if kf == 0 else f"; f finished on {kf} of them"
    return f"{_name(r)} {_num(est)} s against at least {_num(ex)} s for f ({where}{finished})"


def _attack_passes(rows: Sequence[dict]) -> str:
    missed = sum(r["n_open"] - r["attack_inside"] for r in rows)
    return (" (the attack's d_adv passes on all of them)" if not missed else
            f" (the attack's d_adv fails on {missed} of them)")


def findings_markdown(records: Records, *, name: str, rows: Sequence[dict] | None = None, indent: str = "") -> str:
    """One network's findings in computed sentences, headed ``name``: how many anchors and how many exact
    d_bnd(f); the paper's measure where f finished, with the attack beside it; where it did not, how the
    estimates sit against f's proven interval (inside, above it: a proven overestimate, and the least error
    that implies), substitutes without a boundary, and the whole estimate's time against f's on the same
    anchors: a sentence, then one list item (prefixed ``indent``) per finding.  ``rows``: its :func:`table1`
    rows, if already computed."""
    recs = as_records(records)
    if not recs:
        return f"{name}: no records yet."
    rs = rows if rows is not None else table1(recs)
    s = row_group_summary(recs)
    n_bab = sum(_uses_bab(r) for r in _ok(recs))
    how = ("" if not n_bab else f" (D with branch and bound in front of the MILP on {n_bab} of them, the plain "
           "MILP on the others; their runs are bisection steps)" if n_bab < s["ok"] else
           " (D with branch and bound in front of the MILP; runs are bisection steps)")
    head = f"{name}: {_count(s['anchors'], 'anchor')}{how}, d_bnd(f) exact on {s['f_exact']}"
    if s["f_open"]:
        head += (f"; where it did not finish, f's proven interval has a median width of {_pct(s['f_width_median'])} "
                 f"of its upper end ({s['f_open']} anchors)")
    parts = []
    for r in rs:
        if r["rel_n"] and r["method"] != "constant":
            rel, att = r["rel_diff"], r["attack_rel"]
            beat = ("about as good as" if abs(rel - att) <= 0.05 * max(rel, att) else
                    "better than" if rel < att else "worse than")
            how = (f"off by {_pct3(rel)} (n = 1)" if r["rel_n"] == 1 else
                   f"off by {_pct3(rel)} on average (median {_pct3(r['rel_diff_median'])}, n = {r['rel_n']})")
            parts.append(f"{_name(r)} is {how}, {beat} the attack alone ({_pct3(att)} on the same anchors)")
    for r in rs:
        if r["collapsed"]:
            parts.append(f"{_name(r)} has no boundary left at all on {r['collapsed']} of {r['n_g']} anchors "
                         "(no estimate)")
    open_ = [r for r in rs if r["n_open"] and r["method"] != "constant"]
    if open_:
        parts.append("where f did not finish, the estimate lies inside f's proven interval on " + ", ".join(
            f"{r['inside']} of {r['n_open']} ({_name(r)})" for r in open_) + _attack_passes(open_))
    over = [r for r in open_ if r["over"]]
    if over:
        parts.append("above f's proven upper end, claiming robustness beyond a point proven adversarial for f: "
                     + ", ".join(f"{_name(r)} on {r['over']} of {r['n_open']}, by at least "
                                 f"{_pct(r['over_err_median'])} in the median of those (up to "
                                 f"{_pct(r['min_err_max'])})" for r in over))
    under = [r for r in open_ if r["under"]]
    if under:
        parts.append("below f's proven lower end, an underestimate: " + ", ".join(
            f"{_name(r)} on {r['under']} of {r['n_open']}, by at least {_pct(r['under_err_median'])} in the median "
            "of those" for r in under))
    timed = [_estimate_time(r) for r in rs if r["method"] != "constant"]
    if timed:
        parts.append("per anchor, the whole estimate (attack, pruning, every run of g) takes a median: " +
                     "; ".join(timed))
    return "\n".join([head + "."] + [f"{indent}- {p[0].upper()}{p[1:]}." for p in parts])


def row_group_findings(records: "Mapping[str, Records]", *, rows: "Mapping[str, Sequence[dict]] | None" = None) -> str:
    """:func:`findings_markdown` for every row group of :data:`ROW_GROUPS` (``records[stem]``), one item each;
    ``rows[stem]``: its :func:`table1` rows, if already computed."""
    return "\n".join("* " + findings_markdown(records.get(stem, []), name=f"**{_label(dataset, training)}** (`{network}`)",
                                                rows=None if rows is None else rows.get(stem), indent="  ")
                     for stem, dataset, training, network, _ in ROW_GROUPS)


def conclusions_markdown(records: "Mapping[str, Records]", *, rows: "Mapping[str, Sequence[dict]] | None" = None) -> str:
    """What the random anchors of every row group of :data:`ROW_GROUPS` allow concluding, pooled per pruner and
    gamma, in computed sentences: whether the paper's measure can be checked at all (exact d_bnd(f)), proven
    overestimates, substitutes without a boundary, how often g's own distance finished, and where the estimate
    is inside f's proven interval."""
    rows = {stem: (rows[stem] if rows is not None and stem in rows else table1(records.get(stem, [])))
            for stem, *_ in ROW_GROUPS}
    summaries = {stem: row_group_summary(records.get(stem, [])) for stem, *_ in ROW_GROUPS}
    anchors = sum(s["anchors"] for s in summaries.values())
    exact = sum(s["f_exact"] for s in summaries.values())
    pooled: dict[tuple[str, float], dict[str, int]] = {}
    for rs in rows.values():
        for r in rs:
            p = pooled.setdefault((r["method"], r["gamma"]), dict.fromkeys(
                ("n_g", "n_g_exact", "collapsed", "n_open", "inside", "over", "under", "rel_n"), 0))
            for k in p:
                p[k] += r[k]
    order = sorted(pooled, key=lambda k: (_METHOD_ORDER.get(k[0], 9), k[1]))
    lines = []
    if exact == 0:
        lines.append(f"* **The paper's measure cannot be checked here.**  d_bnd(f) finished on none of the {anchors} "
                     "random anchors, so the relative difference to it, the paper's measure of a substitute, can be "
                     "neither confirmed nor refuted on them.")
    else:
        lines.append(f"* d_bnd(f) finished on {exact} of the {anchors} random anchors: the paper's measure rests "
                     "on those alone.")
    over = [(k, pooled[k]) for k in order if pooled[k]["over"]]
    if over:
        lines.append("* **Proven overestimates.**  Where f did not finish, the estimate lies above f's proven upper "
                     "end (g claims robustness beyond a point proven adversarial for f) for " + ", ".join(
                         f"{m} {g:g} on {p['over']} of {p['n_open']} anchors" for (m, g), p in over) + ".")
    under = [(k, pooled[k]) for k in order if pooled[k]["under"]]
    if under:
        lines.append("* **Proven underestimates**, below f's proven lower end: " + ", ".join(
            f"{m} {g:g} on {p['under']} of {p['n_open']} anchors" for (m, g), p in under) + ".")
    collapsed = [(k, pooled[k]) for k in order if pooled[k]["collapsed"]]
    if collapsed:
        lines.append("* **No boundary at all** (no estimate): " + ", ".join(
            f"{m} {g:g} on {p['collapsed']} of {p['n_g']} anchors" for (m, g), p in collapsed) + ".")
    lines.append("* **g's own distance finished** on " + ", ".join(
        f"{p['n_g_exact']} of {p['n_g']} anchors ({m} {g:g})" for (m, g), p in
        ((k, pooled[k]) for k in order if k[0] != "constant")) + ".")
    inside = [(k, pooled[k]) for k in order if pooled[k]["n_open"] and k[0] != "constant"]
    if inside:
        lines.append("* **Inside f's proven interval** where f did not finish: " + ", ".join(
            f"{p['inside']} of {p['n_open']} ({m} {g:g})" for (m, g), p in inside) + "; the attack's own d_adv "
            "passes this test too, so it shows that an estimate is not refuted, not that it is good.")
    prune = [r["prune_per_run"] for rs in rows.values() for r in rs
             if r["method"] != "constant" and r["prune_per_run"] == r["prune_per_run"]]
    if prune:
        span = (_num(min(prune), 2) if _num(min(prune), 2) == _num(max(prune), 2) else
                f"{_num(min(prune), 2)}-{_num(max(prune), 2)}")
        lines.append(f"* **Pruning** costs {span} s per run of g (mean per row "
                     "group, linear and activation; the paper reports below 0.1 s) and is "
                     + ("within" if max(prune) < 0.1 else "above" if min(prune) >= 0.1 else "partly above")
                     + " the paper's figure here.")
    return "\n".join(lines)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def records_summary_markdown(records: Records, n_asked: int | None = None) -> str:
    """What a results file holds, in sentences: anchors recorded (and asked for), with an adversarial point,
    with an exact d_bnd(f); the code commits, machine and last date; and, when the records were computed
    with different configurations, which settings differ and how many anchors had each value (a row mixes
    them only where the reader is told)."""
    records = as_records(records)
    ok = _ok(records)
    asked = "" if n_asked is None else f" ({n_asked} asked for)"
    out = (f"{_count(len(records), 'anchor')} recorded{asked}; {len(ok)} with an adversarial point; "
           f"d_bnd(f) exact within the limits on {len(ok) and sum(r.f.exact for r in ok)}.")
    prov = [r.provenance for r in records if r.provenance is not None and r.provenance.config]
    if not prov:
        return out
    commits = list(dict.fromkeys((p.commit or "unknown")[:12] for p in prov))
    last = prov[-1]
    out += (f"  Computed by {'commit' if len(commits) == 1 else 'commits'} "
            f"{', '.join(f'`{c}`' for c in commits)} on a {(last.machine or {}).get('cpus', '?')}-core "
            f"{(last.machine or {}).get('processor', '?')} machine; last record {last.date}.")
    keys = sorted({k for p in prov for k in p.config})
    differ = []
    for k in keys:
        values = [repr(p.config[k]) if k in p.config else "absent (older code)" for p in prov]
        if len(set(values)) > 1:
            tally = ", ".join(f"{v} on {_count(values.count(v), 'anchor')}" for v in dict.fromkeys(values))
            differ.append(f"`{k}` {tally}")
    if differ:
        out += ("  The records were computed with different settings (each record keeps its own `config`): "
                + "; ".join(differ) + ".")
    return out
