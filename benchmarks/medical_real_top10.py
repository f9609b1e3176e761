"""Issue 16's per-scan table on real scans: where each true lesion ranks, what sits above it, and masses.

Why: issue 16's real-scan check is "a real ~1.5 cm nodule ranked first, no candidate outside the
lungs among a scan's top 10, lung masses > 30 mm reported as masses". For every scan this prints
the top 10 (p, world centre, HU at the centre, distance to the filled lungs: 0 inside; the
candidate region adds a margin for juxtapleural nodules, where chest wall and mediastinum also lie),
then for each annotated lesion: its rank among the reported candidates (calibrated p >= the
`min_probability` floor) and among all of them (floor off), its probability, the distance from the
hitting candidate to the lesion's centre, and the false positives ranked above it; lesions > 30 mm
are looked for among the masses instead. A candidate hits a lesion when closer than its radius
(LUNA16). Never commits or copies a scan. Annotations may come from a label mask:
`fedsite medical label-annotations SERIESUID=LABEL.nrrd --out ann.csv`.

    python benchmarks/medical_real_top10.py MODEL_DIR SCAN_DIR ANNOTATIONS_CSV
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def lesion_rows(found: dict, truth_xyz: np.ndarray, diameters: np.ndarray, floor: float, mass_mm: float) -> list[str]:
    """One line per annotated lesion: rank (reported / all), p, distance, FPs above; masses for > mass_mm."""
    lines = []
    xyz, probs = found["xyz"], found["probability"]
    dist = np.linalg.norm(xyz[:, None] - truth_xyz[None], axis=-1) if len(xyz) else np.zeros((0, len(truth_xyz)))
    hit_any = (dist < diameters[None] / 2).any(1) if len(xyz) else np.zeros(0, bool)
    for j, (centre, d) in enumerate(zip(truth_xyz, diameters)):
        hits = np.flatnonzero(dist[:, j] < d / 2) if len(xyz) else np.zeros(0, int)
        head = f"  lesion {j + 1} d={d:.1f} mm xyz={np.round(centre, 1).tolist()}:"
        if d > mass_mm:
            near = [np.linalg.norm(m["xyz"] - centre) for m in found["masses"]]
            k = int(np.argmin(near)) if near else -1
            ok = k >= 0 and near[k] < d / 2
            lines.append(
                head
                + (
                    f" REPORTED AS MASS ({found['masses'][k]['diameter_mm']:.1f} mm, {near[k]:.1f} mm away)"
                    if ok
                    else " mass NOT reported"
                )  # fmt: skip
            )
        if not len(hits):
            lines.append(head + " no candidate hits it (nodule list)")
            continue
        first = int(hits[0])
        above = [(r + 1, float(probs[r])) for r in range(first) if not hit_any[r]]
        shown = ", ".join(f"#{r} p={p:.3f}" for r, p in above[:5]) + (" ..." if len(above) > 5 else "")
        reported = "reported" if probs[first] >= floor else f"NOT reported (p < floor {floor})"
        lines.append(
            head + f" rank {first + 1} p={probs[first]:.3f} {reported}, {dist[first, j]:.1f} mm from centre,"
            f" {len(above)} FP above{': ' + shown if above else ''}"
        )
    return lines


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
        # all candidates (floor off) so a lesion below the reporting floor still gets a rank
        found = detect_case(case, runner, cfg, fp_params(loaded.model), report_all=True)
        probs = found["probability"]
        n_rep = int((probs >= cfg.min_probability).sum())
        lungs = found["anatomy"].lungs
        dist = ndimage.distance_transform_edt(~lungs) * cfg.spacing_mm
        hu = case.image * (cfg.hu_max - cfg.hu_min) + cfg.hu_min
        outside = 0
        print(f"== {case.seriesuid} lung mask {found['lung_mask']} reported {n_rep} of {len(probs)} candidates")
        for rank, (zyx, xyz, p) in enumerate(zip(found["zyx"][:10], found["xyz"][:10], probs[:10]), 1):
            at = tuple(np.clip(np.round(zyx).astype(int), 0, np.array(hu.shape) - 1))
            outside += int(not lungs[at]) and p >= cfg.min_probability
            print(f"  rank {rank} p={p:.3f} xyz={np.round(xyz, 1).tolist()} HU={hu[at]:.0f}"
                  f" in_lungs={bool(lungs[at])} mm_outside_lungs={dist[at]:.1f}")  # fmt: skip
        print(f"  reported candidates outside the filled lungs in the top 10: {outside}")
        truth = case.to_world(case.nodules_vox) if len(case.diameters) else np.zeros((0, 3))
        for line in lesion_rows(found, truth, np.asarray(case.diameters, float), cfg.min_probability, cfg.mass_min_mm):
            print(line)
        for m in found["masses"]:
            near = np.linalg.norm(truth - m["xyz"], axis=1).min() if len(truth) else float("nan")
            print(f"  mass xyz={np.round(m['xyz'], 1).tolist()} diameter={m['diameter_mm']:.1f} mm"
                  f" mm_from_nearest_annotation={near:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
