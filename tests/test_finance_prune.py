"""The fraud model's pairing of payer/payee rows, and what structural pruning can cut because of it."""

from __future__ import annotations

import pytest
import torch

from verticals.finance import TASK
from verticals.finance.model import pair_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pair_rows_is_the_reshape_it_replaces():
    x = torch.randn(10, 7, requires_grad=True)
    assert torch.equal(pair_rows(x), x.reshape(5, 14))
    pair_rows(x).square().sum().backward()
    assert torch.equal(x.grad, 2 * x.detach())


def test_tcn_residual_and_gnn_update_channels_are_prunable():
    """With `reshape(B, 2C)` Torch-Pruning cut the wrong head columns, so these groups (the TCN's
    residual channels and the GNN's node update: most of the model's arithmetic) were left whole."""
    from common.compress.prune import breaking_groups, output_layers

    cfg = TASK.tiny_config()
    torch.manual_seed(0)
    model = TASK.build_model(cfg).eval()
    example = TASK.example_input(cfg)
    broken = breaking_groups(model, example, output_layers(model, example))
    assert "tcn.network.0.downsample" not in broken
    assert "gnn.update.0" not in broken
