"""Grain residual input: the part measured against its OWN local grain, as extra segmenter channels.

Why: on wood and brushed metal a thin scratch or a missing fibre differs from the grain beside it by a
few percent, while the grain itself (ring edges, fibres) varies by tens of percent. The segmenter's
3x3 convolutions must learn the orientation of the grain from good parts before they can tell a
line from a fibre; here a fixed, oriented stage does that part and hands the network three maps in
which the grain is (mostly) gone:

1. the local dominant orientation from the structure tensor (Sobel gradients, products smoothed by
   a Gaussian wide enough to follow the grain rather than a single defect), as soft weights over
   `angles` line directions (softmin of each direction's gradient energy: the grain runs where the
   grey level changes least);
2. `residual` = grey - its mean along that direction: the grain's lines vanish, marks ACROSS or
   off the grain stand out;
3. `bright` / `dark` = a symmetric bar test along that direction: the mean along the line minus
   each of its two parallel flanks `offset` px away, the smaller of the two (both flanks darker: a
   bright line; both lighter: a dark line). A ring edge (one flank lighter, one darker) gives
   nothing, so a line ALONG the grain is seen apart from the grain's own edges.

No atan2 or gather: weights are a Softmax over fixed directions and every filter is a fixed Conv, so
the ONNX graph stays a complete inspector (deploy.py keeps these convolutions out of INT8: they
compare few-percent differences). The three maps are divided by their standard deviation over good
training parts (buffer `grain_input_scale`, set with the input normalisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .grain import _line

CHANNELS = 3


def orientation_kernels(angles: int) -> torch.Tensor:
    """(angles, 3) coefficients so that E_k = c . (jxx, jyy, jxy) is the gradient energy along direction k."""
    rows = []
    for k in range(angles):
        t = math.pi * k / angles
        c, s = math.cos(t), math.sin(t)
        rows.append([c * c, s * s, -2 * c * s])  # _line runs along (cos t, -sin t) in image rows
    return torch.tensor(rows, dtype=torch.float32)


def line_kernels(length: int, angles: int) -> torch.Tensor:
    """(angles, 1, L, L): the mean along a 1 px line through the centre, per direction (grain._line)."""
    length = max(3, length + (1 - length % 2))
    return torch.stack([_line(length, length, math.pi * k / angles, 0.0) for k in range(angles)])[:, None]


def flank_offsets(angles: int, offset: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per direction, the (row, column) steps to its two flanks `offset` px to either side.

    The flanks are the direction's own line means read there (grain._line moves a line by
    +offset * (cos, sin) in (row, column)), so they cost two slices, not two more oriented filters.
    """
    out = []
    for k in range(angles):
        theta = math.pi * k / angles
        dr, dc = round(offset * math.cos(theta)), round(offset * math.sin(theta))
        out.append(((dr, dc), (-dr, -dc)))
    return out


def gaussian_1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (radius 2 sigma)."""
    r = max(1, round(2 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def sobel_kernels() -> torch.Tensor:
    """(2, 1, 3, 3): d/dx and d/dy."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    return torch.stack([gx, gx.t()])[:, None]


class GrainResidual(torch.nn.Module):
    """(B, C, H, W) normalised image -> (B, 3, H, W) [residual, bright bar, dark bar] against the local grain.

    `length` and `offset` are in pixels of the map it is given (the working resolution), `sigma` the
    structure tensor's smoothing there, `temperature` the softmin's sharpness (as a fraction of the
    local gradient energy: 0.05 gives a neighbouring direction 22.5 deg off about 5 % of the weight).
    """

    def __init__(
        self, length: int = 11, angles: int = 8, offset: int = 2, sigma: float = 6.0, temperature: float = 0.05
    ) -> None:
        super().__init__()
        self.angles = angles
        self.temperature = temperature
        self.register_buffer("sobel", sobel_kernels(), persistent=False)
        g = gaussian_1d(sigma)
        self.register_buffer("smooth_x", g.view(1, 1, 1, -1).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("smooth_y", g.view(1, 1, -1, 1).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("energy", orientation_kernels(angles).view(angles, 3, 1, 1), persistent=False)
        self.register_buffer("lines", line_kernels(length, angles), persistent=False)
        self.offset = offset
        self.flanks = flank_offsets(angles, offset)

    def weights(self, grey: torch.Tensor) -> torch.Tensor:
        """(B, angles, H, W) soft weights of each line direction: high where the grain runs that way."""
        g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), self.sobel)
        gx, gy = g[:, :1], g[:, 1:]
        j = torch.cat([gx * gx, gy * gy, gx * gy], 1)
        rx, ry = self.smooth_x.shape[-1] // 2, self.smooth_y.shape[-2] // 2
        j = F.conv2d(F.pad(j, (rx, rx, 0, 0), mode="replicate"), self.smooth_x, groups=3)
        j = F.conv2d(F.pad(j, (0, 0, ry, ry), mode="replicate"), self.smooth_y, groups=3)
        e = F.conv2d(j, self.energy)  # (B, angles, H, W) gradient energy along each direction
        trace = j[:, :1] + j[:, 1:2]
        z = -e / (self.temperature * trace + 1e-6)
        w = torch.exp(z - z.amax(1, keepdim=True))  # softmax by hand: ORT's Softmax on axis 1 costs 4x more
        return w / w.sum(1, keepdim=True)

    def forward(self, xn: torch.Tensor) -> torch.Tensor:
        grey = xn.mean(1, keepdim=True)
        w = self.weights(grey)
        pad = self.lines.shape[-1] // 2
        centre = F.conv2d(F.pad(grey, (pad, pad, pad, pad), mode="replicate"), self.lines)
        o, (rows, cols) = self.offset, centre.shape[-2:]
        padded = F.pad(centre, (o, o, o, o), mode="replicate")
        at = lambda k, dr, dc: padded[:, k : k + 1, o + dr : o + dr + rows, o + dc : o + dc + cols]  # noqa: E731
        plus = torch.cat([at(k, *steps[0]) for k, steps in enumerate(self.flanks)], 1)
        minus = torch.cat([at(k, *steps[1]) for k, steps in enumerate(self.flanks)], 1)
        residual = grey - (w * centre).sum(1, keepdim=True)
        bright = (w * torch.minimum(centre - plus, centre - minus).clamp_min(0)).sum(1, keepdim=True)
        dark = (w * torch.minimum(plus - centre, minus - centre).clamp_min(0)).sum(1, keepdim=True)
        return torch.cat([residual, bright, dark], 1)
