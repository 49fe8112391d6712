"""Figure 1 at page width, and a widget that shows a rendered view without a kernel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lsub_helpers import data, plots, zoo  # noqa: E402
from lsub_helpers.attacks import min_distance_attack  # noqa: E402
from lsub_helpers.pruning import PruneMethod, prune  # noqa: E402


@pytest.fixture(scope="module")
def toy():
    f = zoo.load("toy2d")
    x0 = data.load("toy2d", "test").x[11].to(torch.float64)
    y = int(f.predict(x0[None])[0])
    return f, x0, y, min_distance_attack(f, x0, y, seed=0)


def test_substitute_grid_one_view_per_panel(toy):
    f, x0, y, adv = toy
    gammas, methods = [0.5, 0.99], list(PruneMethod)
    subs = {(m, g): prune(f, x0, y, method=m, gamma=g, gamma0=0.1, attack=adv) for m in methods for g in gammas}
    for view in ("global", "local"):
        fig = plots.substitute_grid(f, subs, x0, y, view=view, gammas=gammas, methods=methods, resolution=30)
        axes = fig.get_axes()
        assert len(axes) == len(gammas) * len(methods)
        w, h = fig.get_size_inches()
        assert w <= 11 and w / len(methods) >= 3, "panels too small to read at page width"
        titles = [ax.get_title() for ax in axes]
        assert all(m.value in t for m, t in zip(methods * len(gammas), titles))
        if view == "local":
            assert all("d(f)=" in t for t in titles)
            lo, hi = axes[0].get_xlim()
            assert hi - lo == pytest.approx(6 * subs[(methods[0], gammas[0])].d_adv, rel=1e-6)
        else:
            assert axes[0].get_xlim() == (0.0, 1.0)
        plt.close(fig)


def test_explorer_carries_a_static_view(toy):
    f, x0, _, _ = toy
    from lsub_helpers.widgets import substitute_explorer

    w = substitute_explorer(f, x0[None], resolution=30)
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # a live frontend still gets the widget
    html = bundle["text/html"]
    assert 'src="data:image/png;base64,' in html and "pruner</strong>: linear" in html
    assert " object at 0x" not in bundle["text/plain"] and "interactive(" not in bundle["text/plain"]


def test_explorer_refuses_a_step_share_not_below_every_gamma(toy):
    f, x0, _, _ = toy
    from lsub_helpers.widgets import substitute_explorer

    with pytest.raises(ValueError, match="gamma0"):
        substitute_explorer(f, x0[None], gammas=(0.1, 0.5), gamma0=0.1)  # used as given: never shrunk silently
