"""A hardened DICOM CT series reader: discovery, grouping, QC, slice sorting, HU, exact geometry.

Scanner folders are messy: any nesting, any file names, DICOMDIR indexes, localizers mixed into a
series, reversed instance numbers, gaps, other modalities, truncated copies. Everything here turns
such a folder into volumes whose geometry is exact (LPS millimetres, as ImagePositionPatient), or
into a reason saying why a file or series was not used. Nothing raises on bad data: the caller gets
`skipped` files and `rejected` series with reasons, and every valid series is still returned.

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

# Relative tolerance on slice spacing before a series counts as unevenly spaced.
SPACING_TOLERANCE = 0.1
_TILT_TOLERANCE_DEG = 0.5
_JPEG_FAMILY = ("1.2.840.10008.1.2.4.",)
# Sidecar files fedsite itself writes beside series (LUNA16 annotations): not DICOM, not worth a skip.
SIDECARS = frozenset({"annotations.csv"})


@dataclass
class SliceInfo:
    """Header facts of one image file (pixels are read later, only for series that pass QC)."""

    path: Path
    series_uid: str
    modality: str
    image_type: tuple[str, ...]
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    shape: tuple[int, int]
    has_pixels: bool
    transfer_syntax: str


@dataclass
class Series:
    """One series after QC: its geometry, and the volume in HU once `load_volume` has run."""

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

    @property
    def shape_zyx(self) -> tuple[int, int, int] | None:
        if not self.slices:
            return None
        rows, cols = self.slices[0].shape
        return (len(self.slices), rows, cols)

    def record(self) -> dict[str, Any]:
        """The `fedsite dicom inspect` record for this series (docs/contracts.md field names)."""
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
        }

    def reject(self, reason: str) -> None:
        self.status = "rejected"
        self.reasons.append(reason)


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def read_header(path: Path) -> SliceInfo | str:
    """Header facts of `path`, or a reason string when it is not a usable DICOM image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=False, defer_size=1024)
    except InvalidDicomError:
        return "not a DICOM file"
    except Exception as exc:  # truncated or corrupt files raise anything from EOFError to struct errors
        return f"unreadable DICOM ({type(exc).__name__})"
    try:
        sop_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
        if sop_class == "1.2.840.10008.1.3.10" or "DirectoryRecordSequence" in ds:
            return "DICOMDIR index, not an image"
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            return "no SeriesInstanceUID"
        spacing = _floats(ds.get("PixelSpacing"), 2)
        has_pixels = "PixelData" in ds
        if has_pixels:
            expected = int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("BitsAllocated", 16)) // 8
            tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
            raw = ds.get_item("PixelData")
            value = getattr(raw, "value", None)
            if value is not None:
                length = len(value)
            else:  # deferred: what the file really holds after the element's start
                tell = getattr(raw, "value_tell", None)
                length = path.stat().st_size - tell if tell is not None else int(getattr(raw, "length", 0))
                if getattr(raw, "length", 0) != 0xFFFFFFFF:
                    length = min(length, int(raw.length))
            if not tsyntax.startswith(("1.2.840.10008.1.2.4", "1.2.840.10008.1.2.5")) and length < expected:
                return f"truncated pixel data ({length} of {expected} bytes)"
        return SliceInfo(
            path=path,
            series_uid=uid,
            modality=str(ds.get("Modality", "") or "unknown"),
            image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
            position=_floats(ds.get("ImagePositionPatient"), 3),
            orientation=_floats(ds.get("ImageOrientationPatient"), 6),
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
            shape=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
            has_pixels=has_pixels,
            transfer_syntax=str(getattr(ds.file_meta, "TransferSyntaxUID", "")),
        )
    except Exception as exc:
        return f"unreadable DICOM header ({type(exc).__name__})"


