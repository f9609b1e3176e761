"""A hardened DICOM CT series reader: discovery, grouping, QC, slice sorting, HU, exact geometry.

Scanner folders are messy: any nesting, any file names, DICOMDIR indexes, localizers mixed into a
series, reversed instance numbers, gaps, other modalities, truncated copies, two phases in one
series, Enhanced (multi-frame) CT, headers written to 1 decimal or to 16. Everything here turns such
a folder into volumes whose geometry is exact (LPS millimetres, as ImagePositionPatient), or into a
reason saying why a file or series was not used. Nothing raises on bad data: the caller gets
`skipped` files and `rejected` series with reasons, and every valid series is still returned.

Tolerances follow the precision the header gives: a decimal string can be off by half a unit of its
last digit, so a 0.625 mm step written to 1 decimal is not a gap and a 4-decimal oblique orientation
is not a gantry tilt (`dicom_header.resolution`).

Geometry follows ITK/GDCM (docs/contracts.md): slices sorted by increasing position along the normal
(row cosines x column cosines), `origin_xyz` = ImagePositionPatient of the first sorted slice,
`spacing_zyx` = (slice distance, row spacing, column spacing), `direction` = 3x3 whose columns are
the directions of increasing column index, row index and slice index.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_adapters.dicom_header import PHASE_KEYS, SliceInfo, dcmread, quiet_pixels, read_header, walk_files

__all__ = [
    "SPACING_TOLERANCE",
    "SIDECARS",
    "Series",
    "SliceInfo",
    "check_hu",
    "check_volume_geometry",
    "discover",
    "load_volume",
    "read_series",
]

# Relative tolerance on slice spacing (beyond the header's rounding) before a series counts as uneven.
SPACING_TOLERANCE = 0.1
_TILT_TOLERANCE_DEG = 0.5
_JPEG_FAMILY = ("1.2.840.10008.1.2.4.",)
# Sidecar files fedsite itself writes beside series (LUNA16 annotations): not DICOM, not worth a skip.
SIDECARS = frozenset({"annotations.csv"})
# Physical plausibility of a CT volume: anything outside is a corrupt or mis-stamped header.
PIXEL_SPACING_MM = (0.01, 50.0)
SLICE_STEP_MM = (0.01, 100.0)
MAX_ABS_SLOPE, MAX_ABS_INTERCEPT = 1000.0, 100000.0
HU_RANGE = (-4096.0, 65536.0)
_CT_PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1")


@dataclass
class Series:
    """One series (or one volume of a series split by phase) after QC; the HU volume once loaded."""

    seriesuid: str
    modality: str
    files: int
    status: str = "ok"
    reasons: list[str] = field(default_factory=list)
    slices: list[SliceInfo] = field(default_factory=list)
    spacing_zyx: tuple[float, float, float] | None = None
    origin_xyz: tuple[float, float, float] | None = None
    direction: np.ndarray | None = None
    hu: np.ndarray | None = None
    folder: str = ""

    @property
    def shape_zyx(self) -> tuple[int, int, int] | None:
        if not self.slices:
            return None
        rows, cols = self.slices[0].shape
        return (len(self.slices), rows, cols)

    def record(self) -> dict[str, Any]:
        """The `fedsite dicom inspect` record for this series (docs/contracts.md field names, plus its folder)."""
        hu = self.hu
        return {
            "seriesuid": self.seriesuid,
            "modality": self.modality,
            "n_slices": len(self.slices),
            "shape_zyx": list(self.shape_zyx) if self.shape_zyx and self.status == "ok" else None,
            "spacing_zyx": [float(v) for v in self.spacing_zyx] if self.spacing_zyx else None,
            "origin_xyz": [float(v) for v in self.origin_xyz] if self.origin_xyz else None,
            "direction": self.direction.tolist() if self.direction is not None else None,
            "hu_min": float(hu.min()) if hu is not None else None,
            "hu_max": float(hu.max()) if hu is not None else None,
            "status": self.status,
            "reasons": list(self.reasons),
            "files": self.files,
            "folder": self.folder,
        }

    def reject(self, reason: str) -> None:
        self.status = "rejected"
        self.reasons.append(reason)


def discover(root: str | os.PathLike[str]) -> tuple[dict[str, list[SliceInfo]], list[dict[str, str]]]:
    """Every image (frame) under `root` (any nesting) grouped by SeriesInstanceUID; the rest as skipped."""
    files, skipped = walk_files(Path(root))
    groups: dict[str, list[SliceInfo]] = defaultdict(list)
    for path in files:
        if path.name in SIDECARS:
            continue
        infos = read_header(path)
        if isinstance(infos, str):
            skipped.append({"path": str(path), "reason": infos})
        else:
            groups[infos[0].series_uid].extend(infos)
    return dict(groups), skipped


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _axis_errors(slices: list[SliceInfo], normal: np.ndarray) -> tuple[float, float]:
    """(error of one position along the normal, angular error of the normal) from the header's rounding."""
    pos_res = max(s.position_resolution for s in slices)
    ori_res = max(s.orientation_resolution for s in slices)
    along_err = pos_res * float(np.abs(normal).sum())
    normal_err = 2.0 * np.sqrt(3.0) * ori_res  # cross product of two vectors each off by ori_res per component
    return along_err, normal_err


