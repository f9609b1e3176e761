"""DefectNet: a DRAEM-style defect segmenter sized for a 2-core CPU (Zavrtanik et al., ICCV 2021).

Two sub-networks, trained together on good parts with synthetic anomalies pasted in:
- a reconstruction auto-encoder (no skip connections, so it cannot copy a defect through) learns to
  return the defect-free part;
- a discriminative U-Net sees the input beside its reconstruction and segments where they differ
  in a way that matters, which is what separates a real defect from normal texture variation.

Everything inspection needs travels inside the module as buffers (input normalisation, the image
threshold calibrated to a false-reject rate, the pixel threshold), and the forward pass returns it,
so an exported ONNX file (or a federated state_dict) is a complete inspector on its own.
Outputs: (map_logits (B,1,H,W), image_score (B,), thresholds (B,2) = [image, pixel]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.blocks import attention

from .grain import grain_z, ridge_kernels
from .grain_residual import CHANNELS as GRAIN_INPUT_CHANNELS
from .grain_residual import GrainResidual


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU: BatchNorm folds into the conv at export, so it is free at inference."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class Reconstructor(nn.Module):
    """Encoder to 1/8 resolution and back, without skips: it must re-draw the part from context."""

    def __init__(self, width: int, channels: int = 3) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(conv_bn(channels, w, 2), conv_bn(w, 2 * w, 2), conv_bn(2 * w, 4 * w, 2))
        self.mid = conv_bn(4 * w, 4 * w)
        self.dec3 = conv_bn(4 * w, 2 * w)
        self.dec2 = conv_bn(2 * w, w)
        self.dec1 = conv_bn(w, w)
        self.out = nn.Conv2d(w, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mid(self.encoder(x))
        h, w = x.shape[-2:]
        z = self.dec3(F.interpolate(z, size=(h // 4, w // 4), mode="bilinear", align_corners=False))
        z = self.dec2(F.interpolate(z, size=(h // 2, w // 2), mode="bilinear", align_corners=False))
        z = self.dec1(F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False))
        return self.out(z)


class Segmenter(nn.Module):
    """A small U-Net with attention (common.blocks) at the two coarsest scales."""

    def __init__(self, c_in: int, width: int, kind: str) -> None:
        super().__init__()
        w = width
        self.enc1 = conv_bn(c_in, w)
        self.enc2 = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))
        self.enc3 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))
        self.enc4 = nn.Sequential(conv_bn(4 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))
        self.att4 = attention(kind, 2, 4 * w)
        self.dec3 = conv_bn(8 * w, 4 * w)
        self.att3 = attention(kind, 2, 4 * w)
        self.dec2 = conv_bn(6 * w, 2 * w)
        self.dec1 = conv_bn(3 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.att4(self.enc4(e3))
        d3 = self.att3(self.dec3(torch.cat([_up(e4, e3), e3], 1)))
        d2 = self.dec2(torch.cat([_up(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([_up(d2, e1), e1], 1))
        return self.head(d1)


def patch_features(xn: torch.Tensor, patch: int, pool: int = 2) -> torch.Tensor:
    """Grey `patch` x `patch` neighbourhoods of the normalised input at 1/`pool` of the working resolution.

    pool 2 (the default) halves the cost; pool 1 keeps a 1-px line at half its contrast instead of a
    quarter (thin defects).

    Built from padded slices (Slice/Concat in ONNX, not a Conv), so INT8 quantization of the
    convolutions never touches the features the memory compares. Output (B, patch^2, H/pool, W/pool).
    """
    grey = xn.mean(1, keepdim=True)
    if pool > 1:
        grey = F.avg_pool2d(grey, pool)
    r = patch // 2
    padded = F.pad(grey, (r, r, r, r), mode="replicate")
    h, w = grey.shape[-2:]
    return torch.cat([padded[..., i : i + h, j : j + w] for i in range(patch) for j in range(patch)], 1)


def line_kernels(length: int, angles: int = 16) -> torch.Tensor:
    """(angles, 1, L, L) averaging kernels along 1-px lines through the centre, at k * 180 / angles degrees.

    A thin scratch only covers a sliver of a square window, so a box mean dilutes it below the
    threshold; the mean along the line's own direction keeps its full height while still averaging
    `length` pixels, so single noisy pixels are damped about as much as by a box.
    """
    length = length + (1 - length % 2)
    half = (length - 1) / 2
    t = torch.linspace(-half, half, 4 * length)
    kernels = torch.zeros(angles, 1, length, length)
    for k in range(angles):
        theta = math.pi * k / angles
        rows = torch.round(half - t * math.sin(theta)).long()
        cols = torch.round(half + t * math.cos(theta)).long()
        kernels[k, 0, rows, cols] = 1.0
    return kernels / kernels.sum(dim=(2, 3), keepdim=True)


def _grain_off_when_missing(state: dict, prefix: str, *args: object) -> None:
    """Checkpoints from before the grain stage load with it switched off (weight 0)."""
    state.setdefault(prefix + "grain_affine", torch.tensor([0.0, 1.0, 0.0]))
    state.setdefault(prefix + "grain_rms", torch.ones(16))


class DefectNet(nn.Module):
    """The inspector: normalise -> reconstruct -> segment -> (map logits, image score, thresholds)."""

    def __init__(
        self,
        *,
        width: int = 16,
        reconstruction: bool = True,
        attention_kind: str = "scse",
        model_stride: int = 2,
        image_size: int = 256,
        score_pool: int = 9,
        score_pooling: str = "box",
        score_line: int = 25,
        memory_size: int = 0,
        memory_patch: int = 5,
        memory_pool: int = 2,
        grain: bool = False,
        grain_line: int = 25,
        fine_input: bool = False,
        grain_input: bool = False,
    ) -> None:
        super().__init__()
        self.use_reconstruction = reconstruction
        self.reconstructor = Reconstructor(width) if reconstruction else None
        # fine_input: the segmenter sees every input pixel (pixel_unshuffle: 3 x stride^2 channels at
        # the working resolution) instead of their 2x2 means, so a 1 px line keeps its full contrast
        self.fine_input = fine_input and model_stride > 1
        c_image = 3 * model_stride**2 if self.fine_input else 3
        # grain_input: three maps of the input against its own local grain (grain_residual.py)
        self.grain_input = GrainResidual() if grain_input else None
        if grain_input:
            c_image += GRAIN_INPUT_CHANNELS
            self.register_buffer("grain_input_scale", torch.ones(1, GRAIN_INPUT_CHANNELS, 1, 1))
        self.segmenter = Segmenter(c_image + (3 if reconstruction else 0), width, attention_kind)
        self.stride = model_stride
        pool = max(3, round(score_pool * image_size / 256 / model_stride))
        self.pool = pool + (1 - pool % 2)  # odd, so the pooled map stays centred
        if score_pooling not in ("box", "line"):
            raise ValueError(f"score_pooling must be box or line, not {score_pooling!r}")
        self.score_pooling = score_pooling
        if score_pooling == "line":  # not persistent: derived from the config, old checkpoints still load
            line = max(3, round(score_line * image_size / 256 / model_stride))
            self.register_buffer("line_kernels", line_kernels(line), persistent=False)
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        self.register_buffer("image_threshold", torch.tensor(0.5))
        self.register_buffer("pixel_threshold", torch.tensor(0.5))
        self.register_buffer("calibrated", torch.tensor(0.0))  # 1 once fit has set stats and thresholds
        # patch memory (PatchCore-style nearest neighbour over good parts; memory.py fits it):
        # distance -> logit as (d - memory_loc) / memory_scale * memory_weight, added to the segmenter's
        self.memory_patch = memory_patch
        self.memory_pool = memory_pool
        self.memory_size = memory_size
        if memory_size > 0:
            self.register_buffer("memory", torch.zeros(memory_size, memory_patch**2))
            self.register_buffer("memory_norm", torch.zeros(memory_size))
            self.register_buffer("memory_affine", torch.tensor([0.0, 1.0, 0.0]))  # loc, scale, weight (0: off)
        # grain residual (grain.py): fixed oriented ridge detectors, calibrated like the memory
        self.grain = grain
        if grain:
            line = max(3, round(grain_line * image_size / 256 / model_stride))
            self.register_buffer("grain_kernels", ridge_kernels(line), persistent=False)
            self.register_buffer("grain_rms", torch.ones(self.grain_kernels.shape[0]))  # per direction, good parts
            self.register_buffer("grain_affine", torch.tensor([0.0, 1.0, 0.0]))  # loc, scale, weight (0: off)
            self._register_load_state_dict_pre_hook(_grain_off_when_missing)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Map logits at the working resolution, the normalised input there, and its reconstruction.

        The network works at 1/stride of the input (a 2x average pool first): a quarter of the
        compute at stride 2, which is what makes 256x256 run at line speed on two CPU cores.
        """
        full = self.normalise(x)
        xn = F.avg_pool2d(full, self.stride) if self.stride > 1 else full
        seen = F.pixel_unshuffle(full, self.stride) if self.fine_input else xn
        if self.grain_input is not None:
            seen = torch.cat([seen, self.grain_input(xn) / self.grain_input_scale], 1)
        if self.reconstructor is None:
            return self.segmenter(seen), xn, None
        recon = self.reconstructor(xn)
        return self.segmenter(torch.cat([seen, recon], 1)), xn, recon

    def memory_distance(self, xn: torch.Tensor) -> torch.Tensor:
        """Distance of every patch to its nearest good patch in memory, (B, 1, H/2, W/2) at working scale."""
        feats = patch_features(xn, self.memory_patch, self.memory_pool)
        b, c, h, w = feats.shape
        q = feats.flatten(2).transpose(1, 2)  # (B, HW, C)
        # |q - m|^2 = |q|^2 + (|m|^2 - 2 q.m): one MatMul against [-2m, |m|^2] and one ReduceMin
        # over the (B, HW, M) products; |q|^2 is added after the min (it does not depend on m)
        bank = torch.cat([-2 * self.memory, self.memory_norm[:, None]], 1)
        q1 = torch.cat([q, torch.ones_like(q[..., :1])], -1)
        d2 = (q1 @ bank.t()).amin(-1) + (q * q).sum(-1)
        return d2.clamp_min(0).sqrt().view(b, 1, h, w)

    def memory_logits(self, xn: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        loc, scale, weight = self.memory_affine[0], self.memory_affine[1], self.memory_affine[2]
        z = ((self.memory_distance(xn) - loc) / scale).clamp_min(0)  # evidence for a defect, never against
        return _up(z * weight, like)

    def grain_evidence(self, xn: torch.Tensor) -> torch.Tensor:
        """Calibrated line evidence max(0, (z - loc) / scale) at working scale (grain.py), before its weight."""
        loc, scale = self.grain_affine[0], self.grain_affine[1]
        return ((grain_z(xn, self.grain_kernels, self.grain_rms) - loc) / scale).clamp_min(0)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """Segmenter logits plus, when fitted, the memory's and the grain stage's calibrated logits."""
        small, xn, _ = self.segment(x)
        if self.memory_size > 0:
            small = small + self.memory_logits(xn, small)
        if self.grain:
            small = small + self.grain_affine[2] * self.grain_evidence(xn)
        return small

    def image_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Max of the locally averaged defect probability (DRAEM): one confident blob, not one pixel.

        `box`: mean over a pool x pool square. `line`: the larger of that and the best mean along a
        short line at 8 angles (line_kernels), so a 1-2 px scratch counts with its own height.
        """
        prob = torch.sigmoid(logits)
        pooled = F.avg_pool2d(prob, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False)
        score = pooled.amax(dim=(1, 2, 3))
        if self.score_pooling == "line":
            k = self.line_kernels
            pad = k.shape[-1] // 2
            # divide by the kernel's mass inside the image: a line touching the border is not diluted by padding
            mass = F.conv2d(torch.ones_like(prob[:1]), k, padding=pad)
            lines = F.conv2d(prob, k, padding=pad) / mass
            score = torch.maximum(score, lines.amax(dim=(1, 2, 3)))
        return score

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        small = self.fused(x)
        score = self.image_score(small)
        logits = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        thresholds = torch.stack([self.image_threshold, self.pixel_threshold]).unsqueeze(0)
        return logits, score, thresholds.expand(x.shape[0], 2)
