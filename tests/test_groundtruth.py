"""The exact verifier against MIPVerify.jl's published values for WK17a CNNa (ground truth nobody here wrote).

``../shared/data/groundtruth/mipverify_reference_values.json``: 1-based MNIST test sample 9 has L-inf
distance 0.0940014207; samples 1 and 2 have no adversarial example within 0.1; sample 248 is misclassified.

The quick tests bracket sample 9's distance within 2% by two verdict-only solves; the exact value (to 1e-4
relative) takes minutes on this machine and runs only with ``LSUB_SLOW_TESTS=1`` (and in
``benchmarks/bench_milp.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lsub_helpers import data, models
from lsub_helpers.distance import DistanceStatus, boundary_distance, verify
from lsub_helpers.milp import VerificationStatus
from lsub_helpers.network import ReluNetwork

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSUB_SHARED", ROOT.parent / "shared")) / "data"
MODEL = SHARED / "models" / "cnna_mnist_wk17a_lp_eps0.1_mipverify.pt"

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="shared data (../shared/data) not available")


@pytest.fixture(scope="module")
def net():
    return ReluNetwork.from_torch(models.load_public("cnna_mnist_wk17a_lp_eps0.1_mipverify", SHARED).model, (1, 28, 28))


@pytest.fixture(scope="module")
def reference():
    return json.loads((SHARED / "groundtruth" / "mipverify_reference_values.json").read_text())["unit_test_cases_1based"]


def sample(i1: int):
    """MNIST test image ``i1`` (1-based) as float64 k/255, as MIPVerify reads it, and its label."""
    x = data.read_idx(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz")[i1 - 1]
    y = int(data.read_idx(SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz")[i1 - 1])
    return torch.tensor(x.reshape(1, 28, 28) / 255.0, dtype=torch.float64), y


@pytest.mark.parametrize("i1", [1, 2])
def test_robust_at_0_1(net, reference, i1):
    assert str(reference[str(i1)]).startswith("NaN")
    x, y = sample(i1)
    r = verify(net, x, y, 0.1, time_limit=120, threads=1)
    assert r.status is VerificationStatus.ROBUST and r.counterexample is None


def test_misclassified_sample_248(net, reference):
    assert str(reference["248"]).startswith("0")
    x, y = sample(248)
    assert int(net.forward(x[None])[0].argmax()) != y
    r = boundary_distance(net, x, y, method="direct", time_limit=60)
    assert r.status is DistanceStatus.MISCLASSIFIED and r.value == 0.0 and r.upper == 0.0
    assert r.runs == () and r.counterexample is not None


def test_sample_9_bracketed(net, reference):
    d = float(reference["9"])
    x, y = sample(9)
    below = verify(net, x, y, 0.98 * d, time_limit=120, threads=1)
    assert below.status is VerificationStatus.ROBUST
    above = verify(net, x, y, 1.02 * d, time_limit=120, threads=1)
    assert above.status is VerificationStatus.NOT_ROBUST
    ce = above.counterexample
    assert float((ce - x).abs().max()) <= 1.02 * d + 1e-12 and float(ce.min()) >= 0.0 and float(ce.max()) <= 1.0
    assert int(net.forward(ce[None])[0].argmax()) != y
    for run in below.runs + above.runs:
        assert run.num_binaries <= 200  # CROWN leaves ~130 unstable neurons on these balls


# 493: MIPVerify's distance as measured by the prototypes (shared/docs/NOTES.md); 9: the ground-truth file
NEAR = [(9, None), (493, 0.04930910042)]


@pytest.mark.parametrize("i1,d", NEAR)
@pytest.mark.parametrize("factor", [1 - 1e-4, 1 + 3e-5])
def test_verdicts_next_to_the_boundary(net, reference, i1, d, factor):
    """Within 0.01% of the exact distance the verdict must still be right.  HiGHS with presolve on got
    image 493 at 1.00003 d wrong (robust) on the composed model: ``milp.SAFE_HIGHS_OPTIONS``."""
    d = float(reference[str(i1)]) if d is None else d
    x, y = sample(i1)
    r = verify(net, x, y, factor * d, time_limit=120, threads=1)
    if factor < 1:
        assert r.status is VerificationStatus.ROBUST
    else:
        assert r.status is VerificationStatus.NOT_ROBUST
        assert float((r.counterexample - x).abs().max()) <= factor * d + 1e-12


@pytest.mark.parametrize("method", ["direct", "bisection"])
def test_sample_9_exact_distance(net, reference, method):
    d = float(reference["9"])
    x, y = sample(9)
    r = boundary_distance(net, x, y, method=method, time_limit=300, total_time_limit=900, mip_rel_gap=1e-5,
                          tol=1e-6)
    assert r.status is DistanceStatus.EXACT
    assert r.value == pytest.approx(d, rel=2e-5)
    # MIPVerify's value has its own tolerance (1e-4 relative gap, HiGHS): ours must bracket it up to that
    assert r.lower <= d * (1 + 1e-5) and d * (1 - 1e-4) <= r.upper <= r.d_adv
