"""Sensitivity per nodule size at fixed false-positive rates, from a candidates.csv (no model needed).

Why: a CPM mixes 4 mm ground glass with 25 mm solid nodules; what a radiologist asks first is
whether the large ones are found. Candidates on the findings of an optional masses.csv (the held-out
generator's lung masses, not nodules) are ignored, as benchmarks/medical.py does.

    python benchmarks/medical_sizes.py CANDIDATES_CSV ANNOTATIONS_CSV [MASSES_CSV]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BINS = ((3.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 31.0))
RATES = (1.0, 4.0)


def size_table(candidates: Path, annotations: Path, masses: Path | None = None) -> list[dict]:
    """Per size bin: nodules, and the fraction found at each of RATES false positives per scan."""
    from verticals.medical.evaluate import read_annotations, read_candidates, score

    truth = read_annotations(annotations)
    excluded = read_annotations(masses, "masses") if masses is not None and masses.stat().st_size > 60 else None
    scans, per_scan = score(read_candidates(candidates), truth, excluded=excluded)
    fp = np.sort(np.concatenate([p[1] for p in per_scan]))[::-1]
    tp = np.concatenate([p[0] for p in per_scan])
    diameters = np.concatenate([[d for _, d in truth.get(uid, [])] for uid in scans])
    rows = []
    for lo, hi in BINS:
        sel = (diameters >= lo) & (diameters < hi)
        row = {"bin_mm": f"{lo:g}-{hi:g}", "nodules": int(sel.sum())}
        for rate in RATES:
            k = int(rate * len(scans))  # the k-th highest false positive sets the threshold
            threshold = fp[k - 1] if 0 < k <= len(fp) else -np.inf
            row[f"at_{rate:g}_fp"] = float((tp[sel] > threshold).mean()) if sel.any() else float("nan")
        rows.append(row)
    return rows


def main() -> None:
    args = [Path(a) for a in sys.argv[1:]]
    for row in size_table(*args):
        rates = "  ".join(f"{r:g} FP/scan {row[f'at_{r:g}_fp']:.2f}" for r in RATES)
        print(f"{row['bin_mm']:>6s} mm  {row['nodules']:3d} nodules  {rates}")


if __name__ == "__main__":
    main()
