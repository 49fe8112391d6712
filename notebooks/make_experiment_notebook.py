"""Writes notebooks/experiment.ipynb, the parametrised experiment that papermill runs per dataset/network.

Kept as code so the notebook's source is reviewable; rerun after editing: python notebooks/make_experiment_notebook.py
"""
from pathlib import Path

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("# Experiment: exact distances before and after pruning\n\n"
       "This notebook is executed by papermill once per network; the parameters cell below is replaced by "
       "the run's parameters (see the first output).  For every anchor point it computes the exact distance to "
       "the decision boundary of the network $f$ by the paper's bisection over problem (2), then prunes $f$ "
       "with each pruner and $\\gamma$ (Algorithm 1) and computes the exact distance of each substitute $g$ the "
       "same way.  Every optimisation run is recorded; each finished anchor is appended to a JSON-lines file, "
       "so an interrupted run resumes where it stopped."),
    code("network = \"digits-mlp\"      # a model-zoo name (lsub_helpers.zoo.names())\n"
         "dataset = \"digits\"          # lsub_helpers.data.names()\n"
         "split = \"test\"\n"
         "data_root = None              # directory with the full data sets (or LSUB_DATA), or a CIFAR-10 .npz subset\n"
         "shared_root = None            # directory with public weights (for the public CNNa networks)\n"
         "n_anchors = 3\n"
         "first_anchor = 0\n"
         "methods = [\"constant\", \"linear\", \"activation\"]\n"
         "gammas = [0.9, 0.99]\n"
         "gamma0 = 0.25\n"
         "time_limit = 60.0             # seconds per optimisation run (the paper's limit)\n"
         "total_time_limit = 600.0      # seconds per distance computation\n"
         "tol = 1e-4                    # bisection: absolute width of the final interval of each distance\n"
         "not_certified_at = None       # if set: only anchors CROWN cannot certify at this radius (see the text)\n"
         "max_d_adv = None              # if set: only anchors the attack breaks within this distance\n"
         "compute = True                # False: only report the records already in `results` (no solving)\n"
         "results = \"results/experiment.jsonl\"\n"
         "use_dask = False\n"
         "dask_address = None\n"
         "title = None\n"
         "torch_threads = 1             # one thread per process: 2-5x faster attacks on a shared machine",
         metadata={"tags": ["parameters"]}),
    code("import math, platform, os, datetime\n"
         "import torch\n"
         "import matplotlib.pyplot as plt\n"
         "from IPython.display import Markdown, display\n"
         "from lsub_helpers import zoo, data\n"
         "from lsub_helpers.experiments import ExperimentConfig, load_records, run_experiment, select_anchors, table1, table1_markdown, runtime_points\n\n"
         "torch.set_num_threads(torch_threads)\n"
         "f = zoo.load(network, shared_root=shared_root, data_root=data_root)\n"
         "if str(data_root or '').endswith('.npz'):  # the exact CIFAR-10 test subsets shipped as npz\n"
         "    ds = data.load_cifar10_npz(data_root)\n"
         "else:\n"
         "    ds = data.load(dataset, split, root=data_root)\n"
         "xs = ds.x.reshape((len(ds.y),) + tuple(f.input_shape))\n"
         "acc = float((f.predict(xs) == ds.y).float().mean())\n"
         "display(Markdown(f\"**{title or network}** on {dataset} ({split}, {len(ds.y)} points): \"\n"
         "                 f\"{f.num_hidden} ReLUs in layers {f.layer_sizes}, accuracy {100 * acc:.2f}%. \"\n"
         "                 f\"Run on {platform.node()} ({os.cpu_count()} cores), {datetime.date.today()}.\"))"),
    md("Anchors are the first `n_anchors` correctly classified test points from `first_anchor` on.  With "
       "`not_certified_at = r` only those whose robustness at radius $r$ CROWN cannot prove are kept: on a "
       "certifiably trained network most points lie far from the boundary, where one MILP of $f$ takes longer "
       "than the time limit, so this spends the budget where exact distances are within reach.  It biases the "
       "sample towards the less robust points (every point with $d_{bnd} < r$ is kept, and some above).  "
       "With `max_d_adv = m`, only points the attack breaks within $m$ (so $d_{bnd} \\le m$) are kept.  "
       "Every record in the results file is shown, also those of an earlier run that selected differently."),
    code("config = ExperimentConfig(methods=tuple(methods), gammas=tuple(gammas), gamma0=gamma0,\n"
         "                          time_limit=time_limit, total_time_limit=total_time_limit, tol=tol)\n"
         "if compute:\n"
         "    indices = select_anchors(f, xs, ds.y, n_anchors, first=first_anchor, not_certified_at=not_certified_at,\n"
         "                             max_d_adv=max_d_adv)\n"
         "    print('anchors:', indices, '| config:', config)\n"
         "    records = run_experiment(f, xs, ds.y, indices, config=config, results=results,\n"
         "                             use_dask=use_dask, dask_address=dask_address, progress=False)\n"
         "else:  # the records of an earlier (possibly interrupted) run with this configuration\n"
         "    records = load_records(results)\n"
         "    print(f'report only: {len(records)} records of {results} | config: {config}')\n"
         "status = {s: sum(r['status'] == s for r in records) for s in ('ok', 'misclassified', 'no_adversarial')}\n"
         "exact_f = sum(r['status'] == 'ok' and r['f']['status'] == 'exact' for r in records)\n"
         "print(f\"anchors: {status}; exact d_bnd(f) within the time limits: {exact_f}\")"),
    md("## Table 1 for this network\n\n"
       "`rel. diff` is the mean of $|\\hat d_{bnd} - d_{bnd}|/d_{bnd}$ over anchors where both distances are exact "
       "(`collapsed` counts substitutes with no boundary at all: the constant pruner's boundary collapse); "
       "`prune/run` is the pruning time divided by the substitute's number of optimisation runs; the run times "
       "count only runs of $g$ whose $\\epsilon$ lies in the range $f$'s runs explored (the paper's fairness rule). "
       "When bounds alone decide every query of a small substitute there is no optimisation run to time: the "
       "last column, the whole exact-distance computation per anchor (bounds and MILPs, without the attack), "
       "shows that cost."),
    code("display(Markdown(table1_markdown(table1(records))))"),
    md("## Figure 3: runtime against verified $\\epsilon$\n\nEach point is one optimisation run that finished within its time limit."),
    code("fig, axes = plt.subplots(1, len(gammas), figsize=(5 * len(gammas), 4), sharey=True, squeeze=False)\n"
         "for ax, gm in zip(axes[0], gammas):\n"
         "    pts = runtime_points(records, gamma=gm)\n"
         "    for name, p in pts.items():\n"
         "        if p and name != 'constant':\n"
         "            t, e = zip(*p)\n"
         "            ax.scatter(t, e, s=12, alpha=0.7, label=name)\n"
         "    ax.set_xscale('symlog', linthresh=0.01)\n"
         "    ax.set_xlabel('time per optimisation run (s)'); ax.set_title(f'γ = {gm}')\n"
         "axes[0][0].set_ylabel('verified ε'); axes[0][0].legend()\n"
         "plt.show()"),
    md("## Per anchor"),
    code("for r in records:\n"
         "    if r['status'] != 'ok':\n"
         "        print(r['index'], r['status']); continue\n"
         "    f_ = r['f']\n"
         "    def show(s):\n"
         "        g = s.get('g')\n"
         "        if g is None:\n"
         "            return 'error'\n"
         "        if g['status'] != 'exact':\n"
         "            return g['status']\n"
         "        return 'no boundary' if g['value'] is None else '%.4f' % g['value']\n"
         "    subs = ', '.join(f\"{s['method'][:3]}{s['gamma']}: {show(s)}\" for s in r['substitutes'])\n"
         "    fv = 'timeout [%.4f, %.4f]' % (f_['lower'] or 0, f_['upper'] or math.inf) if f_['status'] != 'exact' else '%.4f' % f_['value']\n"
         "    print(f\"anchor {r['index']}: d_adv={r['d_adv']:.4f} d_bnd(f)={fv} ({len(f_['runs'])} runs) | {subs}\")"),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
})
Path(__file__).with_name("experiment.ipynb").write_text(nbf.writes(nb))
print("wrote notebooks/experiment.ipynb")
