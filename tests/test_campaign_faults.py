"""The campaign survives what long runs meet: a Dask worker killed mid-task and the runner killed with SIGKILL.

Real processes: a scheduler and two workers started with ``dask scheduler`` / ``dask worker``, the runner
as its own process (``tests/campaign_runner.py``); every anchor must be recorded exactly once.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsub_helpers.experiments import load_anchor_data, load_records, sample_anchors

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "campaign_runner.py"
DASK = Path(sys.executable).parent / "dask"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what: str, step: float = 0.2):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _expected(n: int) -> list[int]:
    f, xs, ys = load_anchor_data("toy2d", "toy2d")
    return sample_anchors(f, xs, ys, n, seed=0)


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


@pytest.mark.skipif(not DASK.exists(), reason=f"no dask command beside {sys.executable}")
def test_dask_worker_killed_mid_task_every_anchor_once(tmp_path):
    from dask.distributed import Client

    sched_port, ports = _port(), (_port(), _port())
    address = f"tcp://127.0.0.1:{sched_port}"
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(sched_port),
                               "--no-dashboard"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    workers = {}
    try:
        for p in ports:
            w = subprocess.Popen([str(DASK), "worker", address, "--host", "127.0.0.1", "--worker-port", str(p),
                                  "--nthreads", "1", "--no-nanny", "--no-dashboard"], env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            workers[f"tcp://127.0.0.1:{p}"] = w
            procs.append(w)
        results = tmp_path / "toy.jsonl"
        n = 8
        with Client(address, timeout=60) as client:
            _wait(lambda: len(client.scheduler_info()["workers"]) == 2, 60, "two workers")
            runner = subprocess.Popen([sys.executable, str(RUNNER), str(results), str(n), address], env=ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(runner)

            def busy():  # a worker in the middle of an anchor
                for addr, keys in client.processing().items():
                    if addr in workers and any(str(k).startswith("anchor-") for k in keys):
                        return addr
                return None

            victim = _wait(busy, 120, "a worker running an anchor", step=0.05)
            in_flight = client.processing()[victim]
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(timeout=20)
            out, _ = runner.communicate(timeout=600)
        assert runner.returncode == 0, out
        assert in_flight, "the killed worker had a task"
        recs = load_records(results)
        indices = [r["index"] for r in recs]
        assert sorted(indices) == sorted(_expected(n)) and len(indices) == len(set(indices)) == n
        assert all(r["status"] == "ok" and r["f"]["status"] == "exact" for r in recs)
    finally:
        _kill(procs)


def test_runner_killed_with_sigkill_resumes_without_loss_or_duplicate(tmp_path):
    results = tmp_path / "toy.jsonl"
    n = 5
    runner = subprocess.Popen([sys.executable, str(RUNNER), str(results), str(n)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: len(load_records(results)) >= 2, 300, "two finished anchors", step=0.05)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=20)
    finally:
        _kill([runner])
    before = results.read_text().splitlines()
    assert 2 <= len(before) < n
    with results.open("a") as fh:  # what a crash in the middle of a write leaves behind
        fh.write('{"index": 123456, "status": "o')
    rerun = subprocess.run([sys.executable, str(RUNNER), str(results), str(n)], env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = results.read_text().splitlines()
    assert after[: len(before)] == before  # nothing finished before the kill is lost or rewritten
    indices = [json.loads(line)["index"] for line in after]
    assert sorted(indices) == sorted(_expected(n)) and len(indices) == n  # each anchor exactly once


def test_runner_killed_mid_anchor_resumes_after_the_last_finished_part(tmp_path):
    """SIGKILL while an anchor is half done (its f and at least one substitute finished): the restarted runner
    takes those parts from the checkpoint (the record names them in ``resumed``), computes the rest, writes
    every anchor once, and leaves no checkpoint behind."""
    from lsub_helpers.experiments import checkpoint_dir

    results = tmp_path / "toy.jsonl"
    ck = checkpoint_dir(results)
    n = 3

    def half_done():
        for p in ck.glob("*.jsonl") if ck.is_dir() else ():
            if len(p.read_text().splitlines()) >= 2:
                return p
        return None

    runner = subprocess.Popen([sys.executable, str(RUNNER), str(results), str(n)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(half_done, 300, "an anchor with two finished parts", step=0.01)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=20)
    finally:
        _kill([runner])
    partial = {int(p.stem): [json.loads(x)["part"] for x in p.read_text().splitlines() if x.endswith("}")]
               for p in ck.glob("*.jsonl")}
    done = {json.loads(x)["index"] for x in results.read_text().splitlines()} if results.exists() else set()
    killed = {i: parts for i, parts in partial.items() if i not in done and len(parts) >= 2}
    assert killed, (partial, done)  # the kill came in the middle of an anchor
    rerun = subprocess.run([sys.executable, str(RUNNER), str(results), str(n)], env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    recs = {json.loads(x)["index"]: json.loads(x) for x in results.read_text().splitlines()}
    assert sorted(recs) == sorted(_expected(n)) and len(results.read_text().splitlines()) == n
    for i, parts in killed.items():
        assert set(recs[i]["resumed"]) == set(parts)  # every finished part taken over, nothing else
        assert recs[i]["status"] == "ok" and len(recs[i]["substitutes"]) == 4
    assert not list(ck.glob("*.jsonl"))  # finished anchors leave no checkpoint
