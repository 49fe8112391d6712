"""The experiment of Section 4: exact distances of f and of its substitutes, anchor by anchor.

``run_anchor`` does everything for one anchor point (attack, exact distance of ``f`` by bisection,
every pruner and gamma, exact distance of each substitute) and returns a JSON-able record with every
optimisation run.  ``run_experiment`` runs many anchors, appends each finished record to a JSON-lines file
(so a crashed run resumes where it stopped) and can spread anchors over a Dask cluster.  ``table1`` turns
records into the columns of the paper's Table 1.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .attacks import min_distance_attack
from .distance import DistanceResult, boundary_distance
from .network import ReluNetwork
from .pruning import PruningError, prune

__all__ = ["ExperimentConfig", "select_anchors", "run_anchor", "run_experiment", "load_records", "table1",
           "table1_markdown", "runtime_points"]


@dataclass(frozen=True)
class ExperimentConfig:
    methods: tuple[str, ...] = ("constant", "linear", "activation")
    gammas: tuple[float, ...] = (0.9, 0.99)
    gamma0: float = 0.25
    prune_bounds: str = "fastlin_ibp"
    distance_method: str = "bisection"  # the paper's procedure: binary search over eps of problem (2)
    time_limit: float = 60.0  # per optimisation run, as in the paper's Figure 3
    total_time_limit: float | None = 600.0  # per distance computation
    tol: float = 1e-4  # bisection: absolute width of the final interval
    domain: tuple[float, float] = (0.0, 1.0)
    threads: int = 1


def _runs(d: DistanceResult) -> list[dict]:
    return [
        dict(eps=r.eps, target=r.target, status=r.verdict.value, solver_status=r.solver_status.value,
             time_s=r.time_s, build_time_s=r.build_time_s, binaries=r.num_binaries)
        for r in d.runs
    ]


def _distance_record(d: DistanceResult) -> dict:
    fin = lambda v: None if v is None or not math.isfinite(v) else float(v)  # noqa: E731
    return dict(status=d.status.value, value=fin(d.value), lower=fin(d.lower), upper=fin(d.upper),
                time_s=d.time_s, attack_s=d.attack_time_s, runs=_runs(d), unstable=list(d.unstable) if d.unstable else None,
                steps=[dict(eps=st.eps, status=st.status.value, milp_runs=st.milp_runs, time_s=st.time_s) for st in d.steps])


def run_anchor(net: ReluNetwork, x0: torch.Tensor, label: int, index: int, config: ExperimentConfig) -> dict:
    """One anchor: attack, exact distance of f, and every substitute's exact distance, with all runs."""
    x0 = torch.as_tensor(x0, dtype=torch.float64).reshape(net.input_shape)
    rec: dict = dict(index=int(index), label=int(label))
    if int(net.predict(x0[None])[0]) != label:
        rec["status"] = "misclassified"
        return rec
    adv = min_distance_attack(net, x0, label, domain=config.domain)
    rec["attack_s"] = adv.time_s
    if not adv.success:
        rec["status"] = "no_adversarial"
        return rec
    rec.update(status="ok", d_adv=float(adv.distance))
    kw = dict(method=config.distance_method, time_limit=config.time_limit, total_time_limit=config.total_time_limit,
              domain=config.domain, threads=config.threads)
    if config.distance_method == "bisection":
        kw["tol"] = config.tol
    rec["f"] = _distance_record(boundary_distance(net, x0, label, attack=adv, **kw))
    subs = []
    for method in config.methods:
        for gamma in config.gammas:
            t0 = time.perf_counter()
            try:
                sub = prune(net, x0, label, method=method, gamma=gamma, gamma0=min(config.gamma0, gamma / 2),
                            bounds=config.prune_bounds, attack=adv, domain=config.domain)
            except PruningError as exc:
                subs.append(dict(method=method, gamma=gamma, error=str(exc)))
                continue
            prune_s = time.perf_counter() - t0  # without the attack, shared by all substitutes
            g = sub.network
            # f's counterexample is reused when it is adversarial for g too (always for `linear`, where
            # g(x_adv) = f(x_adv)); otherwise g gets its own attack.  boundary_distance re-checks it on g.
            reuse = int(g.predict(adv.x_adv.reshape((1,) + tuple(g.input_shape)))[0]) != label
            dg = boundary_distance(g, x0, label, attack=adv if reuse else True, **kw)
            subs.append(dict(method=method, gamma=gamma, prune_s=prune_s, relus_left=g.num_relus,
                             pruned_per_layer=list(sub.pruned_per_layer), attack_reused=reuse,
                             g=_distance_record(dg)))
    rec["substitutes"] = subs
    return rec


