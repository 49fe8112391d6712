"""Experiment records: one JSON line per finished anchor, written durably and read back after a crash.

A record is one :class:`AnchorRecord` (its parts: :class:`DistanceRecord` for f and for each substitute g,
with a :class:`RunRecord` per optimisation run and a :class:`StepRecord` per bisection step;
:class:`SubstituteRecord`, :class:`PlainAttackRecord`, :class:`Timings`, :class:`Provenance`), written by
``to_json`` and read by ``from_json``, which checks the schema version (:class:`SchemaError` for one this
code does not know).  Schema 1 records (no provenance, no ``schema`` field) still load.  Files are
append-only: :func:`append_record` writes one line and syncs it to disk, :func:`load_records` reads
every complete line, and :func:`repair` cuts a line left half-written by a crash before anything is
appended after it, so a resumed run neither loses nor duplicates a finished anchor.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..distance import DistanceResult, DistanceStatus, OptimizationRun
from ..milp import SolverStatus, VerificationStatus

__all__ = ["SCHEMA_VERSION", "KNOWN_SCHEMAS", "SchemaError", "RecordStatus", "AnchorRecord", "DistanceRecord",
           "RunRecord", "StepRecord", "SubstituteRecord", "PlainAttackRecord", "Timings", "Provenance", "as_records",
           "read_records", "load_records", "append_record", "repair", "run_metadata", "code_commit"]

SCHEMA_VERSION = 2  # 2: config, code commit, machine and date in every record; anchors drawn at random


class RecordStatus(enum.Enum):
    """What happened at one anchor (the ``status`` field of a record)."""

    OK = "ok"  # attacked successfully; f and the substitutes have distance results
    MISCLASSIFIED = "misclassified"  # the anchor is not classified as its label (never drawn by sample_anchors)
    NO_ADVERSARIAL = "no_adversarial"  # the attack found no adversarial point in the domain


def load_records(path: str | os.PathLike) -> list[dict]:
    """Every complete line of ``path`` as a JSON object (``[]`` if it does not exist); reading stops at a cut
    line.  :func:`read_records` gives them as typed :class:`AnchorRecord`."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything before it is intact
    return out


def repair(path: str | os.PathLike) -> int:
    """Truncate ``path`` after its last complete record; returns the number of bytes cut (0 if none)."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                break
        keep += len(line)
    if keep < len(data):
        with path.open("r+b") as fh:
            fh.truncate(keep)
    return len(data) - keep


def append_record(path: str | os.PathLike, record: "AnchorRecord | dict") -> None:
    """Append one record (an :class:`AnchorRecord` or any JSON object) as one line and sync it to disk
    before returning."""
    if isinstance(record, AnchorRecord):
        record = record.to_json()
    with Path(path).open("a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def code_commit() -> str | None:
    """The git commit of this package's code (``+dirty`` with uncommitted changes), None outside git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--",
                                str(here.parent)], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty else "")


def run_metadata(commit: str | None = None) -> dict:
    """Where and with what a record was computed: code commit (``commit``, else :func:`code_commit` now),
    machine, date and library versions."""
    import torch
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return dict(
        schema=SCHEMA_VERSION,
        commit=commit if commit is not None else code_commit(),
        machine=dict(node=platform.node(), system=platform.platform(), cpus=os.cpu_count(),
                     processor=platform.processor() or platform.machine()),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # 1, 5, 15 min, at the start
        versions=dict(python=platform.python_version(), torch=torch.__version__, highspy=ver("highspy"),
                      pyomo=ver("pyomo")),
    )


# ---------------------------------------------------------------------------------------------------
# Typed records: what one JSON line holds, read and written in one place
# ---------------------------------------------------------------------------------------------------

KNOWN_SCHEMAS = (1, 2)  # 1: no provenance (no `schema` field at all); 2: SCHEMA_VERSION


class SchemaError(ValueError):
    """A record this code cannot read: an unknown schema version or fields that its schema does not have."""


def _finite(v: float | None) -> float | None:
    """JSON has no infinity: an infinite (or missing) number is written as null."""
    return None if v is None or not math.isfinite(v) else float(v)


