"""Torch's intra-op threads around the fraud network's fit: one by default, the operator's when set, restored."""

from __future__ import annotations

import torch

from common.device import small_op_threads


def test_one_thread_by_default_the_operators_when_set_and_restored(monkeypatch):
    monkeypatch.delenv("FEDSITE_THREADS", raising=False)
    before = torch.get_num_threads()
    with small_op_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("FEDSITE_THREADS", "2")
    with small_op_threads():
        assert torch.get_num_threads() == 2
    with small_op_threads(3):  # the config's `threads` wins over the environment
        assert torch.get_num_threads() == 3
    try:
        with small_op_threads(1):
            raise RuntimeError("a failing fit")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before
