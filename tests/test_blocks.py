"""scSE and CBAM in 1D, 2D and 3D: shapes, gradients, and ONNX Runtime parity at 1e-4."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.blocks import CBAM, SCSE, attention, conv_nd
from common.export import export_onnx, parity

SHAPES = {1: (2, 8, 20), 2: (2, 8, 10, 12), 3: (2, 8, 6, 7, 5)}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("block_cls", [SCSE, CBAM])
def test_block_keeps_shape_and_passes_gradients(block_cls, dims):
    torch.manual_seed(0)
    block = block_cls(dims, 8)
    x = torch.randn(*SHAPES[dims], requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_block_gates_lie_in_unit_interval(dims):
    """Attention re-weights features: each gate is a sigmoid, so |out| <= 2|x| for scSE and <= |x| for CBAM."""
    torch.manual_seed(1)
    x = torch.randn(*SHAPES[dims])
    with torch.no_grad():
        assert (SCSE(dims, 8)(x).abs() <= 2 * x.abs() + 1e-6).all()
        assert (CBAM(dims, 8)(x).abs() <= x.abs() + 1e-6).all()


class _Stack(nn.Module):
    """A conv followed by both blocks: what the verticals' models look like around attention."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.conv = conv_nd(dims)(3, 8, 3, padding=1)
        self.scse = attention("scse", dims, 8)
        self.cbam = attention("cbam", dims, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(self.scse(torch.relu(self.conv(x))))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_blocks_export_to_onnx_with_parity(dims, tmp_path):
    torch.manual_seed(2)
    model = _Stack(dims).eval()
    shape = (3, *SHAPES[dims][2:])
    path = export_onnx(model, (torch.randn(2, *shape),), tmp_path / f"blocks{dims}d.onnx")
    # a different batch size than the export example: the batch axis is dynamic
    assert parity(model, path, (torch.randn(5, *shape),), atol=1e-4) <= 1e-4


def test_factory_and_bad_arguments():
    assert isinstance(attention("none", 2, 4), nn.Identity)
    with pytest.raises(ValueError, match="unknown attention"):
        attention("transformer", 2, 4)
    with pytest.raises(ValueError, match="spatial_dims"):
        conv_nd(4)