def select_anchors(net: ReluNetwork, xs: torch.Tensor, ys: torch.Tensor, n: int, *, first: int = 0,
                   not_certified_at: float | None = None, max_d_adv: float | None = None, bounds: str = "crown",
                   domain: tuple[float, float] = (0.0, 1.0)) -> list[int]:
    """The first ``n`` indices ``>= first`` of correctly classified points.

    With ``not_certified_at = r``, only points whose robustness at radius ``r`` the ``bounds`` cannot
    prove: a certified point has ``d_bnd >= r``, so this keeps every point with ``d_bnd < r`` (and some
    above).  It is how to spend a small compute budget on anchors whose exact distance a MILP can reach
    (on a certifiably trained network most points are far from the boundary and their MILPs time out);
    it biases the sample towards the less robust points, which a report must say.

    With ``max_d_adv``, only points where the attack (the runner's own, with its seed) finds an
    adversarial example within that distance: then ``d_bnd <= max_d_adv`` for sure.
    """
    from .estimate import certified_radius

    pred = net.predict(xs.reshape((len(ys),) + tuple(net.input_shape)))
    out: list[int] = []
    for i in range(int(first), len(ys)):
        if len(out) >= n:
            break
        if int(pred[i]) != int(ys[i]):
            continue
        if not_certified_at is not None:
            x0 = xs[i].reshape(net.input_shape).to(torch.float64)
            if certified_radius(net, x0, int(ys[i]), hi=not_certified_at, bounds=bounds, domain=domain,
                                iters=0) >= not_certified_at:
                continue
        if max_d_adv is not None:
            adv = min_distance_attack(net, xs[i].reshape(net.input_shape).to(torch.float64), int(ys[i]),
                                      domain=domain)
            if not adv.success or adv.distance > max_d_adv:
                continue
        out.append(i)
    return out


