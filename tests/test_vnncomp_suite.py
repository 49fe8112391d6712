"""The VNN-COMP suite runner (Dask, resume after a kill, .gz files), the competition's shell interface, and
networks with a final Softmax in the ``vnncomp`` command."""

from __future__ import annotations

import csv
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lsub_helpers import bounds as B
from lsub_helpers.__main__ import main as cli_main
from lsub_helpers.network import ReluNetwork
from lsub_helpers.vnncomp_suite import Answer, Instance, completed, read_instances
from lsub_helpers.vnnlib import read_vnnlib

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 6, 6)
F64 = torch.float64


def small_net(softmax: bool = False) -> nn.Sequential:
    torch.manual_seed(5)
    layers = [nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
              nn.Linear(27, 8), nn.ReLU(), nn.Linear(8, 3)]
    if softmax:
        layers.append(nn.Softmax(dim=1))
    seq = nn.Sequential(*layers)
    bn = seq[1]
    bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
    bn.running_var.copy_(torch.tensor([0.5, 1.5, 2.0]))
    return seq.eval()


def _property(lo, hi, rows: str) -> str:
    n = lo.size
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n))
    text += "".join(f"(declare-const Y_{i} Real)\n" for i in range(3))
    text += "".join(f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))\n" for i in range(n))
    return text + rows


def make_benchmark(folder: Path) -> dict[str, str]:
    """A benchmark folder: a pooled, batch-normalised conv net (gzipped), properties whose answers are known
    by construction (sat: a sampled point reaches it; unsat: beyond an interval bound), some gzipped."""
    (folder / "onnx").mkdir(parents=True)
    (folder / "vnnlib").mkdir()
    seq = small_net()
    plain = folder / "onnx" / "pool.onnx"
    torch.onnx.export(seq, torch.rand((1,) + SHAPE), str(plain), dynamo=False, do_constant_folding=False)
    (folder / "onnx" / "pool.onnx.gz").write_bytes(gzip.compress(plain.read_bytes()))
    net = ReluNetwork.from_onnx(plain)
    rng = np.random.default_rng(0)
    expected = {}
    rows = []
    for k in range(5):
        x0 = rng.random(36)
        lo, hi = np.clip(x0 - 0.1, 0, 1), np.clip(x0 + 0.1, 0, 1)
        samples = torch.from_numpy(lo + (hi - lo) * rng.random((500, 36))).reshape((-1,) + SHAPE)
        y = net.forward(samples)
        if k % 2 == 0:  # sat
            reach = float((y[:, 1] - y[:, 0]).max())
            text, answer = _property(lo, hi, f"(assert (>= (- Y_1 Y_0) {reach!r}))\n"), "sat"
        else:  # unsat: beyond the interval bound of Y_1 - Y_0
            b = B.ibp_box(net, torch.from_numpy(lo).reshape(SHAPE), torch.from_numpy(hi).reshape(SHAPE))
            beyond = float(b.output[1][1] - b.output[0][0]) + 0.5
            text, answer = _property(lo, hi, f"(assert (>= (- Y_1 Y_0) {beyond!r}))\n"), "unsat"
        name = f"vnnlib/prop_{k}.vnnlib" + (".gz" if k % 2 else "")
        path = folder / name
        path.write_bytes(gzip.compress(text.encode()) if k % 2 else text.encode())
        onnx_name = "onnx/pool.onnx.gz" if k < 3 else "onnx/pool.onnx"
        rows.append(f"{onnx_name},{name},60\n")
        expected[name] = answer
    (folder / "instances.csv").write_text("".join(rows))
    return expected


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _ort_reaches(onnx_path: Path, result_text: str, vnnlib_path: Path) -> bool:
    lines = result_text.splitlines()
    xs = np.array([float(l.strip(" ()").split()[1]) for l in lines[1:] if "X_" in l])
    ys = np.array([float(l.strip(" ()").split()[1]) for l in lines[1:] if "Y_" in l])
    data = onnx_path.read_bytes()
    data = gzip.decompress(data) if onnx_path.suffix == ".gz" else data
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: xs.astype(np.float32).reshape((1,) + SHAPE)})[0].reshape(-1)
    (box, disj), = read_vnnlib(vnnlib_path)
    assert np.allclose(ys, y, atol=1e-5)  # the written outputs are the network's
    return bool(np.all(xs >= box[:, 0]) and np.all(xs <= box[:, 1]) and any(np.all(m @ y <= r) for m, r in disj))


def test_read_instances_with_and_without_header(tmp_path):
    (tmp_path / "instances.csv").write_text("onnx,vnnlib,timeout_s,extra\na.onnx,p_0.03.vnnlib,30,x\n\n"
                                            "b.onnx.gz,p_0.05.vnnlib.gz,12.5\n")
    got = read_instances(tmp_path)
    assert [(i.onnx, i.vnnlib, i.timeout) for i in got] == [("a.onnx", "p_0.03.vnnlib", 30.0),
                                                             ("b.onnx.gz", "p_0.05.vnnlib.gz", 12.5)]
    assert [i.name for i in got] == ["a__p_0.03", "b__p_0.05"]  # distinct answer files
    (tmp_path / "instances.csv").write_text("a.onnx,p.vnnlib,30\nb.onnx,q.vnnlib,soon\n")
    with pytest.raises(ValueError, match="not a number"):
        read_instances(tmp_path)


