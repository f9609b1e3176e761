"""Where a real scan's top candidates sit: p, world centre, HU and distance to the filled lungs, and its masses.

Why: issue 16's real-scan check is "no candidate outside the lungs among a scan's top 10, and the
mass reported". `benchmarks/medical.py --real` lists the top 10 by position and probability; this
adds what a reader needs to judge "outside the lungs" without opening the overlay: the HU at each
centre and how far it lies from the filled lungs (0 inside; the candidate region adds a 10 mm margin
for juxtapleural nodules, where chest wall and mediastinum also lie). Never commits or copies a scan.

    python benchmarks/medical_real_top10.py MODEL_DIR SCAN_DIR ANNOTATIONS_CSV
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from common import runs
    from verticals.medical.infer import detect_case, fp_params, onnx_runner
    from verticals.medical.preprocess import load_cases

    if len(sys.argv) != 4:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    model, data, annotations = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    loaded = runs.load_model(model, expect="medical")
    cfg = loaded.cfg
    cases, _, _ = load_cases(data, annotations, cfg)
    runner = onnx_runner(model / "model.onnx")
    for case in cases:
        found = detect_case(case, runner, cfg, fp_params(loaded.model))
        lungs = found["anatomy"].lungs
        dist = ndimage.distance_transform_edt(~lungs) * cfg.spacing_mm
        hu = case.image * (cfg.hu_max - cfg.hu_min) + cfg.hu_min
        print(f"== {case.seriesuid} lung mask {found['lung_mask']} candidates {len(found['probability'])}")
        for rank, (zyx, xyz, p) in enumerate(zip(found["zyx"][:10], found["xyz"][:10], found["probability"][:10]), 1):
            at = tuple(np.clip(np.round(zyx).astype(int), 0, np.array(hu.shape) - 1))
            print(f"  rank {rank} p={p:.3f} xyz={np.round(xyz, 1).tolist()} HU={hu[at]:.0f}"
                  f" in_lungs={bool(lungs[at])} mm_outside_lungs={dist[at]:.1f}")  # fmt: skip
        truth = case.to_world(case.nodules_vox) if len(case.diameters) else np.zeros((0, 3))
        for m in found["masses"]:
            near = np.linalg.norm(truth - m["xyz"], axis=1).min() if len(truth) else float("nan")
            print(f"  mass xyz={np.round(m['xyz'], 1).tolist()} diameter={m['diameter_mm']:.1f} mm"
                  f" mm_from_nearest_annotation={near:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
