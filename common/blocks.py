"""Attention blocks for 1D, 2D and 3D feature maps: one implementation, `spatial_dims` a parameter.

- scSE (Roy et al., 2018): concurrent spatial and channel squeeze-and-excitation,
  `x * channel_gate(x) + x * spatial_gate(x)`. Cheap (two 1x1 convs and a pooled MLP) and helps
  small-object segmentation/detection, which is why the CT detector and the defect model use it.
- CBAM (Woo et al., 2018): channel attention (avg- and max-pooled MLP) followed by spatial
  attention (a k^d conv over channel-pooled maps).

Both are built only from ops that export to ONNX and run in ONNX Runtime (mean/amax reductions,
convolutions, sigmoid), so the same module serves training, export and INT8 quantization.
"""

from __future__ import annotations

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """The Conv class for `spatial_dims` (1, 2 or 3)."""
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    return _CONV[spatial_dims]


def _spatial_axes(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


class ChannelGate(nn.Module):
    """Squeeze (global average, optionally also max) over space, excite channels through an MLP."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 4, use_max: bool = False) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        hidden = max(channels // reduction, 1)
        self.use_max = use_max
        self.mlp = nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = _spatial_axes(x)
        logits = self.mlp(x.mean(dim=axes, keepdim=True))
        if self.use_max:
            logits = logits + self.mlp(x.amax(dim=axes, keepdim=True))
        return torch.sigmoid(logits)


class SpatialGate(nn.Module):
    """A per-position gate: a 1x1 conv over channels (scSE) or a k^d conv over avg/max maps (CBAM)."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 1, pooled: bool = False) -> None:
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.pooled = pooled
        in_channels = 2 if pooled else channels
        self.conv = conv(in_channels, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            x = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(x))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation: x*cSE(x) + x*sSE(x)."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channel = ChannelGate(spatial_dims, channels, reduction)
        self.spatial = SpatialGate(spatial_dims, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel(x) + x * self.spatial(x)


class CBAM(nn.Module):
    """Convolutional block attention: channel attention, then spatial attention, applied in turn."""

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 4, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelGate(spatial_dims, channels, reduction, use_max=True)
        self.spatial = SpatialGate(spatial_dims, channels, kernel_size=kernel_size, pooled=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


def attention(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """Factory used by vertical configs: "scse", "cbam" or "none"."""
    if kind == "scse":
        return SCSE(spatial_dims, channels)
    if kind == "cbam":
        return CBAM(spatial_dims, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown attention block '{kind}' (scse, cbam, none)")