def _plausibility(series: Series, slices: list[SliceInfo]) -> bool:
    """Reject headers that cannot describe a CT volume (zero spacing, absurd rescale, colour)."""
    first = slices[0]
    if first.samples_per_pixel != 1 or first.photometric not in _CT_PHOTOMETRIC:
        series.reject(
            f"colour image ({first.photometric}, {first.samples_per_pixel} samples per pixel): "
            "a CT volume is monochrome"
        )
        return False
    rows, cols = first.shape
    if rows < 1 or cols < 1:
        series.reject(f"{first.label}: image size {rows}x{cols} (Rows/Columns missing or 0)")
        return False
    lo, hi = PIXEL_SPACING_MM
    bad = next((s for s in slices if not all(lo <= v <= hi for v in s.pixel_spacing)), None)
    if bad is not None:
        series.reject(f"{bad.label}: PixelSpacing {list(bad.pixel_spacing)} mm is outside {lo}-{hi} mm")
        return False
    bad = next(
        (
            s
            for s in slices
            if not (np.isfinite(s.slope) and np.isfinite(s.intercept))
            or s.slope == 0
            or abs(s.slope) > MAX_ABS_SLOPE
            or abs(s.intercept) > MAX_ABS_INTERCEPT
        ),
        None,
    )
    if bad is not None:
        series.reject(
            f"{bad.label}: RescaleSlope {bad.slope:g} / RescaleIntercept {bad.intercept:g} are not plausible for CT"
        )
        return False
    return True


def _drop_identical_duplicates(series: Series, slices: list[SliceInfo], along: np.ndarray, tol: float):
    """Drop copies at one position whose pixels are identical; return (slices, along, clashes left)."""
    keep = [0]
    removed, clashes = 0, 0
    for i in range(1, len(slices)):
        j = keep[-1]
        if along[i] - along[j] > tol:
            keep.append(i)
        elif _same_pixels(slices[i], slices[j]):
            removed += 1
        else:
            keep.append(i)
            clashes += 1
    if removed:
        series.reasons.append(f"removed {removed} duplicate image(s) with identical pixels at the same position")
    return [slices[i] for i in keep], along[keep], clashes


def _same_pixels(a: SliceInfo, b: SliceInfo) -> bool:
    try:
        return bool(np.array_equal(_hu_of(a), _hu_of(b)))
    except Exception:
        return False


def _hu_of(info: SliceInfo, cache: dict | None = None) -> np.ndarray:
    """One frame's pixels in HU (its own slope/intercept); `cache` keeps a multi-frame file decoded once."""
    key = str(info.path)
    pixels = cache.get(key) if cache is not None else None
    if pixels is None:
        pixels = quiet_pixels(dcmread(info.path))
        if cache is not None:
            cache[key] = pixels
    plane = pixels[info.frame] if info.frame is not None else pixels
    if plane.shape != info.shape:
        raise ValueError(f"decoded image is {plane.shape}, header says {info.shape}")
    return plane.astype(np.float32) * np.float32(info.slope) + np.float32(info.intercept)


