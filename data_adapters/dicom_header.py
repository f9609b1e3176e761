"""One DICOM file's header -> the facts the series reader needs, one record per frame.

Why a module of its own: a header is read once per file, and its reading is where real archives
differ most: single-frame files, Enhanced (multi-frame) CT whose per-frame position, orientation,
spacing and rescale live in functional groups, truncated copies, compressed pixel data, and decimal
strings of every precision. Everything here turns a file into `SliceInfo` records (one per frame) or
a reason string; nothing raises on bad data, and pydicom's warnings never reach the user's terminal
(they are shown under `--debug`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import debug

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_ENCAPSULATED = ("1.2.840.10008.1.2.4", "1.2.840.10008.1.2.5")
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
# Keys that tell two images at one position apart (phases, acquisitions, stacks), in order of trust.
PHASE_KEYS = ("AcquisitionNumber", "TemporalPositionIndex", "StackID", "FrameAcquisitionNumber")
# A float with no decimal string behind it (FD values, or values set in code) is taken as exact to this.
_EXACT = 1e-9


@dataclass
class SliceInfo:
    """Header facts of one image (one frame of a multi-frame file); pixels are read later."""

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
    frame: int | None = None  # frame index in a multi-frame file; None for a single-frame file
    position_resolution: float = _EXACT  # half a unit of the last decimal written, in mm
    orientation_resolution: float = _EXACT
    slope: float = 1.0
    intercept: float = 0.0
    samples_per_pixel: int = 1
    photometric: str = "MONOCHROME2"
    phase: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The file name, with the frame number for a multi-frame file (for reasons shown to users)."""
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"


def dcmread(path: Path | str, *, notes: list[str] | None = None, **kwargs: Any):
    """pydicom.dcmread with its warnings kept off stderr (shown with --debug as one line each).

    `notes`, when given, receives the warnings' messages (a cut file is only ever a warning to pydicom).
    """
    import pydicom

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return pydicom.dcmread(path, **kwargs)
        finally:
            for w in caught:
                message = str(w.message).splitlines()[0]
                debug(f"pydicom: {Path(path).name}: {message}")
                if notes is not None:
                    notes.append(message)


def quiet_pixels(ds) -> np.ndarray:
    """ds.pixel_array with pydicom's decoder warnings routed to --debug."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return ds.pixel_array
        finally:
            for w in caught:
                debug(f"pydicom: {str(w.message).splitlines()[0]}")


def walk_files(root: Path) -> tuple[list[Path], list[dict[str, str]]]:
    """Every regular file under `root` (sorted), skipping hidden folders/files; plus unreadable folders.

    Hidden entries (.git, .venv, .DS_Store, ...) are never scanner output, and walking them on the
    wrong folder printed tens of thousands of lines. Folders the process may not read are reported.
    """
    if root.is_file():
        return [root], []
    unreadable: list[dict[str, str]] = []

    def _onerror(exc: OSError) -> None:
        unreadable.append({"path": str(exc.filename), "reason": f"folder not readable ({exc.strerror or exc})"})

    if not os.access(root, os.R_OK | os.X_OK):
        return [], [{"path": str(root), "reason": "folder not readable (permission denied)"}]
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, onerror=_onerror):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(folder) / n for n in names if not n.startswith(".") and os.path.isfile(Path(folder) / n))
    return sorted(files), unreadable


def resolution(values: Any, *, integers_exact: bool = False) -> float:
    """Half a unit of the last decimal the header wrote for these DS values (worst of them), in their unit.

    '0.7071' can be off by 5e-5, '12.5' by 0.05: tolerances must allow what the writer's rounding did.
    With `integers_exact`, values written without a decimal point ('1', '0', '-1' direction cosines)
    count as exact: nobody rounds a cosine to an integer.
    """
    worst = _EXACT
    for v in values if isinstance(values, list | tuple) or hasattr(values, "__iter__") else [values]:
        text = getattr(v, "original_string", None)
        if not isinstance(text, str):
            continue
        text = text.strip().lower()
        mantissa, _, exponent = text.partition("e")
        if integers_exact and "." not in mantissa and not exponent:
            continue
        decimals = len(mantissa.partition(".")[2])
        try:
            exp = int(exponent) if exponent else 0
        except ValueError:
            continue
        worst = max(worst, 0.5 * 10.0 ** (exp - decimals))
    return worst


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _number(value: Any, default: float) -> float:
    """float(value), or `default` for a missing/empty/unparseable value (non-finite values are kept for QC)."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def pixel_bytes_problem(ds, path: Path, frames: int) -> str | None:
    """A reason when the file holds fewer pixel bytes than its header promises (a cut copy)."""
    raw = ds.get_item("PixelData")
    tsyntax = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
    length_field = int(getattr(raw, "length", 0) or 0)
    if tsyntax.startswith(_ENCAPSULATED) or length_field == 0xFFFFFFFF:
        with path.open("rb") as fh:
            fh.seek(max(path.stat().st_size - 8, 0))
            if fh.read(8) == _SEQUENCE_DELIMITER:
                return None
        try:  # no delimiter at the end: either trailing elements or a cut file; decoding tells
            quiet_pixels(dcmread(path))
        except Exception as exc:
            return f"truncated or corrupt compressed pixel data ({type(exc).__name__})"
        return None
    bits = int(ds.get("BitsAllocated", 16) or 16)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    expected = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * samples * frames * bits + 7) // 8
    value = getattr(raw, "value", None)
    if value is not None:
        length = len(value)
    else:  # deferred: what the file really holds after the element's start
        tell = getattr(raw, "value_tell", None)
        length = path.stat().st_size - tell if tell is not None else length_field
        length = min(length, length_field)
    if length < expected:
        return f"truncated pixel data ({length} of {expected} bytes)"
    return None


