"""ipywidgets controls for the chapters: turn the knobs of a local substitute and see the boundary move.

A widget needs a running kernel to redraw.  So that a page without one (the HTML book, offline) still
shows what the widget shows, the widget's display also carries a static view: the controls' current
values and the figure they draw, as HTML.  A live frontend (Jupyter, Binder, Thebe) picks the widget; the
book's HTML build picks the static view (``nb_mime_priority_overrides`` in ``_config.yml``).
"""

from __future__ import annotations

import base64
import functools
import html
import io
from typing import Sequence

import matplotlib.pyplot as plt
import torch

from .attacks import min_distance_attack
from .network import ReluNetwork
from .plots import substitute_views
from .pruning import PruneMethod, prune

__all__ = ["substitute_explorer", "static_view"]


def static_view(controls: dict, fig) -> str:
    """HTML of a widget's current state: its controls as a line of ``name: value`` and the figure as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=90)
    png = base64.b64encode(buf.getvalue()).decode()
    items = " &middot; ".join(f"<strong>{html.escape(str(k))}</strong>: {html.escape(str(v))}"
                              for k, v in controls.items())
    return (f'<div class="lsub-widget-static"><p>{items} <em>(run the page to change them)</em></p>'
            f'<img alt="the figure the widget draws for these settings" src="data:image/png;base64,{png}"/></div>')


def substitute_explorer(
    f: ReluNetwork,
    anchors: torch.Tensor,
    *,
    gammas: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99),
    gamma0: float = 0.05,
    resolution: int = 200,
):
    """A widget with a pruner menu, a gamma slider and an anchor selector that redraws Figure 1's global
    and local views of the substitute.  Substitutes are computed on demand and cached.  ``gamma0`` (Algorithm
    1's step share) must lie below every gamma of the slider: it is used as given, never adjusted."""
    import ipywidgets as W

    if not gammas or not 0.0 < gamma0 < min(gammas):
        raise ValueError(f"gamma0 ({gamma0}) must lie in (0, min(gammas)); the smallest gamma is "
                         f"{min(gammas) if gammas else None}")

    anchors = torch.as_tensor(anchors, dtype=torch.float64)

    @functools.lru_cache(maxsize=None)
    def attack(i: int):
        x0 = anchors[i]
        y = int(f.predict(x0[None])[0])
        return x0, y, min_distance_attack(f, x0, y, seed=0)

    @functools.lru_cache(maxsize=None)
    def substitute(i: int, method: str, gamma: float):
        x0, y, adv = attack(i)
        return prune(f, x0, y, method=method, gamma=gamma, gamma0=gamma0, attack=adv)

    def figure(anchor: int, method: str, gamma: float):
        x0, y, adv = attack(anchor)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
        if not adv.success:
            fig.suptitle(f"anchor {anchor}: the attack finds no adversarial example, nothing to prune around")
            return fig
        sub = substitute(anchor, method, gamma)
        substitute_views(f, sub.network, x0, y, d_adv=sub.d_adv, x_adv=sub.x_adv, axes=axes,
                         title=f"{method}, {sub.num_pruned}/{sub.num_hidden} replaced,", resolution=resolution)
        return fig

    def draw(anchor: int, method: str, gamma: float):
        figure(anchor, method, gamma)
        plt.show()

    class Explorer(W.interactive):
        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs) or {}
            values = {w.description: w.value for w in self.kwargs_widgets}
            fig = figure(values["anchor"], values["pruner"], values["gamma"])
            bundle["text/html"] = static_view(values, fig)
            plt.close(fig)
            bundle["text/plain"] = "substitute explorer: " + ", ".join(f"{k}={v}" for k, v in values.items())
            return bundle

    return Explorer(
        draw,
        anchor=W.Dropdown(options=list(range(len(anchors))), value=0, description="anchor"),
        method=W.Dropdown(options=[m.value for m in PruneMethod], value="linear", description="pruner"),
        gamma=W.SelectionSlider(options=list(gammas), value=gammas[len(gammas) // 2], description="gamma"),
    )