def test_suite_killed_and_resumed(tmp_path):
    bench = tmp_path / "pooled_bench"
    expected = make_benchmark(bench)
    out = tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "lsub_helpers", "vnncomp-suite", str(bench), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and len(completed(out)) < 1 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner, its Dask threads and its instance processes
    proc.wait()
    first = completed(out)
    assert 1 <= len(first) < len(expected), "the kill must come after the first and before the last instance"
    # resume in a second process: the finished lines stay as they are, the others are run once
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(first)} already in results.csv" in res.stderr and f"[{len(expected) - len(first)}/" in res.stderr
    rows = list(csv.reader(out.open()))
    assert len(rows) == len(expected) and len({(r[1], r[2]) for r in rows}) == len(expected)
    for row in rows:
        assert row[0] == "pooled_bench" and float(row[3]) >= 0 and float(row[5]) > 0
        assert row[4] == expected[row[2]], row
        if (row[1], row[2]) in first:
            assert first[(row[1], row[2])] == row
        if row[4] == Answer.SAT.value:
            name = Instance(row[1], row[2], 60).name + ".txt"
            text = (tmp_path / "results_results" / name).read_text()
            assert _ort_reaches(bench / row[1], text, bench / row[2])
    # a third run has nothing left to do
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 to run" in again.stderr
    assert list(csv.reader(out.open())) == rows


def test_competition_scripts(tmp_path):
    bench = tmp_path / "b"
    expected = make_benchmark(bench)
    scripts = ROOT / "vnncomp_scripts"
    env = dict(_env(), LSUB_PYTHON=sys.executable)
    bad = subprocess.run(["bash", str(scripts / "prepare_instance.sh"), "v2", "cat", "x", "y"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Expected first argument" in bad.stderr
    onnx_path, vnn = bench / "onnx" / "pool.onnx.gz", bench / "vnnlib" / "prop_0.vnnlib"
    ok = subprocess.run(["bash", str(scripts / "prepare_instance.sh"), "v1", "pooled", str(onnx_path), str(vnn)],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    result = tmp_path / "out.txt"
    run = subprocess.run(["bash", str(scripts / "run_instance.sh"), "v1", "pooled", str(onnx_path), str(vnn),
                          str(result), "60"], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    text = result.read_text()
    assert text.splitlines()[0] == expected["vnnlib/prop_0.vnnlib"] == "sat"
    assert _ort_reaches(onnx_path, text, vnn)


def test_vnncomp_with_a_final_softmax(tmp_path):
    seq = small_net(softmax=True)
    path = tmp_path / "soft.onnx"
    torch.onnx.export(seq, torch.rand((1,) + SHAPE), str(path), dynamo=False)
    x0 = np.full(36, 0.5)
    lo, hi = x0 - 0.3, x0 + 0.3
    with torch.no_grad():
        probs = seq(torch.from_numpy(lo + (hi - lo) * np.random.default_rng(1).random((300, 36))).float()
                    .reshape((-1,) + SHAPE))
    label = int(probs.mean(0).argmax())
    other = [t for t in range(3) if t != label]
    # an argmax property: the softmax is left out and the answer holds for the network with it
    arg = tmp_path / "arg.vnnlib"
    arg.write_text(_property(lo, hi, "(assert (or " + " ".join(f"(and (>= Y_{t} Y_{label}))" for t in other) + "))\n"))
    res = tmp_path / "arg.txt"
    assert cli_main(["vnncomp", str(path), str(arg), str(res), "60"]) == 0
    answer = res.read_text().splitlines()[0]
    assert answer in ("sat", "unsat")
    if answer == "sat":
        assert _ort_reaches(path, res.read_text(), arg)
    else:  # no sampled point may contradict a proof
        assert (probs.argmax(1) == label).all()
    # a threshold on a probability is a property on raw output values: refused, not answered
    thr = tmp_path / "thr.vnnlib"
    thr.write_text(_property(lo, hi, f"(assert (>= Y_{label} 0.9))\n"))
    res2 = tmp_path / "thr.txt"
    assert cli_main(["vnncomp", str(thr.parent / "soft.onnx"), str(thr), str(res2), "60"]) == 2
    assert res2.read_text().strip() == "error"


def test_a_line_cut_by_a_kill_is_run_again(tmp_path):
    from lsub_helpers.vnncomp_suite import _drop_cut_line

    out = tmp_path / "r.csv"
    out.write_text("b,n.onnx,p.vnnlib,0.001,sat,1.500\nb,n.onnx,q.vnnlib,0.001,unsat,1")  # no final newline
    assert len(completed(out)) == 2  # the cut line looks complete ...
    _drop_cut_line(out)
    assert list(completed(out)) == [("n.onnx", "p.vnnlib")]  # ... so it is dropped before resuming
    assert out.read_text().endswith("\n")


def test_suite_on_an_existing_scheduler(tmp_path):
    from distributed import LocalCluster

    from lsub_helpers.vnncomp_suite import SuiteOptions, run_suite

    bench = tmp_path / "b"
    expected = make_benchmark(bench)
    lines = (bench / "instances.csv").read_text().splitlines()[:2]
    (bench / "instances.csv").write_text("\n".join(lines) + "\n")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        outcomes = run_suite(bench, tmp_path / "r.csv", options=SuiteOptions(grace=5), scheduler=cluster.scheduler_address,
                             progress=False)
    assert sorted(o.instance.vnnlib for o in outcomes) == sorted(l.split(",")[1] for l in lines)
    for o in outcomes:
        assert o.answer.value == expected[o.instance.vnnlib]
