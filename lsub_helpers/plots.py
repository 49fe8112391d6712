"""Plots used by the chapters: decision regions of 2-D classifiers, boxes, balls, runtime scatter."""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from .network import ReluNetwork

__all__ = [
    "grid_predictions",
    "decision_regions",
    "draw_box",
    "draw_linf_ball",
    "substitute_activations",
    "closest_adversarial_grid",
    "substitute_views",
    "substitute_grid",
    "attack_scatter",
]

CLASS_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3")


def grid_predictions(
    net: ReluNetwork, xlim: Sequence[float], ylim: Sequence[float], resolution: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted class of a 2-D network on a regular grid: (X, Y, labels) arrays of shape (res, res)."""
    xs = np.linspace(xlim[0], xlim[1], resolution)
    ys = np.linspace(ylim[0], ylim[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1)).to(torch.float64)
    with torch.no_grad():
        labels = net.predict(pts).numpy().reshape(gx.shape)
    return gx, gy, labels


def decision_regions(
    net: ReluNetwork,
    ax: plt.Axes | None = None,
    *,
    xlim: Sequence[float] = (0.0, 1.0),
    ylim: Sequence[float] = (0.0, 1.0),
    resolution: int = 300,
    alpha: float = 0.35,
    boundary: bool = True,
    boundary_color: str = "k",
) -> plt.Axes:
    """Fill the regions of each predicted class and draw the decision boundary."""
    ax = ax or plt.gca()
    gx, gy, labels = grid_predictions(net, xlim, ylim, resolution)
    k = net.num_classes
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(CLASS_COLORS[:k])
    ax.contourf(gx, gy, labels, levels=np.arange(-0.5, k), cmap=cmap, alpha=alpha)
    if boundary:
        ax.contour(gx, gy, labels, levels=np.arange(0.5, k - 0.5 + 1e-9), colors=boundary_color, linewidths=1.0)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    return ax


def draw_box(ax: plt.Axes, lower: Sequence[float], upper: Sequence[float], **kwargs) -> Rectangle:
    """An axis-aligned rectangle from (lower, upper) corner coordinates."""
    lo = np.asarray(lower, dtype=float)
    up = np.asarray(upper, dtype=float)
    kwargs.setdefault("fill", False)
    rect = Rectangle(tuple(lo), *(up - lo), **kwargs)
    ax.add_patch(rect)
    return rect


def draw_linf_ball(ax: plt.Axes, center: Sequence[float], radius: float, **kwargs) -> Rectangle:
    c = np.asarray(center, dtype=float)
    return draw_box(ax, c - radius, c + radius, **kwargs)


def substitute_activations(z0: float = 0.6, z_adv: float = -0.5, ax_row: Sequence[plt.Axes] | None = None):
    """Figure 2: ReLU and its three substitutes for a neuron with pre-activation z0 at x0 (z_adv at x_adv)."""
    from .pruning import PruneMethod, replacement

    if ax_row is None:
        _, ax_row = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
    z = np.linspace(-1.2, 1.2, 200)
    titles = {
        PruneMethod.CONSTANT: "(a) constant",
        PruneMethod.LINEAR: "(b) adversarial-preserving linear",
        PruneMethod.ACTIVATION: "(c) activation-pattern preserving",
    }
    for ax, method in zip(ax_row, PruneMethod):
        a, c = replacement(method, torch.tensor([z0]), torch.tensor([z_adv]))
        ax.plot(z, np.maximum(z, 0), color="0.6", lw=2, label="ReLU")
        ax.plot(z, float(a) * z + float(c), color="C3", lw=2, label="substitute")
        ax.plot([z0], [max(z0, 0)], "ko")
        ax.annotate(r"$f_i^l(x^0)$", (z0, max(z0, 0)), textcoords="offset points", xytext=(5, -14))
        if method is PruneMethod.LINEAR:
            ax.plot([z_adv], [max(z_adv, 0)], "o", color="C1")
            ax.annotate(r"$f_i^l(x_{adv})$", (z_adv, max(z_adv, 0)), textcoords="offset points", xytext=(-10, 8))
        ax.axhline(0, color="0.85", lw=0.8, zorder=0)
        ax.axvline(0, color="0.85", lw=0.8, zorder=0)
        ax.set_title(titles[method])
        ax.set_xlabel("pre-activation $z$")
    ax_row[0].set_ylabel("output")
    ax_row[0].legend(loc="upper left")
    return ax_row


def closest_adversarial_grid(
    net: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    radius: float,
    *,
    resolution: int = 401,
    domain: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, np.ndarray] | tuple[float, None]:
    """Brute force for 2-D inputs: the grid point of another class closest to ``x0`` in L-inf within
    ``radius`` (exact up to the grid step ``2 * radius / (resolution - 1)``); ``(inf, None)`` if none."""
    if net.input_shape != (2,):
        raise ValueError("closest_adversarial_grid works on 2-D inputs only")
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    g = torch.linspace(-radius, radius, resolution, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2) + x0
    pts = pts[((pts >= domain[0]) & (pts <= domain[1])).all(1)]
    with torch.no_grad():
        other = net.predict(pts) != label
    if not bool(other.any()):
        return math.inf, None
    dist = (pts[other] - x0).abs().max(1).values
    k = int(dist.argmin())
    return float(dist[k]), pts[other][k].numpy()


def substitute_views(
    f: ReluNetwork,
    g: ReluNetwork,
    x0: torch.Tensor,
    label: int,
    *,
    d_adv: float,
    x_adv: torch.Tensor | None = None,
    axes: Sequence[plt.Axes] | None = None,
    title: str = "",
    local_scale: float = 3.0,
    resolution: int = 250,
    views: Sequence[str] = ("global", "local"),
) -> Sequence[plt.Axes]:
    """Figure 1 panels: global and/or local view of the substitute ``g`` (filled regions) with the
    boundary of ``f`` (dashed), the ball of radius ``d_adv``, and the lines to the closest adversarials
    of ``f`` (black) and ``g`` (red) found on a grid.  ``views`` picks the panels, one axis each."""
    if axes is None:
        _, axes = plt.subplots(1, len(views), figsize=(4.5 * len(views), 4.2), squeeze=False)
        axes = axes[0]
    x0n = torch.as_tensor(x0, dtype=torch.float64)
    w = local_scale * d_adv
    limits = {"global": ((0.0, 1.0), (0.0, 1.0)),
              "local": ((x0n[0] - w, x0n[0] + w), (x0n[1] - w, x0n[1] + w))}
    d_f, p_f = closest_adversarial_grid(f, x0n, label, w)
    d_g, p_g = closest_adversarial_grid(g, x0n, label, w)
    for ax, view in zip(axes, views):
        xl, yl = (tuple(float(v) for v in lim) for lim in limits[view])
        decision_regions(g, ax, xlim=xl, ylim=yl, resolution=resolution)
        gx, gy, lab_f = grid_predictions(f, xl, yl, resolution)
        ax.contour(gx, gy, lab_f, levels=np.arange(0.5, f.num_classes - 0.5 + 1e-9), colors="k",
                   linestyles="dashed", linewidths=0.8)
        if view == "global":
            draw_linf_ball(ax, x0n, w, color="0.2", lw=1.0)  # the region the local view shows
        draw_linf_ball(ax, x0n, d_adv, color="0.3", ls=":")
        ax.plot(*x0n, "k*", ms=11)
        if x_adv is not None:
            ax.plot(*torch.as_tensor(x_adv), "X", color="C1", ms=8)
        if p_f is not None:
            ax.plot([x0n[0], p_f[0]], [x0n[1], p_f[1]], "k-", lw=1.5)
        if p_g is not None:
            ax.plot([x0n[0], p_g[0]], [x0n[1], p_g[1]], "r-", lw=1.5)
        if view == "global":
            ax.set_title(f"{title} global".strip())
        else:
            dg = "none in view" if p_g is None else f"{d_g:.4f}"
            ax.set_title(f"local: d(f)={d_f:.4f}, d(g)={dg}", fontsize=9)
            ax.locator_params(nbins=3)  # a zoomed view needs few ticks to stay legible
    return axes


def substitute_grid(
    f: ReluNetwork,
    subs: dict,
    x0: torch.Tensor,
    label: int,
    *,
    view: str,
    gammas: Sequence[float],
    methods: Sequence,
    resolution: int = 150,
    panel_size: float = 3.3,
):
    """Figure 1 at page width: one view (``"global"`` or ``"local"``) of every substitute
    ``subs[(method, gamma)]`` (a :class:`~lsub_helpers.pruning.PruneResult`), rows gamma, columns pruner."""
    fig, axes = plt.subplots(len(gammas), len(methods), figsize=(panel_size * len(methods), panel_size * len(gammas)),
                             squeeze=False, constrained_layout=True)
    for r, gm in enumerate(gammas):
        for c, m in enumerate(methods):
            s = subs[(m, gm)]
            name = getattr(m, "value", m)
            substitute_views(f, s.network, x0, label, d_adv=s.d_adv, x_adv=s.x_adv, axes=[axes[r, c]],
                             views=(view,), resolution=resolution,
                             title=f"{name}, \u03b3={gm}: {s.num_pruned}/{s.num_hidden} replaced,")
            if view == "global":
                axes[r, c].set_title(f"{name}, \u03b3={gm} ({s.num_pruned}/{s.num_hidden} replaced)", fontsize=10)
            else:
                axes[r, c].set_title(f"{name}, \u03b3={gm}\n" + axes[r, c].get_title(), fontsize=9)
    return fig


def attack_scatter(ax: plt.Axes, comparison: Sequence[dict], gamma: float, title: str | None = None) -> None:
    """Does the substitute beat its attack?  On ``ax``, per anchor of ``comparison`` (the rows of
    :func:`lsub_helpers.experiments.attack_comparison`), the relative error of d_adv (x) against that of the
    linear and activation substitutes at ``gamma`` built from it (y), for the strong attack (circles) and the
    plain PGD (squares), with the diagonal: below it the substitute is closer to d_bnd(f) than its attack."""
    lim = 1e-6
    for kind, marker in (("strong", "o"), ("plain", "s")):
        for method, colour in (("linear", "C0"), ("activation", "C1")):
            key = f"{kind}_{method}_{gamma}"
            pts = [(r[f"{kind}_attack"], r[key]) for r in comparison
                   if r.get(key) is not None and r.get(f"{kind}_attack") is not None]
            if pts:
                a, g = zip(*pts)
                lim = max(lim, *a, *g)
                ax.scatter(a, g, marker=marker, color=colour, alpha=0.7, label=f"{method}, {kind} attack")
    ax.plot([0, lim], [0, lim], "k:", lw=1)
    ax.set_xlabel("relative error of d_adv (the attack alone)")
    ax.set_ylabel("relative error of d_bnd(g)")
    ax.set_title(title or f"gamma {gamma}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
