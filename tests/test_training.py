"""lsub_helpers.training: determinism, checkpoints and resume, PGD in training, accuracy measures."""

import math

import pytest
import torch
from torch import nn

from lsub_helpers import data, models, training
from lsub_helpers.training import PGDTrainConfig


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train").subset(slice(0, 256))


def fresh(seed=0):
    torch.manual_seed(seed)
    return models.mlp(64, [16], 10)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_seed_same_weights(digits):
    kw = dict(epochs=2, batch_size=32, lr=1e-2, progress=False)
    a = training.train(fresh(), digits, seed=3, **kw).model
    b = training.train(fresh(), digits, seed=3, **kw).model
    c = training.train(fresh(), digits, seed=4, **kw).model  # same init, other batch order
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert not same_weights(a, fresh())  # it did train


def test_training_learns_and_reports(digits):
    res = training.train(fresh(), digits, epochs=8, batch_size=32, lr=1e-2, seed=0, progress=False,
                         schedule="cosine")
    assert len(res.history) == 8 and res.resumed_from == 0 and res.seconds > 0
    assert res.history[-1].loss < res.history[0].loss
    assert res.history[-1].lr < 1e-4  # cosine to 0
    assert training.evaluate(res.model, digits) > 0.8 > 0.3 > training.evaluate(fresh(), digits)
    assert not res.model.training


def test_checkpoints_resume_to_the_same_weights(digits, tmp_path):
    adv = PGDTrainConfig(eps=0.1, steps=2, ramp_epochs=1.0)
    kw = dict(batch_size=64, lr=1e-2, seed=1, adversarial=adv, progress=False)
    full = training.train(fresh(), digits, epochs=3, **kw).model
    training.train(fresh(), digits, epochs=2, checkpoint_dir=tmp_path, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert training.latest_checkpoint(tmp_path).name == "epoch_0002.pt"
    resumed = training.train(fresh(seed=99), digits, epochs=3, checkpoint_dir=tmp_path, **kw)
    assert resumed.resumed_from == 2 and [h.epoch for h in resumed.history] == [1, 2, 3]
    assert same_weights(resumed.model, full)
    again = training.train(fresh(seed=5), digits, epochs=3, checkpoint_dir=tmp_path, **kw)  # all done: loads
    assert again.resumed_from == 3 and same_weights(again.model, full)
    with pytest.raises(ValueError, match="other settings"):
        training.train(fresh(), digits, epochs=3, checkpoint_dir=tmp_path, **{**kw, "lr": 5e-3})


def test_adversarial_training_is_deterministic(digits):
    adv = PGDTrainConfig(eps=0.05, steps=3)
    a = training.train(fresh(), digits, epochs=1, batch_size=64, seed=2, adversarial=adv, progress=False)
    b = training.train(fresh(), digits, epochs=1, batch_size=64, seed=2, adversarial=adv, progress=False)
    assert same_weights(a.model, b.model) and a.history[0].eps == 0.05


def test_eps_ramp_and_default_step():
    cfg = PGDTrainConfig(eps=0.3, steps=10, ramp_epochs=4)
    assert cfg.alpha == pytest.approx(0.075)
    assert [cfg.eps_at(e) for e in (0, 1, 2, 4, 9)] == pytest.approx([0, 0.075, 0.15, 0.3, 0.3])
    with pytest.raises(ValueError):
        PGDTrainConfig(eps=0.1, clean_fraction=2)


def linear2(w, b):
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(b, dtype=torch.float32))
    return nn.Sequential(layer)


def test_pgd_linf_hand_checked():
    """Logits (x0, x1), label 0: the cross-entropy grows as x0 falls and x1 rises, so one step of size
    >= eps from the centre lands on the corner (x0 - eps, x1 + eps), clipped to the domain."""
    model = linear2([[1, 0], [0, 1]], [0, 0])
    x, y = torch.tensor([[0.5, 0.5], [0.05, 0.95]]), torch.tensor([0, 0])
    adv = training.pgd_linf(model, x, y, eps=0.1, steps=1, step_size=0.2, random_start=False)
    torch.testing.assert_close(adv, torch.tensor([[0.4, 0.6], [0.0, 1.0]]))
    free = training.pgd_linf(model, x, y, eps=0.1, steps=1, step_size=0.2, random_start=False, domain=None)
    torch.testing.assert_close(free[1], torch.tensor([-0.05, 1.05]))
    g = torch.Generator().manual_seed(0)
    rnd = training.pgd_linf(model, x.repeat(50, 1), y.repeat(50), eps=0.1, steps=0, step_size=0.0, generator=g)
    assert (rnd - x.repeat(50, 1)).abs().max() <= 0.1 + 1e-6 and rnd.min() >= 0.0
    assert (rnd - x.repeat(50, 1)).abs().max() > 0.05  # a random start, not the centre


