"""A campaign runner as a separate process, for the fault tests: ``python tests/campaign_runner.py RESULTS N [ADDRESS]``.

Runs ``N`` random anchors of the embedded 2-D toy network, on the Dask scheduler at ``ADDRESS`` if given.
"""
import sys

import torch

from lsub_helpers.experiments import ExperimentConfig, load_anchor_data, run_experiment, sample_anchors

CONFIG = ExperimentConfig(methods=("linear", "activation"), gammas=(0.5, 0.9), time_limit=20.0,
                          total_time_limit=60.0, tol=1e-4)


def main() -> None:
    torch.set_num_threads(1)
    results, n = sys.argv[1], int(sys.argv[2])
    address = sys.argv[3] if len(sys.argv) > 3 else None
    f, xs, ys = load_anchor_data("toy2d", "toy2d")
    indices = sample_anchors(f, xs, ys, n, seed=0)
    print("anchors", indices, flush=True)
    run_experiment(f, xs, ys, indices, config=CONFIG, results=results, dask_address=address, progress=False)


if __name__ == "__main__":
    main()
