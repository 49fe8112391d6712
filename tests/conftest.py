"""Test-wide settings: one torch thread (the networks in tests are small; threads only add overhead)."""

import torch

torch.set_num_threads(1)
