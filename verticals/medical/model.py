"""The CPU-sized 3D nodule detector: a compact encoder-decoder with scSE and a CenterNet-style head.

Why anchor-free: nodules are near-spherical, so one centre heatmap plus a diameter and a sub-voxel
offset describe them fully (no anchor boxes to tune, no box matching), and the whole network is plain
convolutions that export to ONNX and run fast in ONNX Runtime on CPU. Output is at stride 2 of the
resampled grid; the offset head restores sub-voxel centre accuracy.

The false-positive reduction weights (a logistic model over candidate features, fitted after
training in train.py) live in buffers so federation, which exchanges state_dict only, carries them.
"""

from __future__ import annotations

import torch
from torch import nn

from common.blocks import attention

N_FP_FEATURES = 7


def _conv_block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.InstanceNorm3d(out_ch, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_ch, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


class NoduleDetector(nn.Module):
    """(B,1,D,H,W) windowed CT in [0,1] -> (B,5,D/2,H/2,W/2): heat logit, offset zyx, log diameter mm.

    D, H, W must be multiples of 16 (the encoder has four stride-2 stages).
    """

    def __init__(self, channels: tuple[int, ...] = (12, 24, 40, 64), attention_kind: str = "scse") -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.stem = nn.Sequential(nn.Conv3d(1, c1, 3, stride=2, padding=1, bias=False), nn.LeakyReLU(0.1, inplace=True))
        self.enc2 = _conv_block(c1, c2, stride=2)  # stride 4
        self.enc3 = _conv_block(c2, c3, stride=2)  # stride 8
        self.enc4 = nn.Sequential(_conv_block(c3, c4, stride=2), attention(attention_kind, 3, c4))  # stride 16
        self.up4 = nn.ConvTranspose3d(c4, c3, 2, stride=2)
        self.dec3 = nn.Sequential(_conv_block(2 * c3, c3), attention(attention_kind, 3, c3))
        self.up3 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = _conv_block(2 * c2, c2)
        self.up2 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = _conv_block(2 * c1, c1)
        self.heat = nn.Sequential(nn.Conv3d(c1, c1, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv3d(c1, 1, 1))
        self.regress = nn.Sequential(
            nn.Conv3d(c1, c1, 3, padding=1), nn.LeakyReLU(0.1, inplace=True), nn.Conv3d(c1, 4, 1)
        )
        nn.init.constant_(self.heat[-1].bias, -4.0)  # prior ~2% so the focal loss starts calm
        self.register_buffer("fp_weights", torch.zeros(N_FP_FEATURES))
        self.register_buffer("fp_bias", torch.zeros(()))
        self.register_buffer("fp_fitted", torch.zeros(()))
        # Platt scaling of the final logit, fitted on held-out scans (calibrate.py): (slope, intercept)
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.stem(x)
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        s4 = self.enc4(s3)
        d3 = self.dec3(torch.cat([self.up4(s4), s3], 1))
        d2 = self.dec2(torch.cat([self.up3(d3), s2], 1))
        d1 = self.dec1(torch.cat([self.up2(d2), s1], 1))
        return torch.cat([self.heat(d1), self.regress(d1)], 1)


def build_detector(cfg) -> NoduleDetector:
    """The detector for `cfg` (stride is fixed at 2 by the architecture)."""
    from common.errors import UserError

    if cfg.stride != 2:
        raise UserError(f"config key 'stride': this detector's output stride is 2, got {cfg.stride}")
    for key in ("patch", "window"):
        if getattr(cfg, key) % 16 or getattr(cfg, key) < 16:
            raise UserError(
                f"config key '{key}': must be a multiple of 16 (four stride-2 stages), got {getattr(cfg, key)}"
            )
    bad_axes = [a for a in getattr(cfg, "tta_flip_axes", ()) if a not in (0, 1, 2)]
    if bad_axes:
        raise UserError(f"config key 'tta_flip_axes': axes are 0 (z), 1 (y), 2 (x), got {bad_axes}")
    return NoduleDetector(tuple(cfg.channels), cfg.attention)
