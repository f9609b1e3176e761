"""Flip test-time augmentation must map the flipped pass back onto the same grid, to the sub-voxel.

A fake runner stands in for a perfectly equivariant detector: it finds the blob in its window by
its intensity centroid and writes the ideal CenterNet output (heat logit peaked at the centre's
cell, offset to the exact centre, log diameter). Any slip in the flip mapping (half a cell of a
plain flip on an even axis, an offset whose sign is not flipped) moves the decoded centre.
"""

from __future__ import annotations

import numpy as np
import pytest

from verticals.medical import postprocess
from verticals.medical.config import MedicalConfig
from verticals.medical.infer import _flip_onto_grid, _unflip_output, predict

STRIDE = 2


def _blob(shape, centre, sigma=1.5):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def _ideal_runner(x: np.ndarray) -> np.ndarray:
    tile = x[0, 0].astype(np.float64)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in tile.shape], indexing="ij")
    centre = [float((g * tile).sum() / tile.sum()) for g in grids]
    cells = np.meshgrid(*[np.arange(n // STRIDE, dtype=np.float64) for n in tile.shape], indexing="ij")
    out = np.zeros((5, *cells[0].shape), np.float32)
    out[0] = 4.0 - sum((k - c / STRIDE) ** 2 for k, c in zip(cells, centre))
    for axis in range(3):
        out[1 + axis] = centre[axis] / STRIDE - cells[axis]
    out[4] = np.log(6.0)
    return out[None]


def _decoded_centre(image, axes):
    cfg = MedicalConfig(window=32, tta_flip_axes=axes, score_threshold=0.5)
    centres, scores, diam = postprocess.decode(predict(image, _ideal_runner, cfg), cfg)
    return centres[0], diam[0]


@pytest.mark.parametrize("shape", [(20, 23, 26), (21, 24, 27)])  # odd and even lengths on every axis
@pytest.mark.parametrize("axes", [(), (0,), (1,), (2,), (0, 1, 2)])
def test_flip_tta_keeps_the_decoded_centre(shape, axes):
    centre = np.array([9.3, 11.7, 12.45])
    found, diam = _decoded_centre(_blob(shape, centre), axes)
    np.testing.assert_allclose(found, centre, atol=1e-6)
    assert diam == pytest.approx(6.0)


@pytest.mark.parametrize("size", [7, 8])
def test_flipped_cells_land_on_the_original_cells(size):
    image = np.arange(size, dtype=np.float32)[None, None, :].repeat(2, 0).repeat(2, 1)
    flipped, last = _flip_onto_grid(image, 2, STRIDE)
    cells = flipped[0, 0, ::STRIDE]  # the voxel under each output cell of the flipped pass
    n_cells = -(-size // STRIDE)
    back = _unflip_output(np.broadcast_to(cells, (5, 1, 1, len(cells))).copy(), 2, last, n_cells)
    np.testing.assert_array_equal(back[0, 0, 0], image[0, 0, ::STRIDE])  # cell m sees voxel 2m again
    assert np.all(back[3] == -back[0])  # the x offset changes sign
