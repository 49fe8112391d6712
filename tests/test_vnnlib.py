"""VNN-LIB reader, VNN-COMP output format, and a quick subset of VNN-COMP 2022 mnist_fc."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lsub_helpers.__main__ import main as cli_main
from lsub_helpers.network import ReluNetwork
from lsub_helpers.vnnlib import VnnlibError, format_counterexample, read_vnnlib, verify_vnnlib, write_result

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("LSUB_SHARED", ROOT.parent / "shared")) / "data" / "vnncomp" / "mnist_fc_2022"

PROP = """
; a comment
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.5))
(assert (>= X_0 -0.5))
(assert (<= X_1 1))
(assert (>= X_1 0))
(assert (or
    (and (>= Y_0 Y_2))
    (and (>= Y_1 Y_2) (<= Y_1 3.0))
))
"""


def test_read_box_and_disjunction():
    (box, disj), = read_vnnlib(PROP)
    np.testing.assert_array_equal(box, [[-0.5, 0.5], [0.0, 1.0]])
    assert len(disj) == 2
    m0, r0 = disj[0]
    np.testing.assert_array_equal(m0, [[-1.0, 0.0, 1.0]])  # Y_2 - Y_0 <= 0
    np.testing.assert_array_equal(r0, [0.0])
    m1, r1 = disj[1]
    np.testing.assert_array_equal(m1, [[0.0, -1.0, 1.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(r1, [0.0, 3.0])


def test_read_input_disjunction_linear_terms_and_errors():
    text = """(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
    (assert (or (and (>= X_0 0) (<= X_0 1) (<= (+ Y_0 (* 2 Y_1)) 1))
                (and (>= X_0 2) (<= X_0 3) (>= (- Y_0 Y_1) 0.5))))"""
    prop = read_vnnlib(text)
    assert len(prop) == 2
    (b0, d0), (b1, d1) = prop
    np.testing.assert_array_equal(b0, [[0, 1]])
    np.testing.assert_array_equal(d0[0][0], [[1.0, 2.0]])
    np.testing.assert_array_equal(d0[0][1], [1.0])
    np.testing.assert_array_equal(b1, [[2, 3]])
    np.testing.assert_array_equal(d1[0][0], [[-1.0, 1.0]])
    np.testing.assert_array_equal(d1[0][1], [-0.5])
    with pytest.raises(VnnlibError):
        read_vnnlib("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= (+ X_0 Y_0) 1))")
    with pytest.raises(VnnlibError):
        read_vnnlib("(declare-const X_0 Real)(assert (<= X_0 1)")
    with pytest.raises(VnnlibError):
        read_vnnlib("(declare-const X_1 Real)(declare-const Y_0 Real)(assert (<= Y_0 1))")


def test_verify_small_property_and_format(tmp_path):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    net = ReluNetwork.from_torch(seq, (2,))
    prop = read_vnnlib(PROP)
    res = verify_vnnlib(net, prop, time_limit=30)
    g = torch.cartesian_prod(torch.linspace(-0.5, 0.5, 201, dtype=torch.float64),
                             torch.linspace(0, 1, 201, dtype=torch.float64))
    y = net.forward(g)
    grid_sat = bool(((y[:, 0] >= y[:, 2]) | ((y[:, 1] >= y[:, 2]) & (y[:, 1] <= 3))).any())
    if grid_sat:
        assert res.result == "sat"
    assert res.result in ("sat", "unsat")
    if res.result == "sat":
        yy = net.forward(torch.from_numpy(res.x)[None])[0]
        assert bool(yy[0] >= yy[2]) or bool((yy[1] >= yy[2]) & (yy[1] <= 3))
        write_result(tmp_path / "r.txt", "sat", res.x, res.y)
        text = (tmp_path / "r.txt").read_text()
        assert text.startswith("sat\n((X_0 ") and "(Y_2 " in text and text.rstrip().endswith("))")
    assert format_counterexample(np.array([0.5, -0.0]), np.array([1.0])) == "((X_0 0.5)\n (X_1 0.0)\n (Y_0 1.0))"


needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason="shared VNN-COMP data not available")


def _truth():
    with open(BENCH / "ground_truth.csv") as f:
        return {row["vnnlib"]: row["consensus_result"] for row in csv.DictReader(f) if "256x2" in row["onnx"]}


@needs_bench
@pytest.mark.parametrize("prop", ["prop_0_0.03", "prop_2_0.03", "prop_3_0.03"])
def test_vnncomp_quick_subset(prop, tmp_path):
    onnx = BENCH / "onnx" / "mnist-net_256x2.onnx"
    vnn = BENCH / "vnnlib" / f"{prop}.vnnlib"
    out = tmp_path / "result.txt"
    assert cli_main(["vnncomp", str(onnx), str(vnn), str(out), "60"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == _truth()[f"vnnlib/{prop}.vnnlib"]
    if lines[0] == "sat":  # the counterexample reaches the unsafe set in onnxruntime (float32)
        ort = pytest.importorskip("onnxruntime")
        xs = np.array([float(l.strip(" ()").split()[1]) for l in lines[1:] if "X_" in l])
        sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        y = sess.run(None, {inp.name: xs.astype(np.float32).reshape([1, 784, 1])})[0].reshape(-1)
        (box, disj), = read_vnnlib(vnn)
        assert np.all(xs >= box[:, 0]) and np.all(xs <= box[:, 1])
        assert any(np.all(m @ y <= r) for m, r in disj)
