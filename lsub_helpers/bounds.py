"""Bounds on every neuron of a :class:`~lsub_helpers.network.ReluNetwork` over an input box (algorithm B).

Four methods, each a pure function that returns an immutable :class:`Bounds`:

``ibp``
    interval bound propagation (Gowal et al., 2018): one interval step per affine stage and activation.
``crown``
    backward linear relaxation (CROWN, Zhang et al., 2018; DeepPoly): every layer's bounds, the
    intermediate ones included, by back-substitution to the input.  An unstable ReLU ``l < 0 < u`` is
    bounded above by its chord ``u/(u-l) * (z - l)`` and below by ``z`` if ``u > -l`` and by ``0``
    otherwise (auto_LiRPA's default "adaptive" lower slope, ``u/(u-l) > 0.5``; a tie takes ``0``).
``fastlin``
    the same back-substitution with the lower line parallel to the chord, ``u/(u-l) * z`` (Weng et al., 2018).
``fastlin_ibp``
    at every layer the elementwise tightest of FastLin and of one IBP step, fed forward: the relaxations
    of the next layers use the tightened bounds.  Never looser than IBP at any layer; never looser than
    FastLin in the first two ReLU layers, but deeper it can be (tighter intermediate bounds change
    FastLin's lower line), see the tests.

Each takes the L-inf ball ``||x - x0|| <= eps`` intersected with the ``domain`` box (``ibp``, ``crown``,
...), or an explicit box ``lower <= x <= upper`` (``ibp_box``, ``crown_box``, ...).  ``x0`` may hold one
anchor (shape ``net.input_shape``) or a batch ``(B, *net.input_shape)``; the bounds then carry the same
leading batch dimension.  Neurons replaced by an affine function ``slope * z + offset`` (local substitutes)
are treated exactly, in IBP and in the linear relaxations.  ``intermediate`` chooses between linear
bounds for every hidden neuron (``"all"``) or only for those one IBP step leaves unstable
(``"unstable"``, auto_LiRPA's default, faster).  ``spec`` (K, num_classes) bounds ``spec @ logits``
instead of the logits (e.g. margins ``f_y - f_t``, tighter than differences of logit bounds).

All arithmetic is float64 (rounding is not accounted for: bounds are exact up to float64 round-off).
No product of two dense layer matrices is ever formed: coefficients are pulled back through a stage with
its transposed operation (``conv_transpose2d`` for a convolution), and through a chain of convolutions
as small windows over each neuron's receptive field ("patches", as in auto_LiRPA), so that the cost
follows the receptive fields rather than the layer widths.
"""

from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import Activation, AffineStage, ConvOp, ReluNetwork

__all__ = [
    "BoundMethod",
    "Intermediate",
    "Bounds",
    "compute_bounds",
    "compute_bounds_box",
    "input_box",
    "ibp",
    "crown",
    "fastlin",
    "fastlin_ibp",
    "ibp_box",
    "crown_box",
    "fastlin_box",
    "fastlin_ibp_box",
]

Tensor = torch.Tensor
F64 = torch.float64

# Largest number of float64 entries of one backward coefficient tensor (about 128 MB); bigger problems are
# processed in blocks of rows.
_BLOCK_ELEMENTS = 1 << 24
# Linear methods take at most max(1, _ANCHOR_WIDTH // widest layer) anchors of a batch at a time.
_ANCHOR_WIDTH = 4096


class BoundMethod(enum.Enum):
    """The bound propagation algorithm B (see the module docstring)."""

    IBP = "ibp"
    CROWN = "crown"
    FASTLIN = "fastlin"
    FASTLIN_IBP = "fastlin_ibp"


class Intermediate(enum.Enum):
    """Which neurons of a hidden layer get linear-relaxation (CROWN/FastLin) bounds.

    ``ALL`` (default): every neuron, so the gaps ``u - l`` that Algorithm 1 ranks are tight for stable
    neurons too (on CNNa 3-9 times smaller than with ``UNSTABLE``, see benchmarks/results/bounds.md).
    ``UNSTABLE``: only the neurons that one IBP step from the previous layer's bounds leaves unstable;
    the others keep that IBP step, which already proves them stable.  This is auto_LiRPA's default
    (``sparse_intermediate_bounds``) and gives the same bounds as auto_LiRPA's CROWN; about twice as fast.
    """

    ALL = "all"
    UNSTABLE = "unstable"


