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


def test_blob_soft_widens_the_stain_edge():
    """`blob_soft` draws diffuse blobs: more of the changed area is a faint rim than with sharp edges."""
    from verticals.manufacturing.anomalies import _intensity_blob

    flat = np.full((128, 128, 3), 0.5, np.float32)

    def rim_share(soft: float) -> float:
        rng = np.random.default_rng(4)
        shares = []
        for _ in range(6):
            out, mask = _intensity_blob(flat, rng, soft)
            change = np.abs(out - flat).max(-1)
            peak = change.max()
            shares.append(((change > 0.05 * peak) & (change < 0.5 * peak)).sum() / max((change > 0.5 * peak).sum(), 1))
            assert mask.any() and change[mask > 0].min() > 0  # the mask marks changed pixels only
        return float(np.mean(shares))

    assert rim_share(6.0) > 1.5 * rim_share(0.5)


def test_fine_input_lets_the_segmenter_see_sub_pool_detail():
    """A 1-px checkerboard averages away under the 2x2 pool; with `fine_input` the segmenter still sees it."""
    import torch

    from verticals.manufacturing.model import DefectNet

    flat = torch.full((1, 3, 64, 64), 0.5)
    checker = flat + 0.2 * ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float() - 0.1
    for fine, differs in ((False, False), (True, True)):
        torch.manual_seed(0)
        model = DefectNet(width=4, image_size=64, fine_input=fine).eval()
        with torch.no_grad():
            a, b = model.segment(flat)[0], model.segment(checker)[0]
        assert bool((a - b).abs().max() > 1e-4) == differs
