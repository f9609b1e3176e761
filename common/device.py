"""Device selection, seeding and thread count in one place.

Sites run on anything from a 2-core VM to a GPU workstation, so the device is chosen at run time:
CUDA when present, otherwise CPU. `seed_everything` makes CPU runs repeatable (`--seed`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

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


def env_threads() -> int:
    """FEDSITE_THREADS as an int (0 when unset or empty: the library's own choice)."""
    return int(os.environ.get("FEDSITE_THREADS", "0") or 0)


def set_threads(n: int | None) -> None:
    """Limit torch's intra-op threads (None: FEDSITE_THREADS, else torch's default)."""
    n = n or env_threads()
    if n > 0:
        torch.set_num_threads(n)


@contextmanager
def small_op_threads(n: int = 0) -> Iterator[None]:
    """Run torch on `n` intra-op threads inside the block (0: FEDSITE_THREADS when set, else 1), then restore.

    Why: a model of small ops (the fraud network: batches of short sequences and ego-graphs) gains
    nothing from a second intra-op thread on an idle 2-core machine (`finance train --quick`: network
    fit 3.2-4.1 s with torch's default of 2 threads, 3.4 s with 1), but when another process holds
    a core every op's second thread waits for it: 12.5 s with 2 threads vs 3.4 s with 1 next to one
    busy process, and 30-50x slower under heavier load (2026-12-04).
    """
    n = n or env_threads() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