# ---------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Bounds:
    """Pre-activation bounds of every ReLU layer and bounds of the logits, for one anchor or a batch.

    Every tensor is float64.  ``pre_activation[l] = (lower, upper)`` with shape ``(n_l,)`` for one anchor
    or ``(B, n_l)`` for a batch; ``output`` likewise ``(num_classes,)`` / ``(B, num_classes)`` (or the
    number of rows of ``spec`` when one was given).  ``input`` is the box that was bounded, in the
    network's input shape (with the batch dimension if any).  ``replaced`` holds the substitute mask of
    every layer of the network that was bounded.
    """

    pre_activation: tuple[tuple[Tensor, Tensor], ...]
    output: tuple[Tensor, Tensor]
    method: BoundMethod
    input: tuple[Tensor, Tensor]
    replaced: tuple[Tensor, ...]

    @property
    def batched(self) -> bool:
        return self.output[0].dim() == 2

    @property
    def batch_size(self) -> int | None:
        return self.output[0].shape[0] if self.batched else None

    def unstable_masks(self) -> tuple[Tensor, ...]:
        """Per layer: ``lower < 0 < upper`` and not replaced (bool, same shape as the bounds)."""
        return tuple((lo < 0) & (up > 0) & ~rep for (lo, up), rep in zip(self.pre_activation, self.replaced))

    def active_masks(self) -> tuple[Tensor, ...]:
        """Per layer: provably active ReLUs, ``lower >= 0`` and not replaced."""
        return tuple((lo >= 0) & ~rep for (lo, _), rep in zip(self.pre_activation, self.replaced))

    def inactive_masks(self) -> tuple[Tensor, ...]:
        """Per layer: provably inactive ReLUs, ``upper <= 0`` (and ``lower < 0``) and not replaced."""
        return tuple(
            (up <= 0) & (lo < 0) & ~rep for (lo, up), rep in zip(self.pre_activation, self.replaced)
        )

    def num_unstable_per_layer(self) -> tuple[int, ...] | tuple[Tensor, ...]:
        """Unstable neurons of every layer: ints for one anchor, ``(B,)`` tensors for a batch."""
        counts = tuple(m.sum(-1) for m in self.unstable_masks())
        return counts if self.batched else tuple(int(c) for c in counts)

    @property
    def num_unstable(self) -> int | Tensor:
        """Unstable neurons of the whole network: an int for one anchor, a ``(B,)`` tensor for a batch."""
        counts = self.num_unstable_per_layer()
        if self.batched:
            return torch.stack(counts).sum(0) if counts else torch.zeros(self.batch_size, dtype=torch.long)
        return sum(counts)

    def gaps(self) -> tuple[Tensor, ...]:
        """``upper - lower`` of every neuron, per layer (the pruning criterion of Algorithm 1)."""
        return tuple(up - lo for lo, up in self.pre_activation)

    def anchor(self, i: int) -> "Bounds":
        """The bounds of anchor ``i`` of a batch, as an unbatched ``Bounds``."""
        if not self.batched:
            raise ValueError("anchor(i) needs batched bounds")
        return Bounds(
            tuple((lo[i], up[i]) for lo, up in self.pre_activation),
            (self.output[0][i], self.output[1][i]),
            self.method,
            (self.input[0][i], self.input[1][i]),
            self.replaced,
        )


# ---------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------


def ibp(net: ReluNetwork, x0, eps, *, domain=(0.0, 1.0), spec: Tensor | None = None) -> Bounds:
    """Interval bound propagation on the ball of radius ``eps`` around ``x0`` within ``domain``."""
    return _ball(net, x0, eps, domain, BoundMethod.IBP, Intermediate.ALL, spec)


def crown(
    net: ReluNetwork, x0, eps, *, domain=(0.0, 1.0), intermediate=Intermediate.ALL, spec: Tensor | None = None
) -> Bounds:
    """CROWN (all layers by back-substitution) on the ball of radius ``eps`` around ``x0`` within ``domain``."""
    return _ball(net, x0, eps, domain, BoundMethod.CROWN, intermediate, spec)


def fastlin(
    net: ReluNetwork, x0, eps, *, domain=(0.0, 1.0), intermediate=Intermediate.ALL, spec: Tensor | None = None
) -> Bounds:
    """FastLin (parallel lower line) on the ball of radius ``eps`` around ``x0`` within ``domain``."""
    return _ball(net, x0, eps, domain, BoundMethod.FASTLIN, intermediate, spec)


def fastlin_ibp(
    net: ReluNetwork, x0, eps, *, domain=(0.0, 1.0), intermediate=Intermediate.ALL, spec: Tensor | None = None
) -> Bounds:
    """Elementwise tightest of FastLin and IBP at every layer, on the ball around ``x0`` within ``domain``."""
    return _ball(net, x0, eps, domain, BoundMethod.FASTLIN_IBP, intermediate, spec)


def ibp_box(net: ReluNetwork, lower, upper, *, spec: Tensor | None = None) -> Bounds:
    """IBP on the box ``lower <= x <= upper`` (shape ``input_shape`` or ``(B, *input_shape)``)."""
    return _box(net, lower, upper, BoundMethod.IBP, Intermediate.ALL, spec)


def crown_box(net: ReluNetwork, lower, upper, *, intermediate=Intermediate.ALL, spec=None) -> Bounds:
    """CROWN on the box ``lower <= x <= upper``."""
    return _box(net, lower, upper, BoundMethod.CROWN, intermediate, spec)


def fastlin_box(net: ReluNetwork, lower, upper, *, intermediate=Intermediate.ALL, spec=None) -> Bounds:
    """FastLin on the box ``lower <= x <= upper``."""
    return _box(net, lower, upper, BoundMethod.FASTLIN, intermediate, spec)


