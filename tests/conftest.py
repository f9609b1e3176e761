"""Shared fixtures: the reference Task registered beside the real verticals, quiet progress."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# the suite runs on two pytest-xdist workers (pyproject's addopts): one core each, so each worker's
# torch, ONNX Runtime and OpenMP get one thread (two each would contend for the other worker's core)
_PARALLEL = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1) > 1
os.environ.setdefault("FEDSITE_THREADS", "1" if _PARALLEL else "2")
if _PARALLEL:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def reference_registered(monkeypatch):
    """Register tests/reference_task.py as vertical 'reference' for the duration of a test."""
    from common import registry

    monkeypatch.setitem(registry.VERTICALS, "reference", "reference_task")
    import reference_task

    return reference_task.TASK


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (timing on a shared 2-core machine), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_finance(tmp_path_factory):
    """(transactions.csv, model dir): one tiny finance model for the tests that only read it."""
    from finance_tiny import train_tiny

    return train_tiny(tmp_path_factory.mktemp("finance-tiny"))