def _sort_and_check(series: Series, slices: list[SliceInfo], gap_policy: str) -> list[Series]:
    """Geometry QC and sorting along the slice normal; fills the series' geometry.

    Returns extra volumes when images at one position belong to different phases/acquisitions
    (each checked on its own); the series itself then stands for the first of them.
    """
    localizers = [s for s in slices if {"LOCALIZER", "SCOUT"} & set(s.image_type)]
    if localizers:
        series.reasons.append(f"ignored {len(localizers)} localizer/scout image(s)")
        slices = [s for s in slices if s not in localizers]
    if not slices:
        series.reject("only localizer/scout images")
        return []
    missing = [s for s in slices if not s.has_pixels]
    if len(missing) == len(slices):
        series.reject(f"no file of the series holds PixelData ({len(missing)} header-only file(s))")
        return []
    if missing:
        series.reasons.append(
            f"skipped {len(missing)} file(s) without PixelData (truncated copies?), e.g. {missing[0].label}"
        )
        slices = [s for s in slices if s.has_pixels]
    if any(s.position is None or s.orientation is None or s.pixel_spacing is None for s in slices):
        series.reject("missing ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
        return []
    if not _plausibility(series, slices):
        return []
    orient = np.stack([s.orientation for s in slices])
    ori_tol = 2.0 * max(s.orientation_resolution for s in slices) + 1e-6
    if np.abs(orient - orient[0]).max() > max(ori_tol, 1e-4):
        series.reject("mixed image orientations within the series")
        return []
    if len({s.shape for s in slices}) > 1:
        series.reject("slices differ in size")
        return []
    spacings = np.array([s.pixel_spacing for s in slices])
    sp_res = 1e-6 + 2.0 * max(s.position_resolution for s in slices)
    if np.abs(spacings - spacings[0]).max() > max(sp_res, 1e-4 * float(spacings[0].max())):
        series.reject("slices differ in pixel spacing")
        return []
    row_cos, col_cos = _unit(orient[0][:3]), _unit(orient[0][3:])
    normal = _unit(np.cross(row_cos, col_cos))
    along = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(along, kind="stable")
    slices, along = [slices[i] for i in order], along[order]
    along_err, normal_err = _axis_errors(slices, normal)
    span = float(along[-1] - along[0])
    same_tol = max(2.0 * along_err + span * normal_err, 1e-3)
    distinct = np.diff(along)[np.diff(along) > 1e-3]
    if distinct.size:  # rounding can never make two real slices one: stay well under the usual step
        same_tol = min(same_tol, 0.25 * float(np.median(distinct)))
    slices, along, clashes = _drop_identical_duplicates(series, slices, along, same_tol)
    if clashes:
        return _split_phases(series, slices, gap_policy, clashes)
    if len(slices) < 2:
        series.reject("fewer than 2 distinct slice positions")
        return []
    _check_spacing_and_tilt(series, slices, along, normal, (row_cos, col_cos), gap_policy, along_err, normal_err)
    return []


def _split_phases(series: Series, slices: list[SliceInfo], gap_policy: str, clashes: int) -> list[Series]:
    """Images at one position with different pixels: one volume per phase key value, or a rejection."""
    for key in PHASE_KEYS:
        values = {s.phase.get(key) for s in slices}
        if len(values) < 2 or None in values:
            continue
        volumes = []
        for value in sorted(values, key=lambda v: (len(v), v)):
            part = [s for s in slices if s.phase.get(key) == value]
            sub = Series(
                seriesuid=f"{series.seriesuid}#{key}={value}",
                modality=series.modality,
                files=len({s.path for s in part}),
                reasons=[*series.reasons, f"series split by {key}: {len(values)} volumes at the same positions"],
                folder=series.folder,
            )
            extra = _sort_and_check(sub, part, gap_policy)
            volumes.extend([sub, *extra])
        first = volumes[0]
        series.__dict__.update(first.__dict__)
        return volumes[1:]
    series.reject(
        f"{clashes} image(s) share a slice position with another image but differ in pixels, and no "
        f"{'/'.join(PHASE_KEYS[:2])} tells the volumes apart (two phases or acquisitions in one series?)"
    )
    return []


def _check_spacing_and_tilt(series, slices, along, normal, cosines, gap_policy, along_err, normal_err) -> None:
    steps = np.diff(along)
    step = float(np.median(steps))
    lo, hi = SLICE_STEP_MM
    step_tol = SPACING_TOLERANCE * step + 2.0 * along_err + 1e-6
    uneven = np.abs(steps - step) > step_tol
    if uneven.any():
        worst = float(steps[np.argmax(np.abs(steps - step))])
        if gap_policy != "split":
            return series.reject(f"uneven slice spacing: a step of {worst:.3g} mm where {step:.3g} mm is usual (gap)")
        breaks = np.flatnonzero(uneven) + 1
        runs = np.split(np.arange(len(slices)), breaks)
        best = max(runs, key=len)
        if len(best) < 2:
            return series.reject("uneven slice spacing with no contiguous run of 2+ slices")
        series.reasons.append(f"split at {len(breaks)} gap(s); kept the longest run of {len(best)} slices")
        slices, along = [slices[i] for i in best], along[best]
    # the mean step over the whole stack: each position's rounding counts once, not once per step
    step = float((along[-1] - along[0]) / (len(slices) - 1))
    if not lo <= step <= hi:
        return series.reject(f"slice spacing {step:.4g} mm is outside {lo}-{hi} mm")
    offsets = np.stack([s.position - slices[0].position for s in slices[1:]])
    dist = offsets @ normal
    lateral = np.linalg.norm(offsets - dist[:, None] * normal, axis=1)
    pos_res = max(s.position_resolution for s in slices)
    slack = 2.0 * np.sqrt(3.0) * pos_res + np.abs(dist) * normal_err  # what rounding alone can shift sideways
    tilt = float(np.degrees(np.arctan(np.max(np.maximum(lateral - slack, 0.0) / np.abs(dist)))))
    if tilt > _TILT_TOLERANCE_DEG:
        raw = float(np.degrees(np.arctan(lateral[-1] / abs(dist[-1]))))
        return series.reject(f"gantry tilt of {raw:.1f} degrees (slices are sheared; resampling not enabled)")
    series.slices = slices
    series.spacing_zyx = (step, slices[0].pixel_spacing[0], slices[0].pixel_spacing[1])
    series.origin_xyz = tuple(float(v) for v in slices[0].position)
    series.direction = np.stack([cosines[0], cosines[1], normal], axis=1)


def load_volume(series: Series) -> None:
    """Decode pixels and convert each slice to HU with its own slope/intercept (rejects on failure)."""
    planes = []
    cache: dict[str, np.ndarray] = {}
    for info in series.slices:
        try:
            planes.append(_hu_of(info, cache))
        except Exception as exc:
            ts = info.transfer_syntax
            if ts.startswith(_JPEG_FAMILY) and "decod" in str(exc).lower() and "plugin" in str(exc).lower():
                series.reject(f"{info.label}: JPEG-compressed ({ts}) and no installed decoder could read it")
            else:
                series.reject(f"{info.label}: pixel data could not be decoded ({type(exc).__name__}: {exc})")
            series.hu = None
            return
    series.hu = np.stack(planes)
    check_hu(series)


def _folder_of(slices: list[SliceInfo], root: Path) -> str:
    parents = {s.path.parent for s in slices}
    common = Path(os.path.commonpath([str(p) for p in parents])) if parents else root
    try:
        rel = common.relative_to(root)
    except ValueError:
        return str(common)
    return str(rel) if str(rel) != "." else "."


def read_series(
    root: str | os.PathLike[str],
    *,
    gap_policy: str = "reject",
    load: bool = True,
    modalities: tuple[str, ...] = ("CT",),
) -> tuple[list[Series], list[dict[str, str]]]:
    """All series under `root`, QC'd and (when `load`) decoded to HU; plus files skipped with reasons.

    Rejected series are returned too (status "rejected", reasons filled) so reports can list them. A
    failure inside one series (a bug or a header nobody foresaw) rejects that series only.
    """
    root = Path(root)
    groups, skipped = discover(root)
    base = root if root.is_dir() else root.parent
    out = []
    for uid, slices in sorted(groups.items()):
        modality = slices[0].modality
        series = Series(
            seriesuid=uid, modality=modality, files=len({s.path for s in slices}), folder=_folder_of(slices, base)
        )
        volumes = [series]
        try:
            if modality not in modalities:
                series.reject(f"modality {modality} is not {'/'.join(modalities)}")
            else:
                volumes += _sort_and_check(series, slices, gap_policy)
                for vol in volumes:
                    if vol.status == "ok" and load:
                        load_volume(vol)
        except Exception as exc:  # never let one series cost the others
            series.reject(f"could not be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            volumes = [series]
        out.extend(volumes)
    return out, skipped


def voxel_to_world(series_or_geom: Any, zyx: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (N,3 as z,y,x) -> world LPS mm (N,3 as x,y,z)."""
    spacing, origin, direction = _geometry(series_or_geom)
    zyx = np.atleast_2d(np.asarray(zyx, dtype=np.float64))
    scaled_ijk = zyx[:, ::-1] * np.array(spacing[::-1])  # (i, j, k) * (col, row, slice) spacing
    return np.asarray(origin) + scaled_ijk @ np.asarray(direction).T


def world_to_voxel(series_or_geom: Any, xyz: np.ndarray) -> np.ndarray:
    """World LPS mm (N,3 as x,y,z) -> continuous voxel indices (N,3 as z,y,x)."""
    spacing, origin, direction = _geometry(series_or_geom)
    xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    ijk = np.linalg.solve(np.asarray(direction), (xyz - np.asarray(origin)).T).T / np.array(spacing[::-1])
    return ijk[:, ::-1]


def _geometry(obj: Any) -> tuple[tuple[float, float, float], Any, Any]:
    if isinstance(obj, dict):
        return tuple(obj["spacing_zyx"]), obj["origin_xyz"], obj["direction"]
    return tuple(obj.spacing_zyx), obj.origin_xyz, obj.direction


def check_volume_geometry(series: Series) -> bool:
    """Reject a volume whose geometry cannot be a CT scan (too few slices, absurd spacing, skewed axes).

    The same limits as a DICOM series' headers get (`_plausibility`, `_check_spacing_and_tilt`), for
    volumes that arrive with their geometry already assembled (data_adapters/volumes.py).
    """
    shape = series.shape_zyx
    if shape is None or min(shape) < 1 or shape[0] < 2:
        series.reject(f"a volume of shape {list(shape) if shape else None}: fewer than 2 slices")
        return False
    (lo, hi), (slo, shi) = PIXEL_SPACING_MM, SLICE_STEP_MM
    dz, dy, dx = series.spacing_zyx
    if not (lo <= dy <= hi and lo <= dx <= hi):
        series.reject(f"pixel spacing {[dy, dx]} mm is outside {lo}-{hi} mm")
        return False
    if not slo <= dz <= shi:
        series.reject(f"slice spacing {dz:.4g} mm is outside {slo}-{shi} mm")
        return False
    direction = np.asarray(series.direction, float)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        series.reject("direction cosines are not orthonormal (sheared volume; resampling not enabled)")
        return False
    return True


def check_hu(series: Series) -> bool:
    """Reject a decoded volume whose values cannot be Hounsfield units (clears `series.hu`); DICOM or file."""
    hu = series.hu
    lo, hi = (float(hu.min()), float(hu.max())) if hu is not None and hu.size else (float("nan"),) * 2
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < HU_RANGE[0] or hi > HU_RANGE[1]:
        series.reject(
            f"HU range [{lo:.4g}, {hi:.4g}] is not plausible for CT (outside {HU_RANGE[0]:g}..{HU_RANGE[1]:g})"
        )
        series.hu = None
        return False
    return True