def discover(root: str | os.PathLike[str]) -> tuple[dict[str, list[SliceInfo]], list[dict[str, str]]]:
    """Every file under `root` (any nesting) grouped by SeriesInstanceUID; the rest as skipped."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and p.name not in SIDECARS)
    groups: dict[str, list[SliceInfo]] = defaultdict(list)
    skipped = []
    for path in files:
        info = read_header(path)
        if isinstance(info, str):
            skipped.append({"path": str(path), "reason": info})
        else:
            groups[info.series_uid].append(info)
    return dict(groups), skipped


def _sort_and_check(series: Series, slices: list[SliceInfo], gap_policy: str) -> None:
    """Geometry QC and sorting along the slice normal; fills series.slices/spacing/origin/direction."""
    localizers = [s for s in slices if {"LOCALIZER", "SCOUT"} & set(s.image_type)]
    if localizers:
        series.reasons.append(f"ignored {len(localizers)} localizer/scout image(s)")
        slices = [s for s in slices if s not in localizers]
    if not slices:
        return series.reject("only localizer/scout images")
    missing = [s for s in slices if not s.has_pixels]
    if missing:
        return series.reject(f"{len(missing)} file(s) without PixelData (e.g. {missing[0].path.name})")
    if any(s.position is None or s.orientation is None or s.pixel_spacing is None for s in slices):
        return series.reject("missing ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
    orient = np.stack([s.orientation for s in slices])
    if np.abs(orient - orient[0]).max() > 1e-3:
        return series.reject("mixed image orientations within the series")
    if len({s.shape for s in slices}) > 1 or len({s.pixel_spacing for s in slices}) > 1:
        return series.reject("slices differ in size or pixel spacing")
    row_cos, col_cos = orient[0][:3], orient[0][3:]
    normal = np.cross(row_cos, col_cos)
    along = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(along, kind="stable")
    slices, along = [slices[i] for i in order], along[order]
    keep = np.concatenate([[True], np.diff(along) > 1e-3])
    if not keep.all():
        series.reasons.append(f"removed {int((~keep).sum())} duplicate slice position(s)")
        slices, along = [s for s, k in zip(slices, keep) if k], along[keep]
    if len(slices) < 2:
        return series.reject("fewer than 2 distinct slice positions")
    steps = np.diff(along)
    step = float(np.median(steps))
    uneven = np.abs(steps - step) > SPACING_TOLERANCE * step
    if uneven.any():
        worst = float(steps[np.argmax(np.abs(steps - step))])
        if gap_policy != "split":
            return series.reject(f"uneven slice spacing: a step of {worst:.1f} mm where {step:.2f} mm is usual (gap)")
        breaks = np.flatnonzero(uneven) + 1
        runs = np.split(np.arange(len(slices)), breaks)
        best = max(runs, key=len)
        if len(best) < 2:
            return series.reject("uneven slice spacing with no contiguous run of 2+ slices")
        series.reasons.append(f"split at {len(breaks)} gap(s); kept the longest run of {len(best)} slices")
        slices, along = [slices[i] for i in best], along[best]
        step = float(np.median(np.diff(along)))
    offsets = np.stack([s.position - slices[0].position for s in slices[1:]])
    unit = offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    tilt = float(np.degrees(np.arccos(np.clip(np.abs(unit @ normal).min(), -1.0, 1.0))))
    if tilt > _TILT_TOLERANCE_DEG:
        return series.reject(f"gantry tilt of {tilt:.1f} degrees (slices are sheared; resampling not enabled)")
    series.slices = slices
    series.spacing_zyx = (step, slices[0].pixel_spacing[0], slices[0].pixel_spacing[1])
    series.origin_xyz = tuple(float(v) for v in slices[0].position)
    series.direction = np.stack([row_cos, col_cos, normal], axis=1)


def load_volume(series: Series) -> None:
    """Decode pixels and convert each slice to HU with its own slope/intercept (rejects on failure)."""
    import pydicom

    planes = []
    for info in series.slices:
        ts = info.transfer_syntax
        try:
            ds = pydicom.dcmread(info.path)
            pixels = ds.pixel_array
        except Exception as exc:
            if ts.startswith(_JPEG_FAMILY):
                series.reject(
                    f"{info.path.name}: JPEG-compressed ({ts}) and no decoder could read it: "
                    "install the optional extra 'fedsite[jpeg]' (pylibjpeg)"
                )
            else:
                series.reject(f"{info.path.name}: pixel data could not be decoded ({type(exc).__name__})")
            series.hu = None
            return
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept))
    series.hu = np.stack(planes)


def read_series(
    root: str | os.PathLike[str],
    *,
    gap_policy: str = "reject",
    load: bool = True,
    modalities: tuple[str, ...] = ("CT",),
) -> tuple[list[Series], list[dict[str, str]]]:
    """All series under `root`, QC'd and (when `load`) decoded to HU; plus files skipped with reasons.

    Rejected series are returned too (status "rejected", reasons filled) so reports can list them.
    """
    groups, skipped = discover(root)
    out = []
    for uid, slices in sorted(groups.items()):
        modality = slices[0].modality
        series = Series(seriesuid=uid, modality=modality, files=len(slices))
        if modality not in modalities:
            series.reject(f"modality {modality} is not {'/'.join(modalities)}")
        else:
            _sort_and_check(series, slices, gap_policy)
            if series.status == "ok" and load:
                load_volume(series)
        out.append(series)
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
