"""The public bound functions: argument checks, batching, and the layer-by-layer driver."""

from __future__ import annotations

import dataclasses
import numbers

import torch

from ..network import ReluNetwork
from .ibp import ibp_activation, ibp_stage
from .linear import Relax, linear_bounds, relax
from .pool import pool_interval, pool_relax
from .result import BoundMethod, Bounds, Intermediate

Tensor = torch.Tensor
F64 = torch.float64

# Linear methods take at most max(1, _ANCHOR_WIDTH // widest layer) anchors of a batch at a time.
_ANCHOR_WIDTH = 4096


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
    known: tuple | None = None,
    recompute: tuple | None = None,
) -> Bounds:
    """Bounds on the box ``lower <= x <= upper`` by ``method``.

    ``known``: pre-activation bounds already proven for this box (or for a part of it, such as a
    subdomain of branch and bound with some ReLUs fixed: ``lower = 0`` for an active one, ``upper = 0`` for an
    inactive one), one ``(lower, upper)`` pair per ReLU layer, shaped like the result's.  Every layer's bounds
    are intersected with them before the next layer is relaxed, so the result holds on the part they hold
    on.  An empty interval (``lower > upper``) then means that part contains no input.  ``recompute`` (with
    ``known``): one bool mask per ReLU layer of the neurons whose bounds may have changed since ``known`` was
    computed; the linear method recomputes only those, the others keep ``known`` (intersected with IBP).
    """
    if recompute is not None and known is None:
        raise ValueError("recompute needs known bounds for the neurons it leaves out")
    return _box(net, lower, upper, _method(method), _intermediate(intermediate), spec, known, recompute)


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


def check_box(net: ReluNetwork, lower, upper) -> tuple[Tensor, Tensor, bool]:
    lo, b1 = _check_x(net, lower)
    hi, b2 = _check_x(net, upper)
    if b1 != b2 or lo.shape != hi.shape:
        raise ValueError(f"lower and upper have different shapes {tuple(torch.as_tensor(lower).shape)} and "
                         f"{tuple(torch.as_tensor(upper).shape)}")
    if (lo > hi).any():
        raise ValueError("empty box: lower > upper somewhere")
    return lo, hi, b1


def _check_known(net: ReluNetwork, known, batch: int):
    """``known`` as float64 (B, n_l) pairs, one per ReLU layer (None stays None)."""
    if known is None:
        return None
    if len(known) != len(net.activations):
        raise ValueError(f"known must hold one (lower, upper) pair per ReLU layer ({len(net.activations)}), "
                         f"got {len(known)}")
    out = []
    for (kl, ku), act in zip(known, net.activations):
        kl = torch.as_tensor(kl, dtype=F64).reshape(-1, act.size).expand(batch, -1)
        ku = torch.as_tensor(ku, dtype=F64).reshape(-1, act.size).expand(batch, -1)
        if torch.isnan(kl).any() or torch.isnan(ku).any():
            raise ValueError("known bounds contain NaN")
        out.append((kl, ku))
    return out


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


def _box(net, lower, upper, method, intermediate, spec, known=None, recompute=None) -> Bounds:
    lo, hi, batched = check_box(net, lower, upper)
    known = _check_known(net, known, lo.shape[0])
    if recompute is not None:
        recompute = [torch.as_tensor(r, dtype=torch.bool).reshape(-1, a.size).expand(lo.shape[0], -1)
                     for r, a in zip(recompute, net.activations)]
        known = [(kl, ku, r) for (kl, ku), r in zip(known, recompute)]
    return _run(net, lo, hi, batched, method, _intermediate(intermediate), spec, known)


def _run(net: ReluNetwork, lo: Tensor, hi: Tensor, batched: bool, method, intermediate, spec, known=None) -> Bounds:
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
    if known is not None and len(known[0]) == 3:  # few rows recomputed per anchor: one batched pass is faster
        chunk = batch
    parts = []
    for start in range(0, batch, chunk):
        sl = slice(start, start + chunk)
        part_spec = spec[sl] if spec is not None and spec.dim() == 3 and spec.shape[0] == batch else spec
        part_known = None if known is None else [tuple(v[sl] for v in k) for k in known]
        parts.append(_propagate(net, lo_f[sl], hi_f[sl], method, intermediate, part_spec, part_known))
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


def _propagate(net: ReluNetwork, lo: Tensor, hi: Tensor, method: BoundMethod, intermediate, spec, known=None):
    """Layer by layer: bounds of each stage's output, then the relaxation of its activation."""
    center, radius = (lo + hi) / 2, (hi - lo) / 2
    h_lo, h_hi = lo, hi  # interval of the current stage's input
    relaxes: list[Relax] = []
    pre: list[tuple[Tensor, Tensor]] = []
    last = len(net.stages) - 1
    for m, stage in enumerate(net.stages):
        stage_spec = spec if m == last else None
        l, u = ibp_stage(stage, h_lo, h_hi, stage_spec)
        if known is not None and m < last:
            l, u = _tightest(l, u, *known[m][:2])
        if method is not BoundMethod.IBP and m > 0:
            rows = None
            stale = known[m][2].any(0) if known is not None and m < last and len(known[m]) == 3 else None
            if m < last and (intermediate is Intermediate.UNSTABLE or stale is not None):
                act = net.activations[m]
                need = ~act.replaced
                if intermediate is Intermediate.UNSTABLE:
                    need = need & ((l < 0) & (u > 0)).any(0)
                if stale is not None:
                    need = need & stale
                rows = need.nonzero().flatten()
            if rows is None or rows.numel() > 0:
                shared = method is not BoundMethod.CROWN
                ll, lu = linear_bounds(net, m, rows, relaxes, center, radius, shared, stage_spec)
                if method is BoundMethod.FASTLIN_IBP:
                    ll, lu = _tightest(ll, lu, l if rows is None else l[:, rows], u if rows is None else u[:, rows])
                if rows is None:
                    l, u = ll, lu
                else:
                    l, u = l.clone(), u.clone()
                    l[:, rows], u[:, rows] = ll, lu
                if known is not None and m < last:
                    l, u = _tightest(l, u, *known[m][:2])
        if m == last:
            return pre, (l, u)
        act = net.activations[m]
        pre.append((l, u))
        relaxes.append(relax(act, l, u, method))
        h_lo, h_hi = ibp_activation(act, l, u)
        pool = net.pools[m]
        if pool is not None:  # max pooling after the activation: bounds/pool.py
            if method is not BoundMethod.IBP:
                relaxes[-1] = dataclasses.replace(relaxes[-1], pool=pool_relax(pool, h_lo, h_hi))
            h_lo, h_hi = pool_interval(pool, h_lo, h_hi)
    raise AssertionError("unreachable")


def _tightest(l1, u1, l2, u2):
    return torch.maximum(l1, l2), torch.minimum(u1, u2)
