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
are treated exactly, in IBP and in the linear relaxations.  A max pooling layer after an activation
(:mod:`.pool`) is exact in IBP; CROWN bounds it below by the window's input with the largest lower bound and
above by the largest upper bound (exactly that input when it wins on the whole box), FastLin by two parallel
lines; conv chains with a pool inside take the dense path.  ``intermediate`` chooses between linear
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

from .alpha import AlphaOptions, AlphaResult, alpha_crown_spec
from .propagate import (
    compute_bounds,
    compute_bounds_box,
    input_box,
    ibp,
    crown,
    fastlin,
    fastlin_ibp,
    ibp_box,
    crown_box,
    fastlin_box,
    fastlin_ibp_box,
)
from .result import BoundMethod, Bounds, Intermediate

__all__ = [
    "AlphaOptions",
    "AlphaResult",
    "alpha_crown_spec",
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