def load_records(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything before it is intact
    return out


def run_experiment(
    net: ReluNetwork,
    xs: torch.Tensor,
    ys: torch.Tensor,
    indices: Sequence[int],
    *,
    config: ExperimentConfig = ExperimentConfig(),
    results: str | os.PathLike,
    dask_address: str | None = None,
    use_dask: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Run ``run_anchor`` on ``indices`` (skipping those already in ``results``), appending each record.

    With ``use_dask`` (a local cluster) or ``dask_address`` (an existing scheduler), anchors run in
    parallel, one task each; records are written as they finish."""
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = {r["index"] for r in load_records(results)}
    todo = [int(i) for i in indices if int(i) not in done]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(indices), initial=len(indices) - len(todo), disable=not progress, desc="anchors")

    def write(rec: dict) -> None:
        with results.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        bar.update(1)

    if use_dask or dask_address:
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None if dask_address else LocalCluster(n_workers=max(1, (os.cpu_count() or 2) // max(1, config.threads)),
                                                         threads_per_worker=1, processes=True)
        client = Client(dask_address or cluster)
        try:
            futures = [client.submit(run_anchor, net, xs[i], int(ys[i]), i, config, pure=False) for i in todo]
            for fut in as_completed(futures):
                write(fut.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    else:
        for i in todo:
            write(run_anchor(net, xs[i], int(ys[i]), i, config))
    bar.close()
    return load_records(results)


def _mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std()), int(v.size)


def table1(records: Sequence[dict]) -> list[dict]:
    """The columns of Table 1 per (method, gamma), over anchors where both distances are exact.

    * ``rel_diff``: mean of ``|d_bnd(g) - d_bnd(f)| / d_bnd(f)`` (``collapsed`` counts the anchors where g
      has no boundary at all in the domain: an infinite difference, left out of the mean and reported);
    * ``prune_per_run``: pruning time divided by the substitute's number of optimisation runs;
    * ``run_with`` / ``run_without``: mean time of an optimisation run of g / of f, counting only runs whose
      eps lies in the range of eps that f's runs explored for the same anchor (the paper's fairness rule);
    * ``total_with`` / ``total_without``: mean time of the whole exact-distance computation per anchor (bounds
      and every MILP, without the attack), over anchors where both are exact: a substitute whose bounds
      decide every query has no optimisation run at all, and only this column shows its cost.
    """
    rows: dict[tuple[str, float], dict[str, list]] = {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        f = rec["f"]
        f_eps = [r["eps"] for r in f["runs"] if r["status"] in ("robust", "not_robust")]
        lo, hi = (min(f_eps), max(f_eps)) if f_eps else (math.inf, -math.inf)
        for s in rec["substitutes"]:
            if "g" not in s:
                continue
            acc = rows.setdefault((s["method"], s["gamma"]), dict(rel=[], prune=[], with_=[], without=[], n=0, collapsed=0, total_with=[], total_without=[]))
            acc["n"] += 1
            g = s["g"]
            if f["status"] == "exact" and g["status"] == "exact" and f["value"] and g["value"] is not None:
                acc["rel"].append(abs(g["value"] - f["value"]) / f["value"])
            elif f["status"] == "exact" and g["status"] == "exact" and f["value"] and g["value"] is None:
                acc["collapsed"] += 1  # boundary collapse: g has no adversarial point in the domain at all
            n_runs = max(1, len(g["runs"]))
            acc["prune"].append(s["prune_s"] / n_runs)
            acc["with_"] += [r["time_s"] for r in g["runs"] if lo <= r["eps"] <= hi and r["status"] != "timeout"]
            acc["without"] += [r["time_s"] for r in f["runs"] if r["status"] != "timeout"]
            if f["status"] == "exact" and g["status"] == "exact":
                acc["total_with"].append(g["time_s"] - g.get("attack_s", 0.0))
                acc["total_without"].append(f["time_s"] - f.get("attack_s", 0.0))
    out = []
    for (method, gamma), acc in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rel = _mean_std(acc["rel"])
        prune_t = _mean_std(acc["prune"])
        w = _mean_std(acc["with_"])
        wo = _mean_std(acc["without"])
        tw, two = _mean_std(acc["total_with"]), _mean_std(acc["total_without"])
        out.append(dict(method=method, gamma=gamma, anchors=acc["n"], rel_diff=rel[0], rel_diff_std=rel[1],
                        rel_n=rel[2], rel_max=max(acc["rel"]) if acc["rel"] else math.nan, collapsed=acc["collapsed"], prune_per_run=prune_t[0], prune_per_run_std=prune_t[1],
                        run_with=w[0], run_with_std=w[1], runs_with=w[2], run_without=wo[0],
                        run_without_std=wo[1], runs_without=wo[2],
                        speedup=wo[0] / w[0] if w[2] and w[0] > 0 else math.nan,
                        total_with=tw[0], total_without=two[0],
                        total_speedup=two[0] / tw[0] if tw[2] and tw[0] > 0 else math.nan))
    return out


def _pm(mean: float, std: float) -> str:
    return "n/a" if mean != mean else f"{mean:.3g} ± {std:.2g}"


def table1_markdown(rows: Sequence[dict], *, network: str | None = None) -> str:
    """``table1`` rows as a markdown table (one line per pruner and gamma; a first column if ``network``)."""
    head = ["pruner", "γ", "rel. diff d_bnd", "collapsed", "prune/run (s)", "run with pruning (s)",
            "run without (s)", "speed-up per run", "D per anchor with / without (s)"]
    if network is not None:
        head.insert(0, "network")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['gamma']}", f"{_pm(r['rel_diff'], r['rel_diff_std'])} (n={r['rel_n']})",
                 f"{r['collapsed']}", _pm(r["prune_per_run"], r["prune_per_run_std"]),
                 f"{_pm(r['run_with'], r['run_with_std'])} (n={r['runs_with']})",
                 f"{_pm(r['run_without'], r['run_without_std'])} (n={r['runs_without']})",
                 f"{r['speedup']:.3g}", f"{r['total_with']:.3g} / {r['total_without']:.3g}"]
        if network is not None:
            cells.insert(0, network)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runtime_points(records: Sequence[dict], *, gamma: float) -> dict[str, list[tuple[float, float]]]:
    """Figure 3: (time, eps) of every completed optimisation run of the substitutes at ``gamma``, per
    method, and of f (key ``"original"``)."""
    pts: dict[str, list[tuple[float, float]]] = {"original": []}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        pts["original"] += [(r["time_s"], r["eps"]) for r in rec["f"]["runs"] if r["status"] != "timeout"]
        for s in rec["substitutes"]:
            if "g" in s and s["gamma"] == gamma:
                pts.setdefault(s["method"], []).extend(
                    (r["time_s"], r["eps"]) for r in s["g"]["runs"] if r["status"] != "timeout")
    return pts
