"""The experiment of Section 4: exact distances of f and of its substitutes, anchor by anchor.

``anchor_record`` does everything for one anchor point (attack, exact distance of ``f`` by bisection,
every pruner and gamma, exact distance of each substitute, optionally the same from the paper's plain PGD
attack) and returns a typed record (``run_anchor``: the same as its JSON object) with every optimisation
run, the configuration, the code commit, the machine and the date.  ``run_experiment`` runs many anchors,
appends each finished record to a JSON-lines file (a crashed or killed run resumes where it stopped) and can
spread anchors over a Dask cluster.  ``sample_anchors`` draws anchors as the paper does: at random among the
correctly classified test points, with a recorded seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..attacks import AttackResult, bisection_pgd_attack, min_distance_attack
from ..distance import boundary_distance
from ..estimate import certified_radius, verified_upper_bound
from ..network import ReluNetwork
from ..pruning import PruningError, prune
from .records import (AnchorRecord, DistanceRecord, PlainAttackRecord, Provenance, RecordStatus, SubstituteRecord,
                      Timings, append_record, code_commit, load_records, repair, run_metadata)

__all__ = ["ExperimentConfig", "Job", "checkpoint_dir", "sample_anchors", "select_anchors", "anchor_record", "run_anchor", "run_jobs",
           "run_experiment", "load_anchor_data"]


@dataclass(frozen=True)
class ExperimentConfig:
    """How each anchor is run.  ``gamma0`` is Algorithm 1's step share (the paper: gamma0 << gamma); it must
    lie below every gamma (checked here, never adjusted silently)."""

    methods: tuple[str, ...] = ("constant", "linear", "activation")
    gammas: tuple[float, ...] = (0.9, 0.99)
    gamma0: float = 0.25
    prune_bounds: str = "fastlin_ibp"  # the paper's B
    distance_method: str = "bisection"  # the paper's procedure: binary search over eps of problem (2)
    time_limit: float = 60.0  # per optimisation run, as in the paper's Figure 3
    total_time_limit: float | None = 600.0  # per distance computation
    tol: float = 1e-4  # bisection: absolute width of the final interval
    # bisection: below a radius that timed out, refine the proven lower bound only to within this share of
    # that radius (the interval can then close only through a counterexample; see boundary_distance)
    open_tol: float = 0.01
    domain: tuple[float, float] = (0.0, 1.0)
    threads: int = 1
    attack_seed: int = 0
    plain_attack: bool = False  # also the paper's plain PGD (bisection on eps) and substitutes built from it
    bab: float = 0.0  # bisection: seconds of branch and bound per target before its MILP (0: the plain MILP)

    def __post_init__(self):
        if not self.gammas or not all(0.0 < g < 1.0 for g in self.gammas):
            raise ValueError(f"every gamma must lie in (0, 1), got {self.gammas!r}")
        if not 0.0 < self.gamma0 < min(self.gammas):
            raise ValueError(f"gamma0 ({self.gamma0}) must lie in (0, min(gammas) = {min(self.gammas)})")
        if self.time_limit <= 0 or (self.total_time_limit is not None and self.total_time_limit <= 0):
            raise ValueError("time limits must be > 0")
        if self.bab < 0:
            raise ValueError(f"bab must be >= 0 seconds, got {self.bab}")
        if self.distance_method not in ("bisection", "direct"):
            raise ValueError(f"distance_method must be 'bisection' or 'direct', got {self.distance_method!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _distance_kwargs(config: ExperimentConfig) -> dict:
    kw = dict(method=config.distance_method, time_limit=config.time_limit, total_time_limit=config.total_time_limit,
              domain=config.domain, threads=config.threads)
    if config.distance_method == "bisection":
        kw.update(tol=config.tol, open_tol=config.open_tol)
        if config.bab > 0:  # branch and bound rules out targets faster than the screening LPs
            kw.update(bab=config.bab, screen="interval")
    return kw


class _Checkpoint:
    """The finished parts of one anchor (f, each substitute, each substitute of the plain attack), one JSON
    line each in ``<directory>/<index>.jsonl``, so that an anchor stopped half-way (a killed runner, a session
    that ends) resumes after its last finished part instead of from the start.  A part is reused only if it
    was computed with the same configuration from an attack at the same distance (the attacks are seeded and
    run again on resume).  ``directory`` None: no checkpoint."""

    def __init__(self, directory: str | os.PathLike | None, index: int, config: ExperimentConfig, commit: str | None):
        self.path = None if directory is None else Path(directory) / f"{int(index)}.jsonl"
        self.config, self.commit = json.loads(json.dumps(config.as_dict())), commit  # as it reads back
        self.parts: dict = {}
        self.reused: dict = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:  # the line a kill cut short
                    continue
                if isinstance(d, dict) and d.get("config") == self.config:
                    self.parts[(d.get("part"), d.get("d_adv"))] = d

    def get(self, part: str, d_adv: float):
        d = self.parts.get((part, float(d_adv)))
        if d is None:
            return None
        self.reused[part] = d.get("commit")
        return d["data"]

    def put(self, part: str, d_adv: float, data: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = dict(part=part, d_adv=float(d_adv), commit=self.commit, config=self.config, data=data)
        with self.path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def checkpoint_dir(results: str | os.PathLike) -> Path:
    """Where a campaign writing ``results`` keeps the finished parts of the anchors in progress."""
    results = Path(results)
    return results.with_name(results.name + ".partial")


def _substitutes(net: ReluNetwork, x0: torch.Tensor, label: int, adv: AttackResult,
                 config: ExperimentConfig, ckpt: _Checkpoint | None = None,
                 prefix: str = "") -> tuple[SubstituteRecord, ...]:
    """Every pruner and gamma from the attack result ``adv``: the substitute and its exact distance (taken
    from ``ckpt`` where an interrupted run finished it; each new one is written there)."""
    ckpt = ckpt or _Checkpoint(None, 0, config, None)
    out = []
    for method in config.methods:
        for gamma in config.gammas:
            part = f"{prefix}{method}-{gamma}"
            done = ckpt.get(part, adv.distance)
            if done is not None:
                out.append(SubstituteRecord.from_json(done))
                continue
            t0 = time.perf_counter()
            try:
                sub = prune(net, x0, label, method=method, gamma=gamma, gamma0=config.gamma0,
                            bounds=config.prune_bounds, attack=adv, domain=config.domain)
            except PruningError as exc:
                out.append(SubstituteRecord(method, gamma, error=str(exc)))
                ckpt.put(part, adv.distance, out[-1].to_json())
                continue
            prune_s = time.perf_counter() - t0  # without the attack, shared by all substitutes
            g = sub.network
            # f's counterexample is reused when it is adversarial for g too (always for `linear`, where
            # g(x_adv) = f(x_adv)); otherwise g gets its own attack.  boundary_distance re-checks it on g.
            reuse = int(g.predict(adv.x_adv.reshape((1,) + tuple(g.input_shape)))[0]) != label
            dg = boundary_distance(g, x0, label, attack=adv if reuse else True, **_distance_kwargs(config))
            f_upper = verified_upper_bound(net, x0, label, dg.counterexample)
            out.append(SubstituteRecord(method, gamma, prune_s=prune_s, relus_left=g.num_relus,
                                        pruned_per_layer=tuple(sub.pruned_per_layer), attack_reused=reuse,
                                        g=DistanceRecord.of(dg),
                                        fools_f=None if dg.counterexample is None else f_upper is not None,
                                        f_upper=f_upper))
            ckpt.put(part, adv.distance, out[-1].to_json())
    return tuple(out)


def _load_average() -> tuple[float, ...] | None:
    return tuple(os.getloadavg()) if hasattr(os, "getloadavg") else None


def anchor_record(net: ReluNetwork, x0: torch.Tensor, label: int, index: int, config: ExperimentConfig, *,
                  commit: str | None = None, checkpoint: str | os.PathLike | None = None) -> AnchorRecord:
    """One anchor: attack, exact distance of f, and every substitute's exact distance, with all runs.

    The record (see :class:`~lsub_helpers.experiments.records.AnchorRecord`) holds ``index`` (0-based test
    index), ``label``, ``status``, ``d_adv`` and the attack's time, ``f`` (status, value, lower, upper, time,
    every run), ``substitutes`` (per pruner and gamma: pruning time, ReLUs left, ``g`` like ``f``), with
    ``config.plain_attack`` a ``plain`` part with the same for the plain PGD attack, and the provenance
    (config, code commit, machine, date, versions).  f and all its substitutes run back to back in this
    call, so a load on the machine affects them alike.  ``commit`` names the code that runs (a campaign
    reads it once when it starts; default: the working tree's commit now).  ``checkpoint``: a directory
    where each finished part (f, each substitute) is written at once and from which an interrupted run's
    parts are taken (same configuration, same attack distance); the record's ``resumed`` names those parts
    and their code commits, and its ``wall_s`` then counts only this call.
    """
    x0 = torch.as_tensor(x0, dtype=torch.float64).reshape(net.input_shape)
    meta = run_metadata(commit)
    prov = Provenance(meta["commit"], meta["machine"], meta["date"], meta["versions"], config.as_dict())
    timings = Timings(load_average=_load_average())
    t_start = time.perf_counter()
    if int(net.predict(x0[None])[0]) != label:
        return AnchorRecord(int(index), int(label), RecordStatus.MISCLASSIFIED, provenance=prov, timings=timings)
    adv = min_distance_attack(net, x0, label, domain=config.domain, seed=config.attack_seed)
    timings = dataclasses.replace(timings, attack_s=adv.time_s)
    if not adv.success:
        return AnchorRecord(int(index), int(label), RecordStatus.NO_ADVERSARIAL, provenance=prov, timings=timings)
    ckpt = _Checkpoint(checkpoint, index, config, meta["commit"])
    done = ckpt.get("f", adv.distance)
    if done is not None:
        f = DistanceRecord.from_json(done)
    else:
        f = DistanceRecord.of(boundary_distance(net, x0, label, attack=adv, **_distance_kwargs(config)))
        ckpt.put("f", adv.distance, f.to_json())
    subs = _substitutes(net, x0, label, adv, config, ckpt)
    plain = None
    if config.plain_attack:
        p = bisection_pgd_attack(net, x0, label, domain=config.domain, seed=config.attack_seed)
        plain = PlainAttackRecord.of(p, _substitutes(net, x0, label, p, config, ckpt, "plain:") if p.success else ())
    # the machine's load over the anchor's last minutes, beside the start's
    timings = dataclasses.replace(timings, wall_s=time.perf_counter() - t_start, load_average_end=_load_average())
    return AnchorRecord(int(index), int(label), RecordStatus.OK, provenance=prov, timings=timings,
                        d_adv=float(adv.distance), f=f, substitutes=subs, plain=plain,
                        resumed=dict(ckpt.reused) or None)


def run_anchor(net: ReluNetwork, x0: torch.Tensor, label: int, index: int, config: ExperimentConfig, *,
               commit: str | None = None) -> dict:
    """:func:`anchor_record` as the JSON object a results file holds: ``index``, ``label``, ``status`` (a
    :class:`RecordStatus` value), ``d_adv``, ``attack_s``, ``f``, ``substitutes``, ``plain``, ``config``,
    ``commit``, ``machine``, ``date``, ``versions``, ``schema`` and the timings."""
    return anchor_record(net, x0, label, index, config, commit=commit).to_json()


def sample_anchors(net: ReluNetwork, xs: torch.Tensor, ys: torch.Tensor, n: int, *, seed: int = 0,
                   indices: Sequence[int] | None = None) -> list[int]:
    """``n`` anchors drawn at random (``seed``) among the correctly classified points: the paper's protocol.

    The points are visited in the order of one random permutation of ``indices`` (default: all of them)
    and the first ``n`` correctly classified ones are returned, so a larger ``n`` with the same seed
    extends the same list (a campaign can grow without changing the anchors it has).
    """
    idx = np.arange(len(ys)) if indices is None else np.asarray(list(indices), dtype=np.int64)
    order = idx[np.random.default_rng(int(seed)).permutation(len(idx))]
    with torch.no_grad():
        pred = net.predict(xs.reshape((len(ys),) + tuple(net.input_shape)))
    correct = (pred == torch.as_tensor(ys)).numpy()
    return [int(i) for i in order if correct[i]][: int(n)]


def select_anchors(net: ReluNetwork, xs: torch.Tensor, ys: torch.Tensor, n: int, *, first: int = 0,
                   not_certified_at: float | None = None, max_d_adv: float | None = None, bounds: str = "crown",
                   domain: tuple[float, float] = (0.0, 1.0)) -> list[int]:
    """The first ``n`` indices ``>= first`` of correctly classified points, optionally filtered.

    Not the paper's protocol (see :func:`sample_anchors`): a *supplementary* selection near the boundary.
    With ``not_certified_at = r``, only points whose robustness at radius ``r`` the ``bounds`` cannot
    prove; with ``max_d_adv``, only points the attack breaks within that distance.  Both bias the sample
    towards the less robust points, which a report must say.
    """
    pred = net.predict(xs.reshape((len(ys),) + tuple(net.input_shape)))
    out: list[int] = []
    for i in range(int(first), len(ys)):
        if len(out) >= n:
            break
        if int(pred[i]) != int(ys[i]):
            continue
        x0 = xs[i].reshape(net.input_shape).to(torch.float64)
        if not_certified_at is not None:
            if certified_radius(net, x0, int(ys[i]), hi=not_certified_at, bounds=bounds, domain=domain,
                                iters=0) >= not_certified_at:
                continue
        if max_d_adv is not None:
            adv = min_distance_attack(net, x0, int(ys[i]), domain=domain)
            if not adv.success or adv.distance > max_d_adv:
                continue
        out.append(i)
    return out


def load_anchor_data(network: str, dataset: str, *, split: str = "test", data_root: str | None = None,
                     shared_root: str | None = None) -> tuple[ReluNetwork, torch.Tensor, torch.Tensor]:
    """The network ``network`` of the zoo and the points of ``dataset`` shaped for it: ``(f, xs, ys)``.

    ``data_root`` ending in ``.npz`` reads an exact CIFAR-10 test subset (``data.load_cifar10_npz``);
    otherwise ``data.load(dataset, split, root=data_root)``.
    """
    from .. import data, zoo

    f = zoo.load(network, shared_root=shared_root, data_root=data_root)
    ds = data.load_cifar10_npz(data_root) if str(data_root or "").endswith(".npz") else data.load(dataset, split, root=data_root)
    return f, ds.x.reshape((len(ds.y),) + tuple(f.input_shape)), ds.y


@dataclass(frozen=True)
class Job:
    """One network's share of a campaign: its anchors, configuration and results file."""

    net: ReluNetwork
    xs: torch.Tensor
    ys: torch.Tensor
    indices: tuple[int, ...]
    config: ExperimentConfig
    results: Path


def run_jobs(jobs: Sequence[Job], *, dask_address: str | None = None, use_dask: bool = False,
             workers: int | None = None, progress: bool = True) -> None:
    """Run every job's anchors that its results file does not hold yet, interleaved across jobs (the first
    anchor of every network, then the second, ...), so that an interrupted campaign has records of every
    network.  Records are appended by this process as anchors finish (see :func:`run_experiment`)."""
    todo = []  # (position of the anchor in its job's list, job, anchor): a resumed campaign goes on with the
    for j, job in enumerate(jobs):  # networks that have the fewest anchors, not with the first job
        job.results.parent.mkdir(parents=True, exist_ok=True)
        repair(job.results)
        done = {r["index"] for r in load_records(job.results)}
        todo += [(k, j, i) for k, i in enumerate(dict.fromkeys(int(i) for i in job.indices)) if i not in done]
    tasks = [(j, i) for _, j, i in sorted(todo)]
    from tqdm.auto import tqdm

    commit = code_commit()  # the code this process runs, even if the working tree changes meanwhile
    total = sum(len(job.indices) for job in jobs)
    bar = tqdm(total=total, initial=total - len(tasks), disable=not progress, desc="anchors")

    def write(j: int, rec: AnchorRecord) -> None:
        append_record(jobs[j].results, rec)
        (checkpoint_dir(jobs[j].results) / f"{rec.index}.jsonl").unlink(missing_ok=True)  # the anchor is done
        bar.update(1)

    if tasks and (use_dask or dask_address):
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if not dask_address:
            threads = max(job.config.threads for job in jobs)
            n = workers or max(1, (os.cpu_count() or 2) // max(1, threads))
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(dask_address or cluster)
        try:
            stamp = f"{os.getpid()}-{time.time_ns()}"
            futures, owner = [], {}
            for j, i in tasks:
                job = jobs[j]
                fut = client.submit(anchor_record, job.net, job.xs[i], int(job.ys[i]), i, job.config, commit=commit,
                                    checkpoint=str(checkpoint_dir(job.results)), pure=False,
                                    key=f"anchor-{j}-{i}-{stamp}")
                futures.append(fut)
                owner[fut.key] = j
            for fut in as_completed(futures):
                write(owner[fut.key], fut.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    else:
        for j, i in tasks:
            job = jobs[j]
            write(j, anchor_record(job.net, job.xs[i], int(job.ys[i]), i, job.config, commit=commit,
                                   checkpoint=checkpoint_dir(job.results)))
    bar.close()


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
    workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run ``run_anchor`` on ``indices`` (skipping those already in ``results``), appending each record.

    With ``use_dask`` (a ``LocalCluster`` of ``workers`` processes, one thread each; default: cores /
    threads) or ``dask_address`` (an existing scheduler), anchors run in parallel, one task each; records
    are written by this process as tasks finish, so each anchor is written once even if a worker dies and
    its task is rerun elsewhere.  A line cut by a crash is removed before anything is appended.  Each
    anchor in progress keeps its finished parts in ``checkpoint_dir(results)``, so a rerun anchor goes on after
    its last finished part.
    """
    job = Job(net, xs, ys, tuple(int(i) for i in indices), config, Path(results))
    run_jobs([job], dask_address=dask_address, use_dask=use_dask, workers=workers, progress=progress)
    return load_records(job.results)