def fastlin_ibp_box(net: ReluNetwork, lower, upper, *, intermediate=Intermediate.ALL, spec=None) -> Bounds:
    """FastLin-IBP on the box ``lower <= x <= upper``."""
    return _box(net, lower, upper, BoundMethod.FASTLIN_IBP, intermediate, spec)


def compute_bounds(
    net: ReluNetwork,
    x0,
    eps,
    *,
    method: BoundMethod | str,
    domain=(0.0, 1.0),
    intermediate: Intermediate | str = Intermediate.ALL,
    spec: Tensor | None = None,
) -> Bounds:
    """Bounds on the ball of radius ``eps`` around ``x0`` within ``domain`` by ``method``."""
    return _ball(net, x0, eps, domain, _method(method), _intermediate(intermediate), spec)


def compute_bounds_box(
    net: ReluNetwork,
    lower,
    upper,
    *,
    method: BoundMethod | str,
    intermediate: Intermediate | str = Intermediate.ALL,
    spec: Tensor | None = None,
) -> Bounds:
    """Bounds on the box ``lower <= x <= upper`` by ``method``."""
    return _box(net, lower, upper, _method(method), _intermediate(intermediate), spec)


def input_box(net: ReluNetwork, x0, eps, *, domain=(0.0, 1.0)) -> tuple[Tensor, Tensor]:
    """The box ``[x0 - eps, x0 + eps]`` intersected with ``domain`` (float64, shape of ``x0``).

    ``eps`` is a positive number, or a ``(B,)`` tensor of positive radii for a batch ``x0``.  ``domain``
    is ``(low, high)`` (numbers or tensors broadcastable to the input shape) or None for no domain.
    """
    x, batched = _check_x(net, x0)
    e = _check_eps(eps, x.shape[0] if batched else None)
    e = e.reshape((-1,) + (1,) * len(net.input_shape)) if e.dim() == 1 else e
    lo, hi = x - e, x + e
    if domain is not None:
        try:
            d_lo, d_hi = domain
        except (TypeError, ValueError):
            raise ValueError(f"domain must be a pair (low, high) or None, got {domain!r}") from None
        d_lo = torch.as_tensor(d_lo, dtype=F64)
        d_hi = torch.as_tensor(d_hi, dtype=F64)
        if torch.isnan(d_lo).any() or torch.isnan(d_hi).any() or (d_lo > d_hi).any():
            raise ValueError(f"invalid domain {domain!r}: need low <= high, no NaN")
        lo, hi = torch.maximum(lo, d_lo), torch.minimum(hi, d_hi)
        if (lo > hi).any():
            raise ValueError("the eps-ball around x0 does not meet the domain (x0 lies outside it by more than eps)")
    return (lo, hi) if batched else (lo[0], hi[0])


# ---------------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------------


def _method(method) -> BoundMethod:
    if isinstance(method, BoundMethod):
        return method
    try:
        return BoundMethod(str(method).lower())
    except ValueError:
        names = ", ".join(m.value for m in BoundMethod)
        raise ValueError(f"unknown bound method {method!r}: choose one of {names}") from None


def _intermediate(mode) -> Intermediate:
    if isinstance(mode, Intermediate):
        return mode
    try:
        return Intermediate(str(mode).lower())
    except ValueError:
        raise ValueError(f"unknown intermediate mode {mode!r}: choose 'all' or 'unstable'") from None


def _check_x(net: ReluNetwork, x) -> tuple[Tensor, bool]:
    """``x`` as float64 of shape (B, *input_shape), and whether it came with a batch dimension."""
    x = torch.as_tensor(x)
    shape = tuple(net.input_shape)
    if tuple(x.shape) == shape:
        batched = False
        x = x.unsqueeze(0)
    elif x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape and x.shape[0] > 0:
        batched = True
    else:
        raise ValueError(f"wrong input shape {tuple(x.shape)}: expected {shape} or (B, {', '.join(map(str, shape))})")
    if not (torch.is_floating_point(x) or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"input must be a real tensor, got dtype {x.dtype}")
    x = x.to(F64)
    if torch.isnan(x).any():
        raise ValueError("input contains NaN")
    if torch.isinf(x).any():
        raise ValueError("input contains an infinite value")
    return x, batched


def _check_eps(eps, batch: int | None) -> Tensor:
    if isinstance(eps, bool):
        raise ValueError("eps must be a number, got a bool")
    if isinstance(eps, numbers.Real):
        e = torch.tensor(float(eps), dtype=F64)
    else:
        e = torch.as_tensor(eps, dtype=F64).detach()
        if e.dim() > 1 or (e.dim() == 1 and (batch is None or e.numel() != batch)):
            raise ValueError(
                f"eps must be a number or, for a batch of B anchors, a (B,) tensor; got shape {tuple(e.shape)}"
            )
    if torch.isnan(e).any() or (e <= 0).any() or torch.isinf(e).any():
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return e