def test_evaluate_and_pgd_accuracy_hand_checked():
    """Logits (x0, x1): the L-inf distance of (a, b) to the boundary x0 = x1 is |a - b| / 2."""
    model = linear2([[1, 0], [0, 1]], [0, 0])
    ds = data.Dataset(torch.tensor([[0.7, 0.3], [0.55, 0.45], [0.2, 0.9], [0.6, 0.4]]),
                      torch.tensor([0, 0, 1, 1]), "hand", "test", ("a", "b"))
    # distances 0.2, 0.05, 0.35; the last point is misclassified
    assert training.evaluate(model, ds) == 0.75
    assert training.pgd_accuracy(model, ds, eps=0.01, steps=5) == 0.75
    assert training.pgd_accuracy(model, ds, eps=0.1, steps=5) == 0.5
    assert training.pgd_accuracy(model, ds, eps=0.3, steps=5, restarts=2) == 0.25
    assert training.pgd_accuracy(model, ds, eps=0.4, steps=5) == 0.0


def test_pgd_accuracy_respects_the_domain():
    """Logits (x0, 1.05): class 0 needs x0 > 1.05, out of the domain [0, 1]."""
    model = linear2([[1, 0], [0, 0]], [0, 1.05])
    ds = data.Dataset(torch.tensor([[0.9, 0.5]]), torch.tensor([1]), "hand", "test", ("a", "b"))
    assert training.pgd_accuracy(model, ds, eps=0.2, steps=3) == 1.0
    assert training.pgd_accuracy(model, ds, eps=0.2, steps=3, domain=None) == 0.0


def test_cosine_plan_hand_checked():
    lr = 1.0
    assert [training.cosine_lr(lr, s, 1, ((0, 2),)) for s in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    # planned for 4 epochs, re-planned at epoch 2 (rate 0.5 there) to end at epoch 3
    replanned = [training.cosine_lr(lr, s, 1, ((0, 4), (2, 3))) for s in range(4)]
    assert replanned == pytest.approx([1.0, 0.5 * (1 + 2 ** -0.5), 0.5, 0.0])
    with pytest.raises(ValueError, match="must end at epochs=3"):
        training.train(fresh(), data.load("toy2d", "test"), epochs=3, schedule="cosine", cosine_plan=((0, 4),),
                       progress=False)


def test_resume_with_a_replanned_cosine(digits, tmp_path):
    kw = dict(batch_size=64, lr=1e-2, seed=1, schedule="cosine", progress=False)
    training.train(fresh(), digits, epochs=4, checkpoint_dir=tmp_path / "a", **kw)  # plan (0, 4): 4 epochs
    (tmp_path / "a" / "epoch_0003.pt").unlink()
    (tmp_path / "a" / "epoch_0004.pt").unlink()  # "stopped" after epoch 2 of the 4-epoch plan
    plan = ((0, 4), (2, 3))
    resumed = training.train(fresh(), digits, epochs=3, cosine_plan=plan, checkpoint_dir=tmp_path / "a", **kw)
    direct = training.train(fresh(), digits, epochs=3, cosine_plan=plan, **kw)
    assert resumed.resumed_from == 2 and same_weights(resumed.model, direct.model)
    # the rate of the last batch (step 11 of 4 batches x 3 epochs) under the re-planned schedule
    assert resumed.history[2].lr == pytest.approx(training.cosine_lr(1e-2, 11, 4, plan)) == pytest.approx(
        0.5 * 0.5e-2 * (1 + math.cos(math.pi * 3 / 4)))
    training.train(fresh(), digits, epochs=2, checkpoint_dir=tmp_path / "b", **kw)  # plan (0, 2)
    with pytest.raises(ValueError, match="does not reproduce"):
        training.train(fresh(), digits, epochs=3, cosine_plan=((0, 4), (2, 3)), checkpoint_dir=tmp_path / "b", **kw)


def test_train_options_and_keywords_are_the_same_run(digits, tmp_path):
    """``options=TrainOptions(...)`` and the old keyword arguments train the same weights and write
    checkpoints the other form resumes (the same configuration key)."""
    from lsub_helpers.training import Optimizer, Schedule, TrainOptions

    kw = dict(epochs=2, batch_size=32, lr=1e-2, seed=3, schedule="cosine")
    a = training.train(fresh(), digits, progress=False, **kw).model
    opts = TrainOptions(**kw)
    assert opts.schedule is Schedule.COSINE and opts.optimizer is Optimizer.ADAM  # strings become the enums
    b = training.train(fresh(), digits, options=opts, progress=False).model
    assert same_weights(a, b)
    const = {**kw, "schedule": "constant"}  # (a cosine run's length cannot change on resume)
    training.train(fresh(), digits, options=TrainOptions(**{**const, "epochs": 1}), checkpoint_dir=tmp_path,
                   progress=False)
    resumed = training.train(fresh(seed=9), digits, checkpoint_dir=tmp_path, progress=False, **const)
    assert resumed.resumed_from == 1
    assert same_weights(resumed.model, training.train(fresh(), digits, progress=False, **const).model)
    c = training.train(fresh(), digits, options=TrainOptions(**{**kw, "seed": 4}), seed=3, progress=False).model
    assert same_weights(a, c)  # the keyword replaces the field of options
    with pytest.raises(TypeError):
        training.train(fresh(), digits, lr=1e-2)  # epochs is still required
