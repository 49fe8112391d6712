"""Run a whole VNN-COMP benchmark folder: ``python -m lsub_helpers vnncomp-suite BENCHMARK_DIR --out results.csv``.

The folder holds ``instances.csv`` (rows ``onnx,vnnlib,timeout`` relative to the folder; a header line and
extra columns are allowed) and the files it names, ``.gz`` compressed or not, as VNN-COMP publishes them.
Every instance runs as its own process (``python -m lsub_helpers vnncomp ONNX VNNLIB RESULT TIMEOUT``, the
competition's interface) under a Dask scheduler: a ``LocalCluster`` by default, or an existing one by
address.  A process still running ``grace`` seconds after its timeout is killed, and any answer that comes
after the timeout counts as ``timeout``.

``results.csv`` is written in the competition's format (the six columns VNN-COMP's ``run_single_instance.sh``
appends since 2022), one line per instance, appended and flushed as each instance finishes:
``category,onnx,vnnlib,prepare_time,result,run_time``; a process killed at its timeout is written as
``timeout`` (the competition's harness writes ``run_instance_timeout``).  A run that was interrupted
resumes: instances that already have a line are not run again.  The answer files (with the counterexample
after ``sat``) are kept in ``<out stem>_results/``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .vnnlib import VnnVerdict

__all__ = ["Instance", "SuiteOptions", "InstanceOutcome", "Answer", "read_instances", "run_instance", "run_suite",
           "completed"]

ROOT = Path(__file__).resolve().parents[1]


Answer = VnnVerdict  # what an instance ended with, as written in the results file


@dataclass(frozen=True)
class Instance:
    onnx: str  # as written in instances.csv (relative to the benchmark folder)
    vnnlib: str
    timeout: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.onnx, self.vnnlib)

    @property
    def name(self) -> str:
        """``<onnx stem>__<vnnlib stem>`` (``.gz``, ``.onnx`` and ``.vnnlib`` removed; ``prop_0_0.03`` kept)."""
        return f"{_stem(self.onnx)}__{_stem(self.vnnlib)}"


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".onnx", ".vnnlib"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


@dataclass(frozen=True)
class SuiteOptions:
    """How each instance is run (the same for every instance of a suite)."""

    bounds: str = "crown"
    threads: int = 1
    tighten_lp: float = 0.0
    bab: float = 0.0  # seconds of branch and bound per disjunct before its MILP (0: the MILP alone)
    grace: float = 10.0  # seconds after the timeout before the process is killed
    max_timeout: float | None = None  # cap on the per-instance timeout (None: the benchmark's own)


@dataclass(frozen=True)
class InstanceOutcome:
    category: str
    instance: Instance
    prepare_time: float
    answer: Answer
    run_time: float

    def csv_row(self) -> list[str]:
        return [self.category, self.instance.onnx, self.instance.vnnlib, f"{self.prepare_time:.3f}",
                self.answer.value, f"{self.run_time:.3f}"]


def read_instances(bench_dir: str | Path) -> list[Instance]:
    """The rows of ``instances.csv`` (a first line whose third field is not a number is a header)."""
    path = Path(bench_dir) / "instances.csv"
    out = []
    with open(path, newline="") as f:
        for k, row in enumerate(csv.reader(f)):
            row = [c.strip() for c in row]
            if not row or not any(row):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}, line {k + 1}: expected onnx,vnnlib,timeout, got {row}")
            try:
                timeout = float(row[2])
            except ValueError:
                if k == 0:
                    continue  # header
                raise ValueError(f"{path}, line {k + 1}: timeout {row[2]!r} is not a number") from None
            out.append(Instance(row[0], row[1], timeout))
    return out


def completed(out_csv: str | Path) -> dict[tuple[str, str], list[str]]:
    """Instances that already have a line in ``out_csv`` (a cut last line is ignored)."""
    out_csv = Path(out_csv)
    if not out_csv.exists():
        return {}
    done = {}
    with open(out_csv, newline="") as f:
        for row in csv.reader(f):
            if len(row) == 6 and row[4] in {a.value for a in Answer}:
                done[(row[1], row[2])] = row
    return done


def _python() -> list[str]:
    return [sys.executable, "-m", "lsub_helpers"]


def run_instance(bench_dir: str | Path, inst: Instance, result_file: str | Path, options: SuiteOptions,
                 category: str) -> InstanceOutcome:
    """Run one instance in a child process within its timeout (plus ``options.grace``, then killed)."""
    bench_dir = Path(bench_dir)
    t0 = time.perf_counter()
    onnx, vnnlib = bench_dir / inst.onnx, bench_dir / inst.vnnlib
    prepared = onnx.exists() and vnnlib.exists()
    prepare_time = time.perf_counter() - t0
    if not prepared:
        return InstanceOutcome(category, inst, prepare_time, Answer.ERROR, 0.0)
    timeout = inst.timeout if options.max_timeout is None else min(inst.timeout, options.max_timeout)
    result_file = Path(result_file)
    result_file.unlink(missing_ok=True)
    cmd = _python() + ["vnncomp", str(onnx), str(vnnlib), str(result_file), repr(float(timeout)),
                       "--bounds", options.bounds, "--threads", str(options.threads),
                       "--tighten-lp", repr(float(options.tighten_lp)), "--bab", repr(float(options.bab))]
    env = dict(os.environ, OMP_NUM_THREADS=str(options.threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    log = result_file.with_suffix(".log")
    t1 = time.perf_counter()
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=timeout + options.grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    run_time = time.perf_counter() - t1
    answer = Answer.ERROR
    if run_time > timeout:
        answer = Answer.TIMEOUT  # an answer after the time limit is a timeout, never a value
    elif result_file.exists():
        first = (result_file.read_text().splitlines() or [""])[0].strip()
        answer = Answer(first) if first in {a.value for a in Answer} else Answer.ERROR
    return InstanceOutcome(category, inst, prepare_time, answer, run_time)


def run_suite(bench_dir: str | Path, out_csv: str | Path, *, options: SuiteOptions = SuiteOptions(),
              scheduler: str | None = None, workers: int | None = None, category: str | None = None,
              progress: bool = True) -> list[InstanceOutcome]:
    """Run every instance of ``bench_dir`` not yet in ``out_csv`` on Dask; append a line per instance."""
    from distributed import Client, LocalCluster, as_completed

    bench_dir = Path(bench_dir).resolve()
    out_csv = Path(out_csv).resolve()
    category = category or bench_dir.name
    instances = read_instances(bench_dir)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    _drop_cut_line(out_csv)  # before reading what is done: a cut line may look complete ("...,unsat,1")
    done = completed(out_csv)
    todo = [i for i in instances if i.key not in done]
    res_dir = out_csv.parent / f"{out_csv.stem}_results"
    res_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"{category}: {len(instances)} instances, {len(instances) - len(todo)} already in {out_csv.name}, "
        f"{len(todo)} to run")
    if not todo:
        return []
    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        n = workers or max(1, (os.cpu_count() or 1) // max(1, options.threads))
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=False, dashboard_address=":0")
        client = Client(cluster)
    outcomes = []
    counts: dict[str, int] = {}
    try:
        futures = [client.submit(run_instance, str(bench_dir), inst, str(res_dir / f"{inst.name}.txt"), options,
                                 category, pure=False, key=f"vnncomp-{k}-{inst.name}")
                   for k, inst in enumerate(todo)]
        with open(out_csv, "a", newline="") as f:
            writer = csv.writer(f)
            for k, fut in enumerate(as_completed(futures), 1):
                o = fut.result()
                writer.writerow(o.csv_row())
                f.flush()
                os.fsync(f.fileno())
                outcomes.append(o)
                counts[o.answer.value] = counts.get(o.answer.value, 0) + 1
                tally = ", ".join(f"{v} {a}" for a, v in sorted(counts.items()))
                say(f"[{k}/{len(todo)}] {o.instance.name}: {o.answer.value} in {o.run_time:.1f} s  ({tally})")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return outcomes


def _drop_cut_line(out_csv: Path) -> None:
    """Remove a last line cut by a kill (no newline at its end), so that appending starts a new line."""
    if not out_csv.exists() or out_csv.stat().st_size == 0:
        return
    data = out_csv.read_bytes()
    if not data.endswith(b"\n"):
        out_csv.write_bytes(data[: data.rfind(b"\n") + 1])
