"""From a DICOM series to the detector's grid: isotropic resampling and an HU window, with exact geometry.

The detector sees every scanner alike (one spacing, one intensity range); every coordinate it
produces is mapped back through the *effective* spacing of the resampled grid, which keeps world
coordinates exact whatever the scanner's pixel spacing or slice thickness.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_adapters import dicom


@dataclass
class Case:
    """One series on the model grid: image in [0,1] (z,y,x), geometry, and its nodules if annotated."""

    seriesuid: str
    image: np.ndarray
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: np.ndarray
    nodules_vox: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # zyx on the model grid
    diameters: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hu: np.ndarray | None = None  # original HU volume (kept for FP features and overlays when asked)
    source_spacing_zyx: tuple[float, float, float] | None = None

    def to_world(self, zyx: np.ndarray) -> np.ndarray:
        return dicom.voxel_to_world(self, zyx)

    def to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        return dicom.world_to_voxel(self, xyz)


def window(hu: np.ndarray, cfg) -> np.ndarray:
    """Clip HU to [hu_min, hu_max] and scale to [0, 1] (float32)."""
    scaled = (hu.astype(np.float32) - np.float32(cfg.hu_min)) / np.float32(cfg.hu_max - cfg.hu_min)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def resample(volume: np.ndarray, spacing_zyx, target_mm: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Trilinear resampling to ~`target_mm` voxels; returns the volume and its exact effective spacing.

    Grid points keep voxel 0 at the same world position (align_corners), so the origin is unchanged
    and the effective spacing is old_spacing * (n_old - 1) / (n_new - 1).
    """
    import torch

    old = np.array(volume.shape)
    sp = np.asarray(spacing_zyx, float)
    new = np.maximum(np.round((old - 1) * sp / target_mm).astype(int) + 1, 2)
    effective = tuple(float(s * (o - 1) / (n - 1)) if o > 1 else float(s) for s, o, n in zip(sp, old, new))
    if np.array_equal(new, old):
        return volume.astype(np.float32, copy=False), effective
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
        out = torch.nn.functional.interpolate(t, size=tuple(int(v) for v in new), mode="trilinear", align_corners=True)
    return out[0, 0].numpy(), effective


def case_from_series(series: dicom.Series, cfg, *, keep_hu: bool = False) -> Case:
    """A loaded, QC-passed series -> Case on the model grid (no nodules attached)."""
    image, spacing = resample(window(series.hu, cfg), series.spacing_zyx, cfg.spacing_mm)
    return Case(
        seriesuid=series.seriesuid,
        image=image,
        spacing_zyx=spacing,
        origin_xyz=series.origin_xyz,
        direction=np.asarray(series.direction),
        hu=series.hu if keep_hu else None,
        source_spacing_zyx=tuple(series.spacing_zyx),
    )


def attach_nodules(case: Case, nodules: list[tuple[np.ndarray, float]]) -> Case:
    """Put annotated nodules (world xyz, diameter mm) on the case's model grid."""
    if nodules:
        case.nodules_vox = case.to_voxel(np.stack([xyz for xyz, _ in nodules]))
        case.diameters = np.array([d for _, d in nodules], float)
    return case


def split_of(seriesuid: str, uids: list[str], fraction: float = 0.25) -> str:
    """Deterministic train/test assignment: the last `fraction` of uids by hash order is the test split."""
    order = sorted(uids, key=lambda u: hashlib.sha256(u.encode()).hexdigest())
    n_test = max(1, round(len(order) * fraction)) if len(order) > 1 else 0
    return "test" if seriesuid in order[len(order) - n_test :] else "train"


def load_cases(
    data: str | Path, annotations: str | Path | None, cfg, split: str = "all", *, keep_hu: bool = False
) -> tuple[list[Case], list[dict], list[dict]]:
    """Read every series (DICOM or volume file) under `data` and attach annotations; returns (cases, rejected, skipped).

    `split` is "all", "train", or "test"/"val" (the same held-out quarter: phantom sites are small).
    """
    from common.progress import track
    from data_adapters import volumes
    from verticals.medical.evaluate import read_annotations

    series_list, skipped = volumes.read_volumes(data, load=False)
    labels = read_annotations(annotations) if annotations is not None else {}
    ok = [s for s in series_list if s.status == "ok"]
    rejected = [s.record() for s in series_list if s.status != "ok"]
    uids = [s.seriesuid for s in ok]
    wanted = {"val": "test"}.get(split, split)
    cases = []
    for series in track(ok, "reading series"):
        if wanted != "all" and len(uids) > 1 and split_of(series.seriesuid, uids) != wanted:
            continue
        volumes.load_volume(series)
        if series.status != "ok":
            rejected.append(series.record())
            continue
        case = case_from_series(series, cfg, keep_hu=keep_hu)
        cases.append(attach_nodules(case, labels.get(series.seriesuid, [])))
        series.hu = None
    return cases, rejected, skipped
