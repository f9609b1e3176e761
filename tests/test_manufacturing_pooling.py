"""Image-score pooling (model.DefectNet.image_score): a thin line must count, a uniform map scores its value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from verticals.manufacturing.model import DefectNet, line_kernels


def _net(pooling: str) -> DefectNet:
    # 256 px at stride 2: a 9 px box and a 13 px line on the 128 px working map
    return DefectNet(width=4, reconstruction=False, image_size=256, score_pooling=pooling, score_line=25)


def _logits(prob: np.ndarray) -> torch.Tensor:
    p = torch.from_numpy(prob).float().clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))[None, None]


@pytest.mark.parametrize("pooling", ["box", "line"])
def test_uniform_map_scores_its_value(pooling: str) -> None:
    score = _net(pooling).image_score(_logits(np.full((128, 128), 0.3)))
    assert score.shape == (1,)
    assert abs(float(score[0]) - 0.3) < 1e-4


@pytest.mark.parametrize("angle", [0.0, 5.6, 30.0, 90.0, 135.0])
def test_one_pixel_line_beats_a_noise_blob_of_the_same_area(angle: float) -> None:
    rng = np.random.default_rng(0)
    background = rng.uniform(0.0, 0.05, (128, 128))
    line = background.copy()
    theta = math.radians(angle)
    for t in np.linspace(-30, 30, 400):  # a 1 px line, 61 px long, through the centre
        line[round(64 - t * math.sin(theta)), round(64 + t * math.cos(theta))] = 0.9
    area = int((line == 0.9).sum())
    blob = background.copy()
    side = math.isqrt(area) + 1
    patch = rng.uniform(0.0, 0.9, (side, side)).ravel()[:area]  # same area, same peak value, but noise
    region = blob[40 : 40 + side, 40 : 40 + side].ravel()
    region[:area] = patch
    blob[40 : 40 + side, 40 : 40 + side] = region.reshape(side, side)
    line_net, box_net = _net("line"), _net("box")
    line_score = float(line_net.image_score(_logits(line))[0])
    assert line_score > 0.7  # most of the line's own height (0.9): the window follows it at 16 angles
    assert line_score > float(line_net.image_score(_logits(blob))[0]) + 0.1
    assert line_score > float(box_net.image_score(_logits(line))[0]) + 0.3  # what the box mean loses


def test_line_kernels_are_normalised_lines() -> None:
    k = line_kernels(9, angles=8)
    assert k.shape == (8, 1, 9, 9)
    assert torch.allclose(k.sum(dim=(1, 2, 3)), torch.ones(8))
    assert int((k[0, 0] > 0).sum()) == 9 and bool((k[0, 0, 4] > 0).all())  # horizontal through the centre


def test_unknown_pooling_is_refused() -> None:
    with pytest.raises(ValueError, match="score_pooling"):
        _net("topk")
