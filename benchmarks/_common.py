"""What the benchmarks share: where the shared data is, the MNIST test set in float64, the WK17a CNNa
network, and a description of the machine for the results files."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lsub_helpers import data, models  # noqa: E402
from lsub_helpers.network import ReluNetwork  # noqa: E402

WK17A = "cnna_mnist_wk17a_lp_eps0.1_mipverify"


def shared_data() -> Path | None:
    """The shared ``data`` directory (``LSUB_SHARED``, ``/work/shared`` or ``../shared``), or None."""
    for cand in (os.environ.get("LSUB_SHARED"), "/work/shared", ROOT.parent / "shared"):
        if cand and (Path(cand) / "data").is_dir():
            return Path(cand) / "data"
    return None


def shared_data_or_note(what: str = "nothing to run") -> Path | None:
    """:func:`shared_data`, and a line saying so when there is none (a benchmark then skips, never fails)."""
    shared = shared_data()
    if shared is None:
        print(f"SKIP: no shared data directory (LSUB_SHARED, /work/shared or ../shared): {what}")
    return shared


def mnist_test(shared: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All 10,000 MNIST test images as float64 k/255 (N, 1, 28, 28), and their labels."""
    images = data.read_idx(shared / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = data.read_idx(shared / "mnist" / "t10k-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.astype(np.float64) / 255.0).reshape(-1, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


def wk17a_torch(shared: Path) -> torch.nn.Sequential:
    """MIPVerify's WK17a CNNa (no input normalisation) as a torch module, loaded with weights_only."""
    return models.load_public(WK17A, shared / "models").model


def wk17a(shared: Path) -> ReluNetwork:
    return ReluNetwork.from_torch(wk17a_torch(shared), (1, 28, 28))


def machine() -> str:
    """One markdown bullet list: date, CPU, load, library versions, thread counts."""
    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}"]
    try:
        import highspy
        import pyomo

        from lsub_helpers.milp import new_highs

        versions += [f"Pyomo {pyomo.__version__}", f"HiGHS {new_highs().version()}"]
    except ImportError:
        pass
    return "\n".join([
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; load average at start {load:.2f} (the machine is shared: wall "
        "times depend on the load, ratios measured side by side less so)",
        f"- {', '.join(versions)}; torch threads: {torch.get_num_threads()}",
    ])
