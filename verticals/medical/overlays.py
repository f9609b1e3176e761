"""Overlay PNGs a radiologist can check: the axial slice through each top candidate, a box of its size.

Only pixel data and the candidate's rank/probability/size are drawn: no patient name, ID, date or
institution ever reaches a PNG (the DICOM header is not consulted here at all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import atomic_path


def _to_uint8(hu_slice: np.ndarray, lo: float = -1000.0, hi: float = 400.0) -> np.ndarray:
    return (np.clip((hu_slice - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def write_overlays(
    out_dir: Path, hu: np.ndarray, spacing_zyx, centres_zyx: np.ndarray, diameters, probs, top: int
) -> list[str]:
    """Write `cand_XX.png` for the `top` candidates; centres are voxel indices into `hu` (z,y,x)."""
    import cv2

    written = []
    for rank, (c, d, p) in enumerate(zip(centres_zyx[:top], diameters[:top], probs[:top]), start=1):
        k = int(np.clip(round(float(c[0])), 0, hu.shape[0] - 1))
        img = cv2.cvtColor(_to_uint8(hu[k]), cv2.COLOR_GRAY2BGR)
        scale = max(1, int(np.ceil(384 / max(img.shape[:2]))))
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        half_y = max(d / 2 / spacing_zyx[1], 2.0) * 1.3 * scale
        half_x = max(d / 2 / spacing_zyx[2], 2.0) * 1.3 * scale
        cy, cx = (float(c[1]) + 0.5) * scale, (float(c[2]) + 0.5) * scale
        cv2.rectangle(img, (int(cx - half_x), int(cy - half_y)), (int(cx + half_x), int(cy + half_y)), (0, 0, 255), 2)
        label = f"#{rank} p={p:.2f} d={d:.0f}mm z={k}"
        cv2.putText(img, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 1, cv2.LINE_AA)
        path = out_dir / f"cand_{rank:02d}.png"
        with atomic_path(path, suffix=".png") as tmp:
            if not cv2.imwrite(str(tmp), img):
                raise OSError(f"could not write {path}")
        written.append(str(path))
    return written
