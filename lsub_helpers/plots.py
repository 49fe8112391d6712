"""Plots used by the chapters: decision regions of 2-D classifiers, boxes, balls, runtime scatter."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from .network import ReluNetwork

__all__ = ["grid_predictions", "decision_regions", "draw_box", "draw_linf_ball", "substitute_activations"]

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
