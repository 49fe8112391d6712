"""ipywidgets controls for the chapters: turn the knobs of a local substitute and see the boundary move."""

from __future__ import annotations

import functools
from typing import Sequence

import matplotlib.pyplot as plt
import torch

from .attacks import min_distance_attack
from .network import ReluNetwork
from .plots import substitute_views
from .pruning import PruneMethod, prune

__all__ = ["substitute_explorer"]


def substitute_explorer(
    f: ReluNetwork,
    anchors: torch.Tensor,
    *,
    gammas: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99),
    gamma0: float = 0.1,
    resolution: int = 200,
):
    """A widget with a pruner menu, a gamma slider and an anchor selector that redraws Figure 1's global
    and local views of the substitute.  Substitutes are computed on demand and cached."""
    import ipywidgets as W

    anchors = torch.as_tensor(anchors, dtype=torch.float64)

    @functools.lru_cache(maxsize=None)
    def attack(i: int):
        x0 = anchors[i]
        y = int(f.predict(x0[None])[0])
        return x0, y, min_distance_attack(f, x0, y, seed=0)

    @functools.lru_cache(maxsize=None)
    def substitute(i: int, method: str, gamma: float):
        x0, y, adv = attack(i)
        return prune(f, x0, y, method=method, gamma=gamma, gamma0=min(gamma0, gamma / 2), attack=adv)

    def draw(anchor: int, method: str, gamma: float):
        x0, y, adv = attack(anchor)
        if not adv.success:
            print(f"anchor {anchor}: the attack finds no adversarial example, nothing to prune around")
            return
        sub = substitute(anchor, method, gamma)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        substitute_views(f, sub.network, x0, y, d_adv=sub.d_adv, x_adv=sub.x_adv, axes=axes,
                         title=f"{method}, {sub.num_pruned}/{sub.num_hidden} replaced,", resolution=resolution)
        plt.show()

    return W.interactive(
        draw,
        anchor=W.Dropdown(options=list(range(len(anchors))), value=0, description="anchor"),
        method=W.Dropdown(options=[m.value for m in PruneMethod], value="linear", description="pruner"),
        gamma=W.SelectionSlider(options=list(gammas), value=gammas[len(gammas) // 2], description="gamma"),
    )
