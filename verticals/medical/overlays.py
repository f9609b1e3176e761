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


def write_mask_overlay(
    path: Path, image_hu: np.ndarray, region: np.ndarray, lungs: np.ndarray, centres_zyx, probs, masses_zyx
) -> str:
    """One PNG of three axial slices (model grid) through the lungs: the lung outline (green), the
    candidate region with its margin (yellow), the top candidates (red, numbered by rank) and masses
    (magenta); each of the top 10 candidates is drawn on the slice nearest to it, so where the top ranks sit
    (inside the lungs or not) can be checked at a glance."""
    import cv2

    zs = np.flatnonzero(lungs.any(axis=(1, 2))) if lungs.any() else np.arange(image_hu.shape[0])
    picks = [int(zs[int(len(zs) * q)]) for q in (0.25, 0.5, 0.75)]
    scale = max(1, int(np.ceil(320 / max(image_hu.shape[1:]))))
    panels = []
    centres = np.asarray(centres_zyx, float).reshape(-1, 3)[:10]
    for k in picks:
        img = cv2.cvtColor(_to_uint8(image_hu[k]), cv2.COLOR_GRAY2BGR)
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        for mask, colour in ((region, (0, 220, 220)), (lungs, (0, 200, 0))):
            m = cv2.resize(mask[k].astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, colour, 1)
        for rank, (c, p) in enumerate(zip(centres, probs), start=1):
            nearest = picks[int(np.argmin([abs(c[0] - z) for z in picks]))]
            if nearest != k:
                continue
            at = (int((c[2] + 0.5) * scale), int((c[1] + 0.5) * scale))
            cv2.circle(img, at, 3 * scale, (0, 0, 255), 1)
            cv2.putText(img, f"{rank}:{p:.2f}", (at[0] + 4, at[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)
        for c in masses_zyx:
            if abs(c[0] - k) <= 10:
                cv2.circle(img, (int((c[2] + 0.5) * scale), int((c[1] + 0.5) * scale)), 8 * scale, (255, 0, 255), 1)
        cv2.putText(img, f"z={k}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1, cv2.LINE_AA)
        panels.append(img)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.concatenate(panels, axis=1)):
            raise OSError(f"could not write {path}")
    return str(path)
