"""Multi-scale inference: the coarse grid's candidates join the main grid's in world coordinates, once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from blob_runners import dog_runner

from data_adapters.synth.ct_phantom import make_phantom
from verticals.medical.config import MedicalConfig
from verticals.medical.infer import detect_case
from verticals.medical.preprocess import Case, resample, window

SPACING = (2.5, 1.8, 1.8)


_blob_runner = dog_runner(1.5, 3.0)  # prefers blobs of ~3 voxels radius


def _case(cfg) -> tuple[Case, np.ndarray, np.ndarray]:
    hu, nodules = make_phantom(np.random.default_rng(7), (56, 128, 128), SPACING, (8.0, 24.0), 4)
    image, sp = resample(window(hu, cfg), SPACING, cfg.spacing_mm)
    case = Case("uid", image, sp, (-100.0, -120.0, -300.0), np.eye(3))
    truth = case.to_world(np.array([c / np.array(sp) for c, *_ in nodules]))
    return case, truth, np.array([d for _, d, *_ in nodules], float)


def _hit(found: dict, truth: np.ndarray, diameters: np.ndarray) -> np.ndarray:
    dist = np.linalg.norm(found["xyz"][:, None] - truth[None], axis=-1)
    return (dist < diameters[None] / 2).any(0)


def test_extra_grid_adds_candidates_once_in_world_coordinates():
    cfg = replace(MedicalConfig(), window=32, tta_flip_axes=(), fp_reduction=False, min_probability=0.0)
    case, truth, diameters = _case(cfg)
    single = detect_case(case, _blob_runner, replace(cfg, extra_spacings_mm=()), masses=False)
    skipped = detect_case(case, _blob_runner, replace(cfg, extra_spacings_mm=(3.0,)), masses=False, extra_scales=False)
    assert np.array_equal(single["xyz"], skipped["xyz"])  # extra_scales=False is the main grid alone

    multi = detect_case(case, _blob_runner, replace(cfg, extra_spacings_mm=(3.0,)), masses=False)
    assert len(multi["xyz"]) > len(single["xyz"]) or not np.array_equal(multi["xyz"], single["xyz"])
    # merged by one NMS: no two candidates closer than nms_mm
    gaps = np.linalg.norm(multi["xyz"][:, None] - multi["xyz"][None], axis=-1) + np.eye(len(multi["xyz"])) * 1e9
    assert gaps.min() >= cfg.nms_mm
    # best first, and the main-grid voxel coordinates agree with the world ones
    assert np.all(np.diff(multi["probability"]) <= 0)
    assert np.allclose(case.to_world(multi["zyx"]), multi["xyz"], atol=1e-6)
    # nothing the main grid found is lost: each of its candidates survives or a better one is within nms_mm
    for xyz, p in zip(single["xyz"], single["probability"]):
        near = np.linalg.norm(multi["xyz"] - xyz, axis=1) < np.maximum(cfg.nms_mm, multi["diameter_mm"] / 2) + 1e-6
        assert near.any() and multi["probability"][near].max() >= p - 1e-9
    assert _hit(multi, truth, diameters).sum() >= _hit(single, truth, diameters).sum()
