"""Device selection, seeding and thread count in one place.

Sites run on anything from a 2-core VM to a GPU workstation, so the device is chosen at run time:
CUDA when present, otherwise CPU. `seed_everything` makes CPU runs repeatable (`--seed`).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def select_device(prefer: str | None = None) -> torch.device:
    """Return `prefer` if given (e.g. "cpu"), else CUDA when available, else CPU.

    FEDSITE_DEVICE overrides both, which lets a site pin a job to the CPU without code changes.
    """
    choice = os.environ.get("FEDSITE_DEVICE") or prefer
    if choice:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; ask torch for deterministic kernels where they exist."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (None: FEDSITE_THREADS, else torch's default)."""
    n = n or int(os.environ.get("FEDSITE_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
