"""Clean and PGD-adversarial training, accuracy and PGD accuracy.

``train(model, dataset, epochs=..., batch_size=..., lr=..., seed=...)`` runs Adam (or SGD) over shuffled
minibatches, optionally on L-inf PGD examples (:class:`PGDTrainConfig`: eps, steps, step size, random
start, an eps ramp and the input domain as parameters). It shows a tqdm progress bar, writes one checkpoint
per epoch and resumes from the latest one, and is deterministic for a given seed and initial model: the
batch order and the PGD random starts come from one ``torch.Generator`` whose state is checkpointed, and
the learning rate is a pure function of the step.

The PGD here is the training-time attack (cheap, a fixed number of steps). The evaluation attacks of the
book live in :mod:`lsub_helpers.attacks`; :func:`pgd_accuracy` is the quick robust-accuracy check used to
validate the trained networks.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import pgd_step
from .data import Dataset
from .options import keyword_options

__all__ = ["PGDTrainConfig", "Schedule", "Optimizer", "TrainOptions", "EpochStats", "TrainResult", "train", "pgd_linf",
           "evaluate", "pgd_accuracy", "latest_checkpoint", "cosine_lr"]


class Schedule(str, enum.Enum):
    CONSTANT = "constant"
    COSINE = "cosine"  # per step, from lr down to 0 at the last step


class Optimizer(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"  # momentum 0.9


@dataclasses.dataclass(frozen=True)
class PGDTrainConfig:
    """L-inf PGD used to make the training examples (Madry et al. 2018).

    ``step_size`` defaults to ``2.5 * eps / steps``. With ``ramp_epochs > 0`` the radius grows linearly from
    0 to ``eps`` over that many epochs (step size in proportion), which lets small networks start learning.
    ``clean_fraction`` mixes clean loss in: ``loss = c * clean + (1 - c) * adversarial``. ``domain`` bounds
    every input (``None`` for no clamping).
    """

    eps: float
    steps: int = 10
    step_size: float | None = None
    ramp_epochs: float = 0.0
    random_start: bool = True
    clean_fraction: float = 0.0
    domain: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self):
        if self.eps < 0 or self.steps < 1:
            raise ValueError("PGDTrainConfig needs eps >= 0 and steps >= 1")
        if not 0.0 <= self.clean_fraction <= 1.0:
            raise ValueError("clean_fraction must lie in [0, 1]")

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def eps_at(self, progress_epochs: float) -> float:
        """The radius after ``progress_epochs`` (fractional) epochs of training."""
        if self.ramp_epochs <= 0:
            return self.eps
        return self.eps * min(1.0, progress_epochs / self.ramp_epochs)


@dataclasses.dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss
    accuracy: float  # on the training batches (adversarial ones when adversarial)
    eps: float  # radius at the end of the epoch (0 for clean training)
    lr: float  # learning rate at the end of the epoch
    seconds: float


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    history: tuple[EpochStats, ...]
    seconds: float  # training time of all epochs, including those of a resumed run
    resumed_from: int  # epochs loaded from a checkpoint (0: fresh start)


def _forward(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """A logits function for an ``nn.Module`` or any object with ``forward`` (e.g. ``ReluNetwork``)."""
    return model if isinstance(model, nn.Module) else model.forward


def pgd_linf(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step_size: float,
             random_start: bool = True, domain: tuple[float, float] | None = (0.0, 1.0),
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L-inf PGD on the cross-entropy: ``steps`` signed-gradient steps, projected on
    ``B(x, eps)`` intersected with ``domain``. Returns the last iterate (detached)."""
    f = _forward(model)
    lo, hi = x - eps, x + eps
    if domain is not None:
        lo, hi = lo.clamp(*domain), hi.clamp(*domain)
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        x_adv = torch.max(torch.min(x + eps * noise, hi), lo)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(f(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = pgd_step(x_adv.detach(), grad, step_size, lo, hi)
    return x_adv.detach()


def _config_key(**kw) -> str:
    def enc(v):
        if dataclasses.is_dataclass(v):
            return dataclasses.asdict(v)
        if isinstance(v, enum.Enum):
            return v.value
        return v

    return json.dumps({k: enc(v) for k, v in kw.items()}, sort_keys=True)


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest epoch number in ``checkpoint_dir`` (``epoch_NNNN.pt``), or None."""
    d = Path(checkpoint_dir)
    files = sorted(d.glob("epoch_*.pt")) if d.is_dir() else []
    return files[-1] if files else None


def cosine_lr(lr: float, step: int, per_epoch: int, plan: Sequence[tuple[float, float]]) -> float:
    """Learning rate at ``step`` of a cosine schedule given as ``plan = ((start_epoch, end_epoch), ...)``.

    The first segment starts at epoch 0 with ``lr`` and decays towards 0 at its ``end_epoch``; each later
    segment starts from the rate reached at its ``start_epoch`` and decays to 0 at its own end. One segment
    ``((0, epochs),)`` is the plain cosine schedule; more segments re-plan a run's length part-way.
    """
    lr_start = lr
    for k, (start, end) in enumerate(plan):
        s0, s1 = start * per_epoch, end * per_epoch
        nxt = plan[k + 1][0] * per_epoch if k + 1 < len(plan) else None
        if nxt is None or step < nxt:
            return 0.5 * lr_start * (1 + math.cos(math.pi * min(step - s0, s1 - s0) / (s1 - s0)))
        lr_start = 0.5 * lr_start * (1 + math.cos(math.pi * (nxt - s0) / (s1 - s0)))
    raise AssertionError("unreachable")


def _check_plan(plan, epochs: int) -> tuple[tuple[float, float], ...]:
    plan = tuple((float(a), float(b)) for a, b in plan)
    starts = [a for a, _ in plan]
    if not plan or starts[0] != 0 or any(b <= a for a, b in plan) or starts != sorted(set(starts)):
        raise ValueError(f"cosine_plan must be ((0, end), (start2, end2), ...) with increasing starts: {plan}")
    if plan[-1][1] != epochs:
        raise ValueError(f"the last segment of cosine_plan must end at epochs={epochs}: {plan}")
    return plan


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """What :func:`train` does (each field also accepted there as a keyword argument): ``epochs`` of
    minibatches of ``batch_size``, learning rate ``lr`` under ``schedule`` (``cosine_plan``: see
    :func:`cosine_lr`), ``optimizer`` with ``weight_decay``, ``seed`` for the batch order and PGD starts, and
    ``adversarial`` (None: clean training).  Strings for ``optimizer`` and ``schedule`` become the enums."""

    epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    adversarial: PGDTrainConfig | None = None
    optimizer: Optimizer | str = Optimizer.ADAM
    schedule: Schedule | str = Schedule.CONSTANT
    cosine_plan: Sequence[tuple[float, float]] | None = None
    weight_decay: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "optimizer", Optimizer(self.optimizer))
        object.__setattr__(self, "schedule", Schedule(self.schedule))


@keyword_options(TrainOptions)
def train(model: nn.Module, dataset: Dataset, *, options: TrainOptions,
          checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``dataset`` and return it with per-epoch statistics.

    Settings: ``options`` (a :class:`TrainOptions`) or its fields as keyword arguments (``epochs``,
    ``batch_size``, ``lr``, ``seed``, ``adversarial``, ``optimizer``, ``schedule``, ``cosine_plan``,
    ``weight_decay``); keywords given beside ``options`` replace its fields.
    With ``checkpoint_dir`` the state (model, optimizer, generator, history) is saved after every epoch
    as ``epoch_NNNN.pt`` and a later call with the same arguments resumes from the latest one; a checkpoint
    made with other arguments raises ``ValueError``. Same seed and same initial model -> same weights.
    ``schedule="cosine"`` decays the rate to 0 at the last step; ``cosine_plan`` (see :func:`cosine_lr`)
    re-plans the decay part-way, e.g. to shorten a checkpointed run: its epochs so far must have had
    exactly the rates the new plan gives them.
    """
    o = options
    epochs, batch_size, lr, seed, adversarial = o.epochs, o.batch_size, o.lr, o.seed, o.adversarial
    optimizer, schedule, weight_decay = o.optimizer, o.schedule, o.weight_decay
    key = _config_key(epochs=None, batch_size=batch_size, lr=lr, seed=seed, adversarial=adversarial,
                      optimizer=optimizer, schedule=schedule, weight_decay=weight_decay, data=dataset.name,
                      n=len(dataset))
    params = list(model.parameters())
    if optimizer is Optimizer.ADAM:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(dataset)
    per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * per_epoch
    plan = _check_plan(o.cosine_plan if o.cosine_plan is not None else ((0, epochs),), epochs)

    def lr_at(step: int) -> float:
        return lr if schedule is Schedule.CONSTANT else cosine_lr(lr, step, per_epoch, plan)

    history: list[EpochStats] = []
    start_epoch, elapsed = 0, 0.0

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and (latest := latest_checkpoint(ckpt_dir)) is not None:
        state = torch.load(latest, map_location="cpu", weights_only=True)
        if state["config"] != key:
            raise ValueError(f"{latest} was written by a run with other settings:\n{state['config']}\n"
                             f"this run:\n{key}\nuse another checkpoint_dir or delete it")
        old_plan = state.get("plan") or ((0, state["total_steps"] / per_epoch),)
        done = state["epoch"] * per_epoch
        if schedule is not Schedule.CONSTANT and any(
                cosine_lr(lr, k, per_epoch, old_plan) != lr_at(k) for k in range(done)):
            raise ValueError(f"{latest}: its first {state['epoch']} epochs followed the cosine plan {old_plan}, "
                             f"which this run's plan {plan} does not reproduce; pass a cosine_plan that starts "
                             "like the old one")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history = [EpochStats(**h) for h in state["history"]]
        start_epoch, elapsed = state["epoch"], state["seconds"]
        if start_epoch > epochs:
            raise ValueError(f"{latest} is at epoch {start_epoch}, beyond the {epochs} asked for")
    resumed_from = start_epoch
    say = log or (lambda s: None)
    if resumed_from:
        say(f"resumed from epoch {resumed_from} ({latest})")

    from tqdm.auto import tqdm

    for epoch in range(start_epoch, epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum, correct, eps_now, lr_now = 0.0, 0, 0.0, lr
        bar = tqdm(range(per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False,
                   mininterval=1.0)
        for b in bar:
            idx = order[b * batch_size:(b + 1) * batch_size]
            x, y = dataset.x[idx], dataset.y[idx]
            step = epoch * per_epoch + b
            lr_now = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr_now
            if adversarial is not None:
                eps_now = adversarial.eps_at(epoch + b / per_epoch)
                alpha = adversarial.alpha * (eps_now / adversarial.eps if adversarial.eps else 0.0)
                x_in = pgd_linf(model, x, y, eps=eps_now, steps=adversarial.steps, step_size=alpha,
                                random_start=adversarial.random_start, domain=adversarial.domain,
                                generator=gen)
            else:
                x_in = x
            logits = model(x_in)
            loss = F.cross_entropy(logits, y)
            if adversarial is not None and adversarial.clean_fraction > 0:
                c = adversarial.clean_fraction
                loss = c * F.cross_entropy(model(x), y) + (1 - c) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            if progress and b % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", eps=f"{eps_now:.3f}")
        bar.close()
        seconds = time.perf_counter() - t0
        elapsed += seconds
        stats = EpochStats(epoch=epoch + 1, loss=loss_sum / n, accuracy=correct / n, eps=eps_now, lr=lr_now,
                           seconds=seconds)
        history.append(stats)
        say(f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f} train acc {stats.accuracy:.4f} "
            f"eps {stats.eps:.3f} lr {stats.lr:.2e} {seconds:.1f}s")
        if ckpt_dir is not None:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            state = {"config": key, "epoch": epoch + 1, "total_steps": total_steps,
                     "plan": [list(p) for p in plan], "seconds": elapsed, "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "generator": gen.get_state(),
                     "history": [dataclasses.asdict(h) for h in history]}
            tmp = ckpt_dir / f".epoch_{epoch + 1:04d}.pt.tmp"
            torch.save(state, tmp)
            tmp.replace(ckpt_dir / f"epoch_{epoch + 1:04d}.pt")
    model.eval()
    return TrainResult(model=model, history=tuple(history), seconds=elapsed, resumed_from=resumed_from)


@torch.no_grad()
def evaluate(model, dataset: Dataset, *, batch_size: int = 1000) -> float:
    """Clean accuracy of ``model`` (an ``nn.Module`` or a ``ReluNetwork``) on ``dataset``."""
    f = _forward(model)
    correct = 0
    for i in range(0, len(dataset), batch_size):
        correct += (f(dataset.x[i:i + batch_size]).argmax(1) == dataset.y[i:i + batch_size]).sum().item()
    return correct / len(dataset)


def pgd_accuracy(model, dataset: Dataset, *, eps: float, steps: int = 40, step_size: float | None = None,
                 restarts: int = 1, seed: int = 0, domain: tuple[float, float] | None = (0.0, 1.0),
                 batch_size: int = 500) -> float:
    """Fraction of ``dataset`` classified correctly at ``x`` and at every PGD iterate of every restart.

    An upper bound on the true robust accuracy at radius ``eps``. ``step_size`` defaults to
    ``2.5 * eps / steps``; the first restart starts at ``x`` itself, the others at random points.
    """
    f = _forward(model)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    gen = torch.Generator().manual_seed(seed)
    robust = 0
    for i in range(0, len(dataset), batch_size):
        x, y = dataset.x[i:i + batch_size], dataset.y[i:i + batch_size]
        with torch.no_grad():
            ok = f(x).argmax(1) == y
        lo, hi = x - eps, x + eps
        if domain is not None:
            lo, hi = lo.clamp(*domain), hi.clamp(*domain)
        for r in range(restarts):
            if r == 0:
                x_adv = x.clone()
            else:
                x_adv = torch.max(torch.min(x + eps * (torch.rand(x.shape, generator=gen) * 2 - 1), hi), lo)
            for _ in range(steps + 1):
                x_adv = x_adv.detach().requires_grad_(True)
                logits = f(x_adv)
                ok &= (logits.argmax(1) == y).detach()
                loss = F.cross_entropy(logits, y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
                x_adv = pgd_step(x_adv.detach(), grad, alpha, lo, hi)
        robust += ok.sum().item()
    return robust / len(dataset)
