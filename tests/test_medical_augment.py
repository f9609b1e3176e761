"""Training-time domain randomisation of the CT detector (train.sample_scaled_patch, randomise_*).

The zoom must move nodule centres and diameters with the voxels (a wrong target teaches the wrong
place and size), the tissue map must keep tissues in order and air fixed, and the texture must stay
in aerated lung: each is checked on a synthetic ball, where the truth is known exactly.
"""

from __future__ import annotations

import numpy as np

from verticals.medical.config import MedicalConfig
from verticals.medical.preprocess import Case
from verticals.medical.train import fade_nodules, randomise_texture, randomise_tissue, sample_scaled_patch


def _ball_case(radius_vox: float = 5.0) -> tuple[Case, np.ndarray]:
    img = np.full((60, 70, 70), (-860 + 1000) / 1400, np.float32)  # aerated lung in the [0, 1] window
    centre = np.array([30.0, 36.0, 33.0])
    zz, yy, xx = np.mgrid[:60, :70, :70]
    img[(zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius_vox**2] = 1000 / 1400
    case = Case("x", img, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3), centre[None], np.array([4 * radius_vox]))
    return case, centre


def test_zoomed_patch_keeps_centre_and_scales_diameter() -> None:
    case, _ = _ball_case()
    cfg = MedicalConfig(patch=32, aug_scale=(0.75, 1.35))
    rng = np.random.default_rng(3)
    diameters = []
    for _ in range(20):
        patch, centres, diam = sample_scaled_patch(case, cfg, rng, positive=True)
        assert patch.shape == (32, 32, 32)
        c = centres[0]
        assert np.all(c >= 0) and np.all(c <= 31)
        # the ball's centre voxel stays nodule, and the ball's extent along each axis matches the target
        assert patch[tuple(np.round(c).astype(int))] > 0.6
        inside = patch > 0.43  # halfway between lung and nodule
        for axis in range(3):
            extent_vox = np.ptp(np.nonzero(inside)[axis]) + 1
            assert abs(extent_vox * 2.0 - diam[0]) < 0.25 * diam[0] + 4.0
        diameters.append(diam[0])
    assert min(diameters) < 18.0 < 22.0 < max(diameters)  # the zoom range is really used


def test_no_zoom_is_the_plain_patch() -> None:
    case, centre = _ball_case()
    cfg = MedicalConfig(patch=32, aug_scale=(1.0, 1.0))
    patch, centres, diam = sample_scaled_patch(case, cfg, np.random.default_rng(0), positive=True)
    assert diam[0] == 20.0 and patch.shape == (32, 32, 32)
    assert patch[tuple(np.round(centres[0]).astype(int))] > 0.7


def test_tissue_map_is_monotone_and_keeps_air() -> None:
    ramp = np.linspace(0, 1, 1401, dtype=np.float32)
    changed = 0
    for seed in range(30):
        out = randomise_tissue(ramp, np.random.default_rng(seed), 50.0, -1000.0, 400.0)
        assert np.all(np.diff(out) >= 0) and out[0] == 0.0 and abs(out[-1] - 1.0) < 1e-6
        changed += not np.allclose(out, ramp)
    assert 15 <= changed <= 30  # 80 % of patches on average
    assert np.array_equal(randomise_tissue(ramp, np.random.default_rng(0), 0.0, -1000.0, 400.0), ramp)


def test_texture_only_in_aerated_lung() -> None:
    case, _ = _ball_case()
    img = case.image
    outs = [randomise_texture(img, np.random.default_rng(s), 60.0, -1000.0, 400.0) for s in range(6)]
    textured = [o for o in outs if not np.array_equal(o, img)]
    assert textured
    for out in textured:
        soft = img > 0.5
        assert np.array_equal(out[soft], img[soft])  # the nodule is untouched
        assert 1.0 / 1400 < float(np.std(out[~soft] - img[~soft])) < 80.0 / 1400


def test_faded_nodule_is_fainter_softer_and_nothing_else_moves() -> None:
    case, centre = _ball_case()  # 20 mm ball of 0 HU in -860 HU lung, 2 mm voxels: radius 5 voxels
    img = case.image
    hu = lambda a: a * 1400 - 1000  # noqa: E731
    seen_core = seen_faint = 0
    for seed in range(12):
        out = fade_nodules(img, centre[None], np.array([10.0]), np.random.default_rng(seed), 1.0, -1000.0, 400.0)
        zz, yy, xx = np.ogrid[:60, :70, :70]
        dist = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
        assert np.array_equal(out[dist > 1.25 * 5], img[dist > 1.25 * 5])  # outside the nodule: untouched
        assert hu(out).min() >= -860.5  # never darker than the lung around it
        ring = hu(out[(dist > 3.5) & (dist <= 4.5)]).mean()
        mid = hu(out[(dist > 1.5) & (dist <= 2.5)]).mean()
        assert ring < -300 and mid > ring  # faint, and fainter towards the edge (a soft profile)
        centre_hu = hu(out[tuple(centre.astype(int))])
        seen_core += centre_hu > -100  # solid core kept (the ball is 0 HU)
        seen_faint += centre_hu < -300  # ground glass
    assert seen_core >= 2 and seen_faint >= 2  # both kinds are drawn
    untouched = fade_nodules(img, centre[None], np.array([10.0]), np.random.default_rng(0), 0.0, -1000.0, 400.0)
    assert untouched is img
