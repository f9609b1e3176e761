"""A model's sensitivity to one shift at a time of the first phantom generator (ct_phantom.py only).

Why: the held-out generator (ct_holdout.py) may only be scored, never used to find out why the
detector misses; this varies ct_phantom.py's own parameters one at a time (nodules of 15-30 mm, or
4-14 mm with `small`; parenchyma texture, lung density, 5 mm slices, 40 HU noise, sharp or soft
kernel, spiculated nodules, half the nodule contrast) and prints, per nodule, the raw peak of the
centre heatmap within its radius, whether a candidate hits it, that candidate's final probability
and rank, and the predicted diameter.

    python benchmarks/medical_shift.py MODEL_DIR base,texture,lunglight,thick5,noise40,sharp,spic,lowc,soft 2
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage

from common import runs
from data_adapters.synth.ct_phantom import _tube, make_phantom
from verticals.medical.infer import detect_case, fp_params, onnx_runner, predict
from verticals.medical.preprocess import Case, resample, window


def shifted(hu: np.ndarray, name: str, rng: np.random.Generator, sp, nodules) -> np.ndarray:
    """`hu` with one property changed (see the module docstring); "base" and "thick5"/"small" leave it."""
    lung = hu < -600
    if name == "texture":  # smooth random field in aerated lung
        field = ndimage.gaussian_filter(rng.normal(0, 1, hu.shape).astype(np.float32), 1.5)
        hu = hu + np.where(lung, 60 * field / field.std() + rng.uniform(-60, 60), 0)
    elif name == "noise40":
        hu = hu + rng.normal(0, 40, hu.shape).astype(np.float32)
    elif name == "lunglight":
        hu = np.where(lung, hu + 80, hu)
    elif name == "sharp":
        hu = hu + (hu - ndimage.gaussian_filter(hu, 1.0))
    elif name == "soft":
        hu = ndimage.gaussian_filter(hu, 1.2)
    elif name == "spic":  # ten spicules of 0.6-1.2 mm radius per nodule
        for c, d, _, _ in nodules:
            for _ in range(10):
                u = rng.normal(0, 1, 3)
                u /= np.linalg.norm(u)
                end = np.asarray(c) + u * d * rng.uniform(0.8, 1.2)
                _tube(hu, sp, np.asarray(c) + u * d * 0.3, end, rng.uniform(0.6, 1.2), 20.0)
    elif name == "lowc":  # half the nodules' contrast to lung
        grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(hu.shape, sp)], indexing="ij", sparse=True)
        for c, d, _, _ in nodules:
            ball = sum((grid[i] - c[i]) ** 2 for i in range(3)) <= (d / 2) ** 2
            hu[ball] = -860 + (hu[ball] + 860) * 0.5
    return hu


def main() -> None:
    model_dir, names = sys.argv[1], sys.argv[2].split(",")
    n_scans = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    loaded = runs.load_model(model_dir, expect="medical")
    cfg = loaded.cfg
    runner = onnx_runner(f"{model_dir}/model.onnx")
    fp = fp_params(loaded.model)
    for name in names:
        rng = np.random.default_rng(77)  # the same anatomy and nodules for every shift
        rows = []
        for _ in range(n_scans):
            dz, nz = (5.0, 36) if name == "thick5" else (rng.uniform(2.3, 2.8), 72)
            px = rng.uniform(1.6, 1.9)
            diam = (4.0, 14.0) if name == "small" else (15.0, 30.0)
            hu, nodules = make_phantom(rng, (nz, 192, 192), (dz, px, px), diam, 4)
            hu = shifted(hu + rng.normal(0, 15, hu.shape).astype(np.float32), name, rng, (dz, px, px), nodules)
            img, sp = resample(window(hu, cfg), (dz, px, px), cfg.spacing_mm)
            heat = 1 / (1 + np.exp(-predict(img, runner, cfg)[0]))
            found = detect_case(
                Case("x", img, sp, (0.0, 0.0, 0.0), np.eye(3)), runner, cfg, fp, report_all=True, masses=False
            )
            for c_mm, d, kind, _ in nodules:
                cv = np.asarray(c_mm) / np.asarray(sp)
                r = max(int(d / 2 / (2 * cfg.spacing_mm)), 1)
                peak = float(heat[tuple(slice(max(a - r, 0), a + r + 1) for a in np.round(cv / 2).astype(int))].max())
                dist = np.linalg.norm((found["zyx"] - cv) * np.asarray(sp), axis=1) if len(found["zyx"]) else [1e9]
                j = int(np.argmin(dist))
                hit = bool(dist[j] < d / 2)
                prob = float(found["probability"][j]) if hit else 0.0
                rank = int((found["probability"] > prob).sum()) + 1 if hit else -1
                dpred = float(found["diameter_mm"][j]) if hit else 0.0
                rows.append((d, kind, peak, hit, prob, rank, dpred))
        print(f"== {name}")
        for d, kind, peak, hit, prob, rank, dpred in rows:
            print(f"  d={d:5.1f} {kind:12s} peak={peak:.3f} hit={int(hit)} p={prob:.3f} rank={rank} dpred={dpred:.1f}")
        reported = sum(r[3] and r[4] >= cfg.min_probability for r in rows)
        print(f"  reported {reported}/{len(rows)}, median peak {np.median([r[2] for r in rows]):.3f}")


if __name__ == "__main__":
    main()
