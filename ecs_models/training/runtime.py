"""One seed for a whole run, and the device by name: shared by centralized runs, the federated
clients and the coordinator."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch from one integer; returns a generator for data loaders."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (third-party code drawing from the global RNG)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