def _fields(kind: str, d: Mapping, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    if not isinstance(d, Mapping):
        raise SchemaError(f"{kind}: expected a JSON object, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    unknown = sorted(set(d) - set(required) - set(optional))
    if missing or unknown:
        raise SchemaError(f"{kind}: " + "; ".join(
            ([f"missing fields {missing}"] if missing else []) + ([f"unknown fields {unknown}"] if unknown else [])))


def _enum(cls: type[enum.Enum], value, kind: str):
    try:
        return cls(value)
    except ValueError:
        raise SchemaError(f"{kind}: {value!r} is not one of {[m.value for m in cls]}") from None


def _tuple(v) -> tuple | None:
    return None if v is None else tuple(v)


@dataclass(frozen=True)
class RunRecord:
    """One optimisation run (one MILP) of a distance computation: the unit of the paper's runtime columns."""

    eps: float
    target: int | None
    status: VerificationStatus  # what the run showed
    solver_status: SolverStatus
    time_s: float  # solver
    build_time_s: float  # model assembly
    binaries: int

    @classmethod
    def of(cls, r: OptimizationRun) -> "RunRecord":
        return cls(r.eps, r.target, r.verdict, r.solver_status, r.time_s, r.build_time_s, r.num_binaries)

    def to_json(self) -> dict:
        return dict(eps=self.eps, target=self.target, status=self.status.value,
                    solver_status=self.solver_status.value, time_s=self.time_s, build_time_s=self.build_time_s,
                    binaries=self.binaries)

    @classmethod
    def from_json(cls, d: Mapping) -> "RunRecord":
        _fields("run", d, ("eps", "target", "status", "solver_status", "time_s", "build_time_s", "binaries"), ())
        return cls(d["eps"], d["target"], _enum(VerificationStatus, d["status"], "run status"),
                   _enum(SolverStatus, d["solver_status"], "run solver_status"), d["time_s"], d["build_time_s"],
                   d["binaries"])

    @property
    def decided(self) -> bool:
        """Finished within its limit with a verdict (the runs Figure 3 plots)."""
        return self.status in (VerificationStatus.ROBUST, VerificationStatus.NOT_ROBUST)


@dataclass(frozen=True)
class StepRecord:
    """One eps of a bisection: its verdict and how many MILPs it took (0: the bounds decided it)."""

    eps: float
    status: VerificationStatus
    milp_runs: int
    time_s: float

    @property
    def decided(self) -> bool:
        """Decided within its limit (a step is a run of Figure 3 where branch and bound ran before the MILP)."""
        return self.status in (VerificationStatus.ROBUST, VerificationStatus.NOT_ROBUST)

    def to_json(self) -> dict:
        return dict(eps=self.eps, status=self.status.value, milp_runs=self.milp_runs, time_s=self.time_s)

    @classmethod
    def from_json(cls, d: Mapping) -> "StepRecord":
        _fields("step", d, ("eps", "status", "milp_runs", "time_s"), ())
        return cls(d["eps"], _enum(VerificationStatus, d["status"], "step status"), d["milp_runs"], d["time_s"])


@dataclass(frozen=True)
class DistanceRecord:
    """The exact distance of one network (f or a substitute g) at one anchor, with all its runs.

    ``value`` is set only when ``status`` is EXACT (None there: no adversarial point in the domain at all);
    ``lower`` / ``upper`` are the proven interval (None for 0 / infinity as written by older records).
    """

    status: DistanceStatus
    value: float | None
    lower: float | None
    upper: float | None
    time_s: float  # the whole distance computation, the attack excluded
    attack_s: float
    runs: tuple[RunRecord, ...]
    unstable: tuple[int, ...] | None = None  # direct: unstable neurons per layer on the d_adv ball
    steps: tuple[StepRecord, ...] = ()  # bisection: every eps decided, MILP or not

    @classmethod
    def of(cls, d: DistanceResult) -> "DistanceRecord":
        return cls(d.status, _finite(d.value), _finite(d.lower), _finite(d.upper), d.time_s, d.attack_time_s,
                   tuple(RunRecord.of(r) for r in d.runs), tuple(d.unstable) if d.unstable else None,
                   tuple(StepRecord(st.eps, st.status, st.milp_runs, st.time_s) for st in d.steps))

    @property
    def exact(self) -> bool:
        return self.status is DistanceStatus.EXACT

    def to_json(self) -> dict:
        return dict(status=self.status.value, value=self.value, lower=self.lower, upper=self.upper,
                    time_s=self.time_s, attack_s=self.attack_s, runs=[r.to_json() for r in self.runs],
                    unstable=None if self.unstable is None else list(self.unstable),
                    steps=[s.to_json() for s in self.steps])

    @classmethod
    def from_json(cls, d: Mapping) -> "DistanceRecord":
        _fields("distance", d, ("status", "value", "lower", "upper", "time_s", "attack_s", "runs"),
                ("unstable", "steps"))
        return cls(_enum(DistanceStatus, d["status"], "distance status"), d["value"], d["lower"], d["upper"],
                   d["time_s"], d["attack_s"],
                   tuple(RunRecord.from_json(r) for r in d["runs"]), _tuple(d.get("unstable")),
                   tuple(StepRecord.from_json(s) for s in d.get("steps", ())))


@dataclass(frozen=True)
class SubstituteRecord:
    """One pruner and gamma at one anchor: the substitute g and its exact distance, or why pruning failed."""

    method: str  # the pruner
    gamma: float
    prune_s: float | None = None  # pruning alone (the attack is shared by all substitutes)
    relus_left: int | None = None
    pruned_per_layer: tuple[int, ...] | None = None
    attack_reused: bool | None = None  # f's adversarial point was adversarial for g too
    g: DistanceRecord | None = None  # None: pruning failed (see ``error``)
    error: str | None = None
    # g's closest point re-checked on f (float64): ``fools_f`` whether f misclassifies it too (None: no
    # point, or a record from before these fields), and then ``f_upper``, its distance: a proven upper bound
    # on d_bnd(f), below d_adv when the substitute found a closer adversarial point than the attack
    fools_f: bool | None = None
    f_upper: float | None = None

    _KEYS = ("prune_s", "relus_left", "pruned_per_layer", "attack_reused", "g", "error", "fools_f", "f_upper")

    def to_json(self) -> dict:
        out: dict = dict(method=self.method, gamma=self.gamma)
        for k in self._KEYS:
            v = getattr(self, k)
            if v is not None:
                out[k] = v.to_json() if k == "g" else list(v) if k == "pruned_per_layer" else v
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> "SubstituteRecord":
        _fields("substitute", d, ("method", "gamma"), cls._KEYS)
        g = d.get("g")
        return cls(d["method"], d["gamma"], d.get("prune_s"), d.get("relus_left"), _tuple(d.get("pruned_per_layer")),
                   d.get("attack_reused"), None if g is None else DistanceRecord.from_json(g), d.get("error"),
                   d.get("fools_f"), d.get("f_upper"))


@dataclass(frozen=True)
class PlainAttackRecord:
    """The paper's plain PGD attack at the same anchor and the substitutes built from its point."""

    d_adv: float | None  # None: the plain attack failed
    attack_s: float
    substitutes: tuple[SubstituteRecord, ...] = ()

    @classmethod
    def of(cls, attack, substitutes=()) -> "PlainAttackRecord":
        """From the plain attack's ``AttackResult`` and the substitutes built from its point."""
        return cls(_finite(attack.distance), attack.time_s, tuple(substitutes))

    def to_json(self) -> dict:
        return dict(d_adv=self.d_adv, attack_s=self.attack_s, substitutes=[s.to_json() for s in self.substitutes])

    @classmethod
    def from_json(cls, d: Mapping) -> "PlainAttackRecord":
        _fields("plain", d, ("d_adv", "attack_s"), ("substitutes",))
        return cls(d["d_adv"], d["attack_s"], tuple(SubstituteRecord.from_json(s) for s in d.get("substitutes", ())))


@dataclass(frozen=True)
class Timings:
    """How long the anchor took, and how loaded the machine was while it ran."""

    attack_s: float | None = None  # the (strong) attack; None for a misclassified anchor
    wall_s: float | None = None  # the whole anchor (written for anchors that were attacked successfully)
    load_average: tuple[float, ...] | None = None  # 1, 5, 15 min at the start (schema 2)
    load_average_end: tuple[float, ...] | None = None  # the same at the end


@dataclass(frozen=True)
class Provenance:
    """Where and with what a record was computed (schema 2; see :func:`run_metadata`)."""

    commit: str | None
    machine: Mapping | None
    date: str | None
    versions: Mapping | None
    config: Mapping | None  # the ExperimentConfig as a dict


_PROVENANCE_KEYS = ("commit", "machine", "date", "versions", "config")


@dataclass(frozen=True)
class AnchorRecord:
    """One anchor of an experiment: one JSON line of a results file.

    ``f`` and ``substitutes`` are set when ``status`` is OK; ``d_adv`` when the attack succeeded.  Records of
    schema 1 carry no provenance (``provenance`` None).  ``to_json`` writes what ``from_json`` reads, and
    reading then writing a record gives it back unchanged.
    """

    index: int
    label: int
    status: RecordStatus
    schema: int = SCHEMA_VERSION
    provenance: Provenance | None = None
    timings: Timings = Timings()
    d_adv: float | None = None
    f: DistanceRecord | None = None
    substitutes: tuple[SubstituteRecord, ...] = ()
    plain: PlainAttackRecord | None = None
    resumed: Mapping | None = None  # parts taken from an interrupted run's checkpoint: part -> its code commit

    @property
    def ok(self) -> bool:
        return self.status is RecordStatus.OK

    def to_json(self) -> dict:
        out: dict = dict(index=self.index, label=self.label)
        if self.schema >= 2:
            p, t = self.provenance or Provenance(None, None, None, None, None), self.timings
            out.update(schema=self.schema, commit=p.commit, machine=p.machine, date=p.date)
            if t.load_average is not None:  # the first records of schema 2 have none
                out["load_average"] = list(t.load_average)
            out.update(versions=p.versions, config=p.config)
        out["status"] = self.status.value
        if self.timings.attack_s is not None:
            out["attack_s"] = self.timings.attack_s
        if self.d_adv is not None:
            out["d_adv"] = self.d_adv
        if self.f is not None:
            out["f"] = self.f.to_json()
            out["substitutes"] = [s.to_json() for s in self.substitutes]
        if self.plain is not None:
            out["plain"] = self.plain.to_json()
        if self.timings.wall_s is not None:
            out["wall_s"] = self.timings.wall_s
        if self.timings.load_average_end is not None:
            out["load_average_end"] = list(self.timings.load_average_end)
        if self.resumed is not None:
            out["resumed"] = dict(self.resumed)
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> "AnchorRecord":
        """The record of one JSON object; :class:`SchemaError` for a schema this code does not know."""
        if not isinstance(d, Mapping):
            raise SchemaError(f"record: expected a JSON object, got {type(d).__name__}")
        schema = d.get("schema", 1)
        if type(schema) is not int or schema not in KNOWN_SCHEMAS:
            raise SchemaError(f"record of anchor {d.get('index')!r} has schema version {schema!r}; this code reads "
                              f"versions {list(KNOWN_SCHEMAS)} (a newer lsub_helpers wrote it?)")
        base = ("index", "label", "status")
        later = ("load_average", "attack_s", "d_adv", "f", "substitutes", "plain", "wall_s", "load_average_end",
                 "resumed")
        if schema >= 2:
            _fields("record", d, base + ("schema",) + _PROVENANCE_KEYS, later)
            prov = Provenance(d["commit"], d["machine"], d["date"], d["versions"], d["config"])
        else:
            _fields("record", d, base, later)
            prov = None
        f, plain = d.get("f"), d.get("plain")
        return cls(
            index=d["index"], label=d["label"], status=_enum(RecordStatus, d["status"], "record status"),
            schema=schema, provenance=prov,
            timings=Timings(d.get("attack_s"), d.get("wall_s"), _tuple(d.get("load_average")),
                            _tuple(d.get("load_average_end"))),
            d_adv=d.get("d_adv"), f=None if f is None else DistanceRecord.from_json(f),
            substitutes=tuple(SubstituteRecord.from_json(s) for s in d.get("substitutes", ())),
            plain=None if plain is None else PlainAttackRecord.from_json(plain), resumed=d.get("resumed"))


def as_records(records: Iterable[AnchorRecord | Mapping]) -> list[AnchorRecord]:
    """Typed records from typed ones or from JSON objects (as :func:`load_records` returns them)."""
    return [r if isinstance(r, AnchorRecord) else AnchorRecord.from_json(r) for r in records]


def read_records(path: str | os.PathLike) -> list[AnchorRecord]:
    """Every complete record of ``path`` as :class:`AnchorRecord` (``[]`` if the file does not exist)."""
    return as_records(load_records(path))
