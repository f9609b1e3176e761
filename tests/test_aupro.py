"""AU-PRO against a threshold-by-threshold implementation written from the definition.

The reference below shares nothing with verticals/manufacturing/evaluate.py: regions come from
skimage's labelling (8-connected), every distinct score is tried as a threshold in a plain loop,
PRO is the mean over regions of the fraction of the region at or above it, FPR the fraction of
defect-free pixels at or above it, and the area up to FPR 0.3 is integrated piece by piece.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label

from verticals.manufacturing.evaluate import aupro, pro_curve


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    regions = []
    for heat, mask in zip(maps, masks):
        labelled = label(mask, connectivity=2)
        regions += [heat[labelled == k] for k in range(1, labelled.max() + 1)]
    ok_scores = maps[~masks]
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = float(np.mean(ok_scores >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    points.append((1.0, 1.0))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= limit:
            break
        if x1 > limit:  # cut the last segment at the limit
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2.0
    return area / limit


def _random_case(rng: np.random.Generator, n: int = 5, size: int = 20, levels: int | None = None):
    masks = np.zeros((n, size, size), bool)
    for i in range(n - 1):  # the last image is a good one: an empty mask
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 7, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.random(masks.shape) + masks * rng.uniform(0.0, 0.8)
    if levels:  # coarse scores: many ties, as 8-bit anomaly maps have
        maps = np.round(maps * levels) / levels
    return maps, masks


@pytest.mark.parametrize("seed", range(6))
def test_aupro_equals_a_threshold_by_threshold_implementation(seed):
    rng = np.random.default_rng(seed)
    maps, masks = _random_case(rng, levels=[None, 8, 50][seed % 3])
    assert aupro(maps, masks) == pytest.approx(_reference_aupro(maps, masks), abs=1e-9)
    assert aupro(maps, masks, max_fpr=0.05) == pytest.approx(_reference_aupro(maps, masks, 0.05), abs=1e-9)


def test_regions_weigh_the_same_whatever_their_size():
    masks = np.zeros((1, 40, 40), bool)
    masks[0, 1:3, 1:3] = True  # 4 pixels
    masks[0, 10:30, 10:30] = True  # 400 pixels
    maps = np.zeros(masks.shape)
    maps[0, 10:30, 10:30] = 1.0  # only the big region is found
    fpr, pro = pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0  # half the regions, whatever the pixel share
    # PRO 0.5 until every remaining pixel enters at once (FPR 1): the area to 0.3 is a 0.5 plateau plus
    # the rising segment from (0, 0.5) towards (1, 1) cut at 0.3
    assert aupro(maps, masks) == pytest.approx(0.5 + 0.5 * 0.3 / 2, abs=1e-12)
    assert aupro(maps + masks, masks) == pytest.approx(1.0)
    assert aupro(maps, np.zeros_like(masks)) == 0.0