def _check_box(net: ReluNetwork, lower, upper) -> tuple[Tensor, Tensor, bool]:
    lo, b1 = _check_x(net, lower)
    hi, b2 = _check_x(net, upper)
    if b1 != b2 or lo.shape != hi.shape:
        raise ValueError(f"lower and upper have different shapes {tuple(torch.as_tensor(lower).shape)} and "
                         f"{tuple(torch.as_tensor(upper).shape)}")
    if (lo > hi).any():
        raise ValueError("empty box: lower > upper somewhere")
    return lo, hi, b1


def _check_spec(net: ReluNetwork, spec, batch: int) -> Tensor | None:
    if spec is None:
        return None
    s = torch.as_tensor(spec, dtype=F64)
    ok = s.dim() in (2, 3) and s.shape[-1] == net.num_classes and (s.dim() == 2 or s.shape[0] in (1, batch))
    if not ok:
        c = net.num_classes
        raise ValueError(f"spec must have shape (K, {c}) or (B, K, {c}), got {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("spec contains NaN or inf")
    return s


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


def _ball(net, x0, eps, domain, method, intermediate, spec) -> Bounds:
    _, batched = _check_x(net, x0)
    lo, hi = input_box(net, x0, eps, domain=domain)
    if not batched:
        lo, hi = lo.unsqueeze(0), hi.unsqueeze(0)
    return _run(net, lo, hi, batched, method, _intermediate(intermediate), spec)


def _box(net, lower, upper, method, intermediate, spec) -> Bounds:
    lo, hi, batched = _check_box(net, lower, upper)
    return _run(net, lo, hi, batched, method, _intermediate(intermediate), spec)


def _run(net: ReluNetwork, lo: Tensor, hi: Tensor, batched: bool, method, intermediate, spec) -> Bounds:
    """Bounds for the boxes ``lo, hi`` of shape (B, *input_shape)."""
    if not isinstance(net, ReluNetwork):
        raise ValueError(f"net must be a ReluNetwork, got {type(net).__name__}")
    batch = lo.shape[0]
    spec = _check_spec(net, spec, batch)
    lo_f, hi_f = lo.reshape(batch, -1), hi.reshape(batch, -1)
    # Linear methods on wide networks: anchors one chunk at a time (measured: on CNNa one anchor per
    # chunk is faster than a batched backward pass, whose tensors outgrow the caches).
    width = max((net.input_size,) + net.layer_sizes)
    chunk = batch if method is BoundMethod.IBP else max(1, _ANCHOR_WIDTH // width)
    parts = []
    for start in range(0, batch, chunk):
        sl = slice(start, start + chunk)
        part_spec = spec[sl] if spec is not None and spec.dim() == 3 and spec.shape[0] == batch else spec
        parts.append(_propagate(net, lo_f[sl], hi_f[sl], method, intermediate, part_spec))
    if len(parts) == 1:
        pre, out = parts[0]
    else:
        pre = [tuple(torch.cat([p[0][k][i] for p in parts]) for i in (0, 1)) for k in range(len(net.activations))]
        out = tuple(torch.cat([p[1][i] for p in parts]) for i in (0, 1))
    if not batched:
        pre = [(l[0], u[0]) for l, u in pre]
        out = (out[0][0], out[1][0])
        lo, hi = lo[0], hi[0]
    return Bounds(
        tuple(pre), out, method, (lo, hi), tuple(a.replaced.clone() for a in net.activations)
    )


def _propagate(net: ReluNetwork, lo: Tensor, hi: Tensor, method: BoundMethod, intermediate, spec):
    """Layer by layer: bounds of each stage's output, then the relaxation of its activation."""
    center, radius = (lo + hi) / 2, (hi - lo) / 2
    h_lo, h_hi = lo, hi  # interval of the current stage's input
    relaxes: list[_Relax] = []
    pre: list[tuple[Tensor, Tensor]] = []
    last = len(net.stages) - 1
    for m, stage in enumerate(net.stages):
        stage_spec = spec if m == last else None
        l, u = _ibp_stage(stage, h_lo, h_hi, stage_spec)
        if method is not BoundMethod.IBP and m > 0:
            rows = None
            if m < last and intermediate is Intermediate.UNSTABLE:
                act = net.activations[m]
                need = ((l < 0) & (u > 0)).any(0) & ~act.replaced
                rows = need.nonzero().flatten()
            if rows is None or rows.numel() > 0:
                shared = method is not BoundMethod.CROWN
                ll, lu = _linear_bounds(net, m, rows, relaxes, center, radius, shared, stage_spec)
                if method is BoundMethod.FASTLIN_IBP:
                    ll, lu = _tightest(ll, lu, l if rows is None else l[:, rows], u if rows is None else u[:, rows])
                if rows is None:
                    l, u = ll, lu
                else:
                    l, u = l.clone(), u.clone()
                    l[:, rows], u[:, rows] = ll, lu
        if m == last:
            return pre, (l, u)
        act = net.activations[m]
        pre.append((l, u))
        relaxes.append(_relax(act, l, u, method))
        h_lo, h_hi = _ibp_activation(act, l, u)
    raise AssertionError("unreachable")


def _tightest(l1, u1, l2, u2):
    return torch.maximum(l1, l2), torch.minimum(u1, u2)


# ---------------------------------------------------------------------------------------------------
# IBP steps
# ---------------------------------------------------------------------------------------------------

def _ibp_stage(stage: AffineStage, lo: Tensor, hi: Tensor, spec: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Interval of ``stage(h)`` (or ``spec @ stage(h)``) for ``lo <= h <= hi``, all (B, n) flattened."""
    batch = lo.shape[0]
    c, r = (lo + hi) / 2, (hi - lo) / 2
    if spec is not None:
        w = spec @ stage.weight  # (K, n) or (B, K, n)
        b = spec @ stage.bias
        zc = (w @ c.unsqueeze(-1)).squeeze(-1) + b
        zr = (w.abs() @ r.unsqueeze(-1)).squeeze(-1)
        return zc - zr, zc + zr
    zc = stage.apply(c.reshape((batch,) + tuple(stage.in_shape))).reshape(batch, -1)
    if sum(op.mixing for op in stage.ops) <= 1:
        zr = _abs_apply(stage, r)  # op by op is exact when at most one op mixes coordinates
    else:
        zr = r @ stage.weight.abs().T
    return zc - zr, zc + zr


def _abs_apply(stage: AffineStage, r: Tensor) -> Tensor:
    """``|W| r`` for the linear part ``W`` of a stage with at most one mixing op (op by op)."""
    batch = r.shape[0]
    x = r.reshape((batch,) + tuple(stage.in_shape))
    for op in stage.ops:
        x = op.abs_apply(x)
    return x.reshape(batch, -1)


def _ibp_activation(act: Activation, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Interval of the activation's output for pre-activations in ``[lo, hi]``."""
    h_lo, h_hi = lo.clamp(min=0), hi.clamp(min=0)
    if act.is_plain:
        return h_lo, h_hi
    a, c = act.slope, act.offset
    lin_lo = torch.minimum(a * lo, a * hi) + c
    lin_hi = torch.maximum(a * lo, a * hi) + c
    return torch.where(act.replaced, lin_lo, h_lo), torch.where(act.replaced, lin_hi, h_hi)


# ---------------------------------------------------------------------------------------------------
# Linear relaxations and back-substitution
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Relax:
    """Linear bounds ``al*z + cl <= s(z) <= au*z + cu`` of one activation layer, per anchor (B, n).

    Also stored in the form used by the dense backward step: on the columns ``cols`` where the lines differ
    (unstable neurons) the differences ``al - au`` and ``cu - cl``; ``offset_cols`` are the columns where
    ``cl`` is not zero (replaced neurons).
    """

    al: Tensor  # (B, n)
    cl: Tensor  # (B, n)
    au: Tensor  # (B, n)
    cu: Tensor  # (B, n)
    cols: Tensor  # (k,) long
    d_slope: Tensor  # (B, k) = al - au on cols
    d_offset: Tensor  # (B, k) = cu - cl on cols, >= 0
    offset_cols: Tensor  # (j,) long


def _relax(act: Activation, lo: Tensor, hi: Tensor, method: BoundMethod) -> _Relax | None:
    """The relaxation that ``method`` uses for pre-activations in ``[lo, hi]`` (None for IBP)."""
    if method is BoundMethod.IBP:
        return None
    unstable = (lo < 0) & (hi > 0) & ~act.replaced
    active = (lo >= 0) & ~act.replaced
    width = torch.where(unstable, hi - lo, torch.ones_like(hi))
    chord = torch.where(unstable, hi / width, torch.zeros_like(hi))  # u / (u - l)
    au = torch.where(active, torch.ones_like(hi), chord)
    cu = torch.where(unstable, -lo * chord, torch.zeros_like(hi))
    if method is BoundMethod.CROWN:
        al = torch.where(unstable, (hi > -lo).to(F64), au)
    else:
        al = au
    cl = torch.zeros_like(hi)
    if not act.is_plain:
        rep = act.replaced
        au = torch.where(rep, act.slope, au)
        al = torch.where(rep, act.slope, al)
        cl = torch.where(rep, act.offset, cl).expand_as(hi).clone()
    cols = unstable.any(0).nonzero().flatten()
    offset_cols = (cl != 0).any(0).nonzero().flatten()
    if not act.is_plain:
        cu = torch.where(act.replaced, cl, cu)
    return _Relax(al, cl, au, cu, cols, (al - au)[:, cols], (cu - cl)[:, cols], offset_cols)


def _linear_bounds(net, m, rows, relaxes, center, radius, shared, spec):
    """Bounds of (selected rows of) stage ``m``'s output by back-substitution to the input box.

    ``shared``: the lower and upper relaxation slopes coincide (FastLin), so one coefficient matrix
    serves both bounds; otherwise (CROWN) the upper bound is computed as minus the lower bound of the
    negated rows, stacked with the lower rows into one matrix.
    """
    if spec is None and _conv_chain(net, m):
        return _patch_bounds(net, m, rows, relaxes, center, radius, shared)
    stage = net.stages[m]
    w, b = stage.weight, stage.bias
    if spec is not None:
        lam0, beta0 = spec @ w, spec @ b
    elif rows is not None:
        lam0, beta0 = w[rows], b[rows]
    else:
        lam0, beta0 = w, b
    if lam0.dim() == 2:
        lam0, beta0 = lam0.unsqueeze(0), beta0.unsqueeze(0)
    batch = center.shape[0]
    k = lam0.shape[1]
    widest = max([net.input_size] + [s.out_size for s in net.stages[:m]])
    copies = 1 if shared else 2
    block = max(1, _BLOCK_ELEMENTS // (copies * batch * widest))
    lows, ups = [], []
    for start in range(0, k, block):
        sl = slice(start, min(k, start + block))
        lo_, up_ = _back_substitute(net, m, lam0[:, sl], beta0[:, sl], relaxes, center, radius, shared)
        lows.append(lo_)
        ups.append(up_)
    return torch.cat(lows, 1), torch.cat(ups, 1)


def _back_substitute(net, m, lam, beta, relaxes, center, radius, shared):
    """``lam`` (1 or B, K, n_{m-1}): coefficients of stage ``m``'s input; ``beta`` (1 or B, K)."""
    k = lam.shape[1]
    top = m - 1
    if shared:
        beta_lo, beta_up = beta, beta
    elif m > 0 and 4 * relaxes[m - 1].cols.numel() <= lam.shape[-1]:
        lam, beta = _split_first_step(net.stages[m - 1], relaxes[m - 1], lam, beta)
        top = m - 2
    else:
        lam = torch.cat([lam, -lam], 1)
        beta = torch.cat([beta, -beta], 1)
    for j in range(top, -1, -1):
        rel = relaxes[j]
        # activation j: h_j = s(z_j) with al*z + cl <= s(z) <= au*z + cu
        base = _dot(lam[..., rel.offset_cols], rel.cl[:, rel.offset_cols]) if rel.offset_cols.numel() else 0.0
        lam_u = lam[..., rel.cols]
        if shared:
            beta_lo = beta_lo + base + _dot(lam_u.clamp(max=0), rel.d_offset)
            beta_up = beta_up + base + _dot(lam_u.clamp(min=0), rel.d_offset)
            lam = lam * rel.au.unsqueeze(1)
        else:
            # lower bound of lam . h: positive coefficients take the lower line, negative the upper one
            beta = beta + base + _dot(lam_u.clamp(max=0), rel.d_offset)
            lam = lam * rel.au.unsqueeze(1)
            if rel.cols.numel():
                lam[..., rel.cols] += lam_u.clamp(min=0) * rel.d_slope.unsqueeze(1)
        # stage j: z_j = W_j h_{j-1} + b_j
        stage = net.stages[j]
        shift = lam @ stage.bias
        if shared:
            beta_lo, beta_up = beta_lo + shift, beta_up + shift
        else:
            beta = beta + shift
        lam = _transpose_apply(stage, lam)
    # concretise over the input box: min of lam . x is lam . c - |lam| . r
    lin = _dot(lam, center)
    spread = _dot(lam.abs(), radius)
    if shared:
        return lin - spread + beta_lo, lin + spread + beta_up
    low = lin - spread + beta
    return low[:, :k], -low[:, k:]


def _split_first_step(stage: AffineStage, rel: _Relax, lam: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN's first backward step (activation and stage below the target) for the rows ``lam`` and
    their negated copies at the cost of one pull-back: the two copies differ only on the unstable
    columns, whose corrections go through the dense rows of the stage matrix."""
    cols = rel.cols
    lam_u = lam[..., cols]
    pos, neg = lam_u.clamp(min=0), lam_u.clamp(max=0)
    base = _dot(lam[..., rel.offset_cols], rel.cl[:, rel.offset_cols]) if rel.offset_cols.numel() else 0.0
    common = lam * rel.au.unsqueeze(1)
    pulled = _transpose_apply(stage, common)
    shift = common @ stage.bias
    w_u, b_u = stage.weight[cols], stage.bias[cols]
    up = pos * rel.d_slope.unsqueeze(1)  # rows: lower line where the coefficient is positive
    down = neg * rel.d_slope.unsqueeze(1)  # negated rows: -neg is positive there
    lam_lo = pulled + up @ w_u
    lam_neg = -pulled - down @ w_u
    beta_lo = beta + base + _dot(neg, rel.d_offset) + shift + up @ b_u
    beta_neg = -beta - base - _dot(pos, rel.d_offset) - shift - down @ b_u
    return torch.cat([lam_lo, lam_neg], 1), torch.cat([beta_lo, beta_neg], 1)


def _dot(lam: Tensor, v: Tensor) -> Tensor:
    """``lam (B or 1, K, n)`` times ``v (B, n)`` per anchor -> (B, K)."""
    return (lam @ v.unsqueeze(-1)).squeeze(-1)


def _transpose_apply(stage: AffineStage, lam: Tensor) -> Tensor:
    """``lam @ W`` for the linear part ``W`` of ``stage``: (B, K, out_size) -> (B, K, in_size)."""
    b, k, _ = lam.shape
    x = lam.reshape((b * k,) + tuple(stage.out_shape))
    for op in reversed(stage.ops):
        x = op.transpose_apply(x)
    return x.reshape(b, k, -1)


# ---------------------------------------------------------------------------------------------------
# Back-substitution through a chain of convolutions in "patches" form
# ---------------------------------------------------------------------------------------------------
# When stage m and every stage before it are single convolutions, the coefficients of a neuron of stage m
# on the neurons of an earlier layer are non-zero only on a small window (its receptive field).  They are
# kept as a (rows, C, kh, kw) window at a known position instead of a dense (rows, C*H*W) matrix, as
# auto_LiRPA's "patches" mode does: pulling a window back through a convolution is a conv_transpose2d of
# the small window, and the maps of the relaxation are cut into matching windows with unfold.

def _conv_of(stage: AffineStage, first: bool) -> ConvOp | None:
    """The convolution of a stage that is one convolution (the first stage may start with non-mixing ops,
    e.g. a normalisation, a transpose or a padding, which are folded into the input box)."""
    ops = stage.ops
    if not isinstance(ops[-1], ConvOp):
        return None
    if len(ops) == 1 or (first and all(not op.mixing for op in ops[:-1])):
        return ops[-1]
    return None


def _conv_chain(net: ReluNetwork, m: int) -> bool:
    return m > 0 and all(_conv_of(net.stages[j], j == 0) is not None for j in range(m + 1))


def _patch_input(net: ReluNetwork, center: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    """Center and radius of the input box mapped through the elementwise ops that precede the first conv."""
    stage = net.stages[0]
    batch = center.shape[0]
    lo = (center - radius).reshape((batch,) + tuple(stage.in_shape))
    hi = (center + radius).reshape((batch,) + tuple(stage.in_shape))
    for op in stage.ops[:-1]:
        lo, hi = op.apply(lo), op.apply(hi)
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    return (lo + hi) / 2, (hi - lo) / 2


@dataclass(frozen=True)
class _Window:
    """Rows' windows: kernel ``k``, top-left corner of the window of output position (i, j) at
    ``(i*s[0] - p[0], j*s[1] - p[1])`` in the coordinates of the layer the coefficients refer to."""

    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]

    def through(self, conv: ConvOp) -> "_Window":
        kh, kw = conv.weight.shape[2:]
        (sh, sw), (ph, pw) = conv.stride, conv.padding
        return _Window(
            ((self.k[0] - 1) * sh + kh, (self.k[1] - 1) * sw + kw),
            (self.s[0] * sh, self.s[1] * sw),
            (self.p[0] * sh + ph, self.p[1] * sw + pw),
        )


def _cut(maps: Tensor, win: _Window, grid: tuple[int, int], pos: Tensor | None) -> Tensor:
    """Windows of ``maps`` (B, S, C, H, W) (S maps stacked), each flattened to C*kh*kw values: at every
    grid position, (B, S, 1, H'*W', window), or at the grid positions ``pos`` (row-major) of selected rows,
    (B, S, K, window).  Positions outside the map read zeros (padding: coefficients there multiply nothing)."""
    b, n_maps, c, h, w = maps.shape
    extra_h = max(0, (grid[0] - 1) * win.s[0] - win.p[0] + win.k[0] - h)
    extra_w = max(0, (grid[1] - 1) * win.s[1] - win.p[1] + win.k[1] - w)
    padded = F.pad(maps.reshape(b * n_maps, c, h, w), (win.p[1], extra_w, win.p[0], extra_h))
    cols = F.unfold(padded, win.k, stride=win.s)  # (B*S, C*kh*kw, Hg*Wg)
    hg = (padded.shape[2] - win.k[0]) // win.s[0] + 1
    wg = (padded.shape[3] - win.k[1]) // win.s[1] + 1
    cols = cols.reshape(b, n_maps, -1, hg, wg)[..., : grid[0], : grid[1]].flatten(3).transpose(2, 3)
    if pos is None:
        return cols.unsqueeze(2).contiguous()
    return cols.index_select(2, pos)


def _patch_bounds(net, m, rows, relaxes, center, radius, shared):
    """``_linear_bounds`` for stage ``m`` at the end of a chain of convolutions."""
    conv = _conv_of(net.stages[m], m == 0)
    batch = center.shape[0]
    c_in_center, c_in_radius = _patch_input(net, center, radius)
    widest = math.prod(conv.weight.shape[1:])
    win = _Window(tuple(conv.weight.shape[2:]), conv.stride, conv.padding)
    for j in range(m - 1, -1, -1):  # windows grow backwards: bound the block by the largest one
        prev = net.stages[j].ops[-1]
        win = win.through(prev)
        widest = max(widest, prev.weight.shape[1] * win.k[0] * win.k[1])
    copies = 1 if shared else 2
    c_out, h_out, w_out = conv.out_shape
    per_row = copies * batch * widest
    if rows is None and c_out * h_out * w_out * per_row <= _BLOCK_ELEMENTS:
        # every neuron: rows laid out as (channel, position), maps shared by the channels of a position
        return _patch_substitute(net, m, conv, None, relaxes, c_in_center, c_in_radius, shared)
    if rows is None:
        rows = torch.arange(c_out * h_out * w_out)
    block = max(1, _BLOCK_ELEMENTS // per_row)
    parts = [
        _patch_substitute(net, m, conv, rows[i : i + block], relaxes, c_in_center, c_in_radius, shared)
        for i in range(0, rows.numel(), block)
    ]
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


def _patch_substitute(net, m, conv, rows, relaxes, center, radius, shared):
    """Back-substitution of the rows ``rows`` (None: all) of the convolution stage ``m``.

    Coefficient windows have shape (B, K, window) for selected rows, or (B, R, H*W, window) for all
    rows (R = C_out, or 2 C_out with the negated copies), ``window`` = C*kh*kw of the current layer."""
    c_out, h_out, w_out = conv.out_shape
    grid = (h_out, w_out)
    if rows is None:
        pos = None
        lam = conv.weight.flatten(1)[:, None, :].expand(c_out, h_out * w_out, -1).unsqueeze(0)
        beta = conv.bias[:, None].expand(c_out, h_out * w_out).unsqueeze(0)
    else:
        ch, pos = rows // (h_out * w_out), rows % (h_out * w_out)
        lam = conv.weight.flatten(1)[ch].unsqueeze(0)  # (1, K, window)
        beta = conv.bias[ch].unsqueeze(0)  # (1, K)
    win = _Window(tuple(conv.weight.shape[2:]), conv.stride, conv.padding)
    if shared:
        beta_lo, beta_up = beta, beta
    else:  # upper bounds as minus the lower bounds of the negated rows
        lam, beta = torch.cat([lam, -lam], 1), torch.cat([beta, -beta], 1)
        if pos is not None:
            pos = pos.repeat(2)
    batch = center.shape[0]
    for j in range(m - 1, -1, -1):
        rel = relaxes[j]
        prev = net.stages[j].ops[-1]
        shape = (batch,) + tuple(prev.out_shape)
        # the conv's own bias (stage 0's bias would also hold the folded input normalisation)
        bias = prev.bias.reshape(-1, 1, 1).expand(tuple(prev.out_shape)).reshape(1, -1)
        offsets = rel.offset_cols.numel() > 0
        stack = [rel.au, rel.cu - rel.cl, bias] + ([] if shared else [rel.al - rel.au]) + ([rel.cl] if offsets else [])
        maps = _cut(torch.stack([v.expand(batch, -1).reshape(shape) for v in stack], 1), win, grid, pos)
        au, gap, bias_w = maps[:, 0], maps[:, 1], maps[:, 2]
        base = (lam * maps[:, -1]).sum(-1) if offsets else 0.0
        neg = lam.clamp(max=0)
        if shared:
            beta_lo = beta_lo + base + (neg * gap).sum(-1)
            beta_up = beta_up + base + ((lam - neg) * gap).sum(-1)
            lam = lam * au
        else:  # positive coefficients take the lower line, negative ones the upper line
            beta = beta + base + (neg * gap).sum(-1)
            lam = lam * au + (lam - neg) * maps[:, 3]
        shift = (lam * bias_w).sum(-1)
        if shared:
            beta_lo, beta_up = beta_lo + shift, beta_up + shift
        else:
            beta = beta + shift
        lam = _window_transpose(lam, prev, win)
        win = win.through(prev)
    box = _cut(torch.stack([center, radius], 1), win, grid, pos)
    lin = (lam * box[:, 0]).sum(-1)
    spread = (lam.abs() * box[:, 1]).sum(-1)
    if shared:
        return (lin - spread + beta_lo).reshape(batch, -1), (lin + spread + beta_up).reshape(batch, -1)
    low = (lin - spread + beta).reshape(batch, 2, -1)
    return low[:, 0], -low[:, 1]


def _window_transpose(lam: Tensor, conv: ConvOp, win: _Window) -> Tensor:
    """Pull windows (..., C_out*kh*kw) back through ``conv`` to windows of its input (..., C_in*kh'*kw')."""
    c_out, c_in, kh, kw = conv.weight.shape
    size_in = c_out * win.k[0] * win.k[1]
    size_out = c_in * ((win.k[0] - 1) * conv.stride[0] + kh) * ((win.k[1] - 1) * conv.stride[1] + kw)
    flat = lam.reshape(-1, size_in)
    if size_in * size_out <= (1 << 22) and flat.shape[0] > size_in:
        # the map window -> window as a small matrix: one GEMM instead of a per-row conv_transpose2d
        eye = torch.eye(size_in, dtype=lam.dtype).reshape((size_in, c_out) + win.k)
        matrix = F.conv_transpose2d(eye, conv.weight, None, conv.stride).reshape(size_in, size_out)
        out = flat @ matrix
    else:
        out = F.conv_transpose2d(flat.reshape((-1, c_out) + win.k), conv.weight, None, conv.stride)
    return out.reshape(lam.shape[:-1] + (size_out,))
