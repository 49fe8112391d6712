"""Experiment records: one JSON line per finished anchor, written durably and read back after a crash.

A record is a JSON object (see :func:`lsub_helpers.experiments.runner.run_anchor` for its fields).  Files
are append-only: :func:`append_record` writes one line and syncs it to disk, :func:`load_records` reads
every complete line, and :func:`repair` cuts a line left half-written by a crash before anything is
appended after it, so a resumed run neither loses nor duplicates a finished anchor.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "RecordStatus", "load_records", "append_record", "repair", "run_metadata", "code_commit"]

SCHEMA_VERSION = 2  # 2: config, code commit, machine and date in every record; anchors drawn at random


class RecordStatus(enum.Enum):
    """What happened at one anchor (the ``status`` field of a record)."""

    OK = "ok"  # attacked successfully; f and the substitutes have distance results
    MISCLASSIFIED = "misclassified"  # the anchor is not classified as its label (never drawn by sample_anchors)
    NO_ADVERSARIAL = "no_adversarial"  # the attack found no adversarial point in the domain


def load_records(path: str | os.PathLike) -> list[dict]:
    """Every complete record of ``path`` (``[]`` if it does not exist); reading stops at a cut line."""
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


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one record as one line and sync it to disk before returning."""
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
