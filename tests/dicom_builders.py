"""Small real DICOM files built by code for the reader's bad-input tests (headers exactly as written).

Decimal strings are passed through as given, so a test controls the precision a header carries
(ImagePositionPatient to 1 decimal, ImageOrientationPatient to 4), as real scanners write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def ds_str(value: float, decimals: int) -> str:
    """`value` written with `decimals` decimals (as a header would), at most 16 characters."""
    text = f"{value:.{decimals}f}"
    return "0" + text[len("-0") :] if text.startswith("-0") and float(text) == 0 else text


def _base(sop_class: str, sop_uid: str, series_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series_uid + ".0", series_uid
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^PATIENT", "P1", "CT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def write_slices(
    folder: Path,
    pixels: np.ndarray,
    positions: Sequence[Sequence[str]],
    orientation: Sequence[str] = ("1", "0", "0", "0", "1", "0"),
    *,
    spacing: Sequence[str] = ("0.7", "0.7"),
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    slope: str = "1",
    intercept: str = "0",
    extra: Sequence[dict] | None = None,
    name: str = "IM",
) -> list[Path]:
    """One single-frame CT file per slice of `pixels` (z,y,x int16) at the given position strings."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ipp in enumerate(positions):
        ds = _base(CT, f"{series_uid}.{k + 1}.{len(name)}", series_uid)
        ds.ImagePositionPatient, ds.ImageOrientationPatient = list(ipp), list(orientation)
        ds.PixelSpacing, ds.RescaleSlope, ds.RescaleIntercept = list(spacing), slope, intercept
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = pixels.shape[1:]
        for key, value in (extra[k] if extra else {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(pixels[k], dtype=np.int16).tobytes()
        path = folder / f"{name}{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_rgb(paths: Sequence[Path]) -> None:
    """Turn single-frame CT files into 8-bit RGB ones (a colour "CT" series, as some exports are)."""
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()
        ds.save_as(path)


def write_enhanced(
    path: Path,
    pixels: np.ndarray,
    positions: Sequence[Sequence[str]],
    orientation: Sequence[str] = ("1", "0", "0", "0", "1", "0"),
    *,
    spacing: Sequence[str] = ("0.8", "0.8"),
    slopes: Sequence[tuple[str, str]] | None = None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.7",
    functional_groups: bool = True,
    temporal: Sequence[int] | None = None,
) -> Path:
    """An Enhanced CT file: frames of `pixels`, per-frame position (and rescale), shared orientation/spacing."""
    ds = _base(ENHANCED_CT, series_uid + ".1", series_uid)
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(pixels), pixels.shape[1:]
    if functional_groups:
        shared = Dataset()
        orient, measures = Dataset(), Dataset()
        orient.ImageOrientationPatient = list(orientation)
        measures.PixelSpacing, measures.SliceThickness = list(spacing), "1"
        shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
        if slopes is None:
            rescale = Dataset()
            rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = "1", "-1024", "HU"
            shared.PixelValueTransformationSequence = [rescale]
        ds.SharedFunctionalGroupsSequence = [shared]
        frames = []
        for k, ipp in enumerate(positions):
            item, plane, content = Dataset(), Dataset(), Dataset()
            plane.ImagePositionPatient = list(ipp)
            content.InStackPositionNumber, content.StackID = k + 1, "1"
            if temporal is not None:
                content.TemporalPositionIndex = temporal[k]
            item.PlanePositionSequence, item.FrameContentSequence = [plane], [content]
            if slopes is not None:
                rescale = Dataset()
                rescale.RescaleSlope, rescale.RescaleIntercept = slopes[k]
                item.PixelValueTransformationSequence = [rescale]
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def axial_positions(n: int, step: float, decimals: int, z0: float = -100.0) -> list[list[str]]:
    """Axial ImagePositionPatient strings for `n` slices `step` mm apart, written to `decimals`."""
    return [[ds_str(-50.0, decimals), ds_str(-60.0, decimals), ds_str(z0 + k * step, decimals)] for k in range(n)]
