"""Grain residual: a fixed, oriented line-detector bank beside the learned segmenter (no training).

Why: thin scratches and missing fibres on wood and brushed metal are 1-2 px lines a few percent
off the surrounding grain. The segmenter's 3x3 convolutions at half resolution see them only as a
faint sliver, and a square pooling window dilutes them further. A classical stage that looks along
lines does not: for each of `angles` directions, the mean along a short 1 px line minus the mean
of the two parallel lines `offset` px to either side (a ridge/valley detector, zero response to
flat shading and to stains). Each direction's response is divided by its RMS over the good
training parts, i.e. measured against the parts' OWN grain: along the grain the normal fibres
already give large responses, so only an unusually strong line stands out there, while across the
grain the fibres average out and even a faint line breaks the pattern. (Per-image RMS, which would
follow a rotated part, scored 0.02-0.05 lower image AUROC on validation strokes of the first
generator's wood and metal: benchmarks/grain_variants.py, README.) The per-pixel maximum over
directions is calibrated on held-out good parts like the patch memory (max(0, (z - q99) / std))
and added, with a weight chosen on validation data, to the segmenter's logits.

Everything is a fixed Conv + reductions in the model's graph, so the ONNX file stays a complete
inspector (deploy.py keeps these convolutions out of INT8 quantisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _line(size: int, length: int, theta: float, shift: float) -> torch.Tensor:
    """(size, size) mask of a 1-px line of `length` at angle `theta`, moved `shift` px perpendicular to it."""
    c, half = (size - 1) / 2, (length - 1) / 2
    t = torch.linspace(-half, half, 4 * length)
    rows = torch.round(c - t * math.sin(theta) + shift * math.cos(theta)).long()
    cols = torch.round(c + t * math.cos(theta) + shift * math.sin(theta)).long()
    mask = torch.zeros(size, size)
    mask[rows, cols] = 1.0
    return mask / mask.sum()


def ridge_kernels(length: int, angles: int = 16, offset: int = 2) -> torch.Tensor:
    """(angles, 1, S, S) zero-sum kernels: mean along a line minus the mean of its two parallel flanks.

    S = odd size that holds the line and its flanks at every angle.
    """
    length = max(3, length + (1 - length % 2))
    size = length + 2 * offset
    size += 1 - size % 2
    kernels = torch.zeros(angles, 1, size, size)
    for k in range(angles):
        theta = math.pi * k / angles
        centre = _line(size, length, theta, 0.0)
        flanks = 0.5 * (_line(size, length, theta, offset) + _line(size, length, theta, -offset))
        kernels[k, 0] = centre - flanks
    return kernels


def ridge_responses(xn: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """(B, angles, H, W) ridge responses of the grey level of a normalised (B, C, H, W) image."""
    grey = xn.mean(1, keepdim=True)
    pad = kernels.shape[-1] // 2
    return F.conv2d(F.pad(grey, (pad, pad, pad, pad), mode="replicate"), kernels)


def grain_z(xn: torch.Tensor, kernels: torch.Tensor, rms: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) line evidence: max over directions of |response| / that direction's RMS on good parts.

    `rms` is (angles,); a 3x3 max spreads a 1 px ridge over the width a smoothed map and a pooled
    image score can keep.
    """
    z = (ridge_responses(xn, kernels).abs() / rms.view(1, -1, 1, 1)).amax(1, keepdim=True)
    return F.max_pool2d(z, 3, stride=1, padding=1)
