"""Orientation-aware training anomalies (anomalies.oriented_stroke) and the held-out generator."""

from __future__ import annotations

import numpy as np
import pytest

from data_adapters.synth.heldout_surfaces import HELDOUT_KINDS, heldout_defect, heldout_part, write_heldout
from verticals.manufacturing.anomalies import dominant_orientation, oriented_stroke, synthesize_anomaly


def _grain(angle: float, size: int = 96, seed: int = 0) -> np.ndarray:
    """Stripes running at `angle` (radians) with a little noise: a directional texture of known grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    g = 0.5 + 0.15 * np.sin(2 * np.pi * across / 7) + rng.normal(0, 0.01, (size, size))
    return np.repeat(g[..., None], 3, -1).astype(np.float32)


def _line_angle(mask: np.ndarray) -> float:
    """Principal axis of the mask's pixels, in [0, pi)."""
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(float))
    vals, vecs = np.linalg.eigh(cov)
    v = vecs[:, -1]
    return float(np.arctan2(v[1], v[0]) % np.pi)


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % np.pi
    return min(d, np.pi - d)


@pytest.mark.parametrize("grain", [0.0, 0.5, np.pi / 2, 2.4])
def test_dominant_orientation_recovers_the_grain(grain):
    angle, coherence = dominant_orientation(_grain(grain).mean(-1))
    assert _angle_diff(angle, grain) < 0.05 and coherence > 0.8
    iso = np.random.default_rng(1).normal(0.5, 0.1, (96, 96)).astype(np.float32)
    assert dominant_orientation(iso)[1] < 0.2  # isotropic noise has no grain


@pytest.mark.parametrize("grain", [0.0, 0.7, np.pi / 2])
@pytest.mark.parametrize("relation", ["along", "across"])
def test_oriented_stroke_follows_the_requested_relation(grain, relation):
    image = _grain(grain)
    rng = np.random.default_rng(3)
    want = grain + (np.pi / 2 if relation == "across" else 0.0)
    for _ in range(5):
        out, mask, angle = oriented_stroke(image, rng, relation)
        assert _angle_diff(angle, want) < 0.15
        assert _angle_diff(_line_angle(mask), want) < 0.15  # the drawn pixels run that way too
        changed = np.abs(out - image).max(-1) > 1e-6
        assert changed.any() and mask[changed].min() == 1.0  # every changed pixel is under the mask
        assert 0 < mask.mean() < 0.08  # thin: a stroke, not a blob
        assert np.abs(out - image).max() <= 0.35  # in the texture's own contrast range


def test_oriented_share_is_honoured():
    image = _grain(0.3, 64)
    rng = np.random.default_rng(0)
    thin = [synthesize_anomaly(image, rng, oriented=1.0)[1].mean() for _ in range(10)]
    assert max(thin) < 0.08  # every anomaly a thin stroke


def test_heldout_generator_writes_mvtec_layout(tmp_path):
    rng = np.random.default_rng(0)
    for kind in HELDOUT_KINDS:
        image, grain = heldout_part("wood", rng, 64)
        out, mask = heldout_defect(kind, image, grain, rng)
        assert mask.any() and np.abs(out - image).max(-1)[mask > 0].mean() > 0.005
        assert np.abs(out - image).max(-1)[mask == 0].max() < 0.2  # the defect stays near its mask
    root = write_heldout(tmp_path / "d", "brushed", seed=0, scale="tiny")
    assert len(list((root / "train" / "good").glob("*.png"))) == 10
    for kind in HELDOUT_KINDS:
        assert (root / "ground_truth" / kind / "000_mask.png").is_file()