def _group_value(groups: list, sequence: str, keyword: str):
    """The element `keyword` inside the first of `groups` (per-frame item, then shared) that has `sequence`."""
    for group in groups:
        seq = group.get(sequence) if group is not None else None
        if seq and keyword in seq[0]:
            return seq[0][keyword]
    return None


def _frame_infos(ds, base: dict[str, Any], n_frames: int) -> list[SliceInfo] | str:
    """Enhanced (multi-frame) images: one SliceInfo per frame from the functional groups."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if not per_frame:
        return f"multi-frame image ({n_frames} frames) without per-frame functional groups: no position per frame"
    if len(per_frame) != n_frames:
        return f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for NumberOfFrames {n_frames}"
    out = []
    for k, item in enumerate(per_frame):
        groups = [item, shared]
        ipp = _group_value(groups, "PlanePositionSequence", "ImagePositionPatient")
        iop = _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing_el = _group_value(groups, "PixelMeasuresSequence", "PixelSpacing")
        slope_el = _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope")
        intercept_el = _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
        spacing = _floats(spacing_el.value, 2) if spacing_el is not None else None
        phase = {}
        content = item.get("FrameContentSequence")
        if content:
            for key in PHASE_KEYS:
                if key in content[0] and content[0][key].value not in (None, ""):
                    phase[key] = str(content[0][key].value)
        out.append(
            SliceInfo(
                **base,
                frame=k,
                position=_floats(ipp.value, 3) if ipp is not None else None,
                orientation=_floats(iop.value, 6) if iop is not None else None,
                pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
                position_resolution=resolution(ipp.value) if ipp is not None else _EXACT,
                orientation_resolution=resolution(iop.value, integers_exact=True) if iop is not None else _EXACT,
                slope=_number(slope_el.value if slope_el is not None else ds.get("RescaleSlope"), 1.0),
                intercept=_number(intercept_el.value if intercept_el is not None else ds.get("RescaleIntercept"), 0.0),
                phase=phase,
            )
        )
    return out


def read_header(path: Path) -> list[SliceInfo] | str:
    """Header facts of `path` (one record per frame), or a reason string when it is not a usable image."""
    from pydicom.errors import InvalidDicomError

    notes: list[str] = []
    try:
        ds = dcmread(path, notes=notes, stop_before_pixels=False, defer_size=1024)
    except InvalidDicomError:
        return "not a DICOM file"
    except PermissionError:
        return "file not readable (permission denied)"
    except Exception as exc:  # truncated or corrupt files raise anything from EOFError to struct errors
        return f"unreadable DICOM ({type(exc).__name__})"
    if any("End of file reached" in n for n in notes):
        return "truncated file (it ends inside an element or before the pixel data's delimiter)"
    try:
        return _infos(ds, path)
    except Exception as exc:
        return f"unreadable DICOM header ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"


def _infos(ds, path: Path) -> list[SliceInfo] | str:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(getattr(meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "DICOMDIR index, not an image"
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        return "no SeriesInstanceUID"
    n_frames = int(_number(ds.get("NumberOfFrames", 1) or 1, 1))
    has_pixels = "PixelData" in ds
    if has_pixels:
        problem = pixel_bytes_problem(ds, path, n_frames)
        if problem:
            return problem
    base = {
        "path": path,
        "series_uid": uid,
        "modality": str(ds.get("Modality", "") or "unknown"),
        "image_type": tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
        "shape": (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
        "has_pixels": has_pixels,
        "transfer_syntax": str(getattr(meta, "TransferSyntaxUID", "")),
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1) or 1),
        "photometric": str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper(),
    }
    if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return _frame_infos(ds, base, n_frames)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    phase = {k: str(ds.get(k)) for k in PHASE_KEYS if ds.get(k) not in (None, "")}
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    return [
        SliceInfo(
            **base,
            position=_floats(ipp, 3),
            orientation=_floats(iop, 6),
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
            position_resolution=resolution(ipp) if ipp is not None else _EXACT,
            orientation_resolution=resolution(iop, integers_exact=True) if iop is not None else _EXACT,
            slope=_number(ds.get("RescaleSlope"), 1.0),
            intercept=_number(ds.get("RescaleIntercept"), 0.0),
            phase=phase,
        )
    ]


def iter_headers(files: list[Path]) -> Iterator[tuple[Path, list[SliceInfo] | str]]:
    """(path, records or reason) for each file, in order."""
    for path in files:
        yield path, read_header(path)
