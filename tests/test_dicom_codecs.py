"""Every compressed transfer syntax pydicom's own test files carry decodes in the default install.

Hospitals' archives hold JPEG Lossless, JPEG-LS and JPEG 2000; the decoders (pylibjpeg and its
plug-ins) are default dependencies. Each monochrome test file is restamped as a 2-slice CT series
(its compressed pixel data untouched) and must read as status ok with exactly pydicom's pixels in
HU; the colour-only syntaxes must decode and then be rejected as colour, not as "no decoder".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from data_adapters import dicom
from data_adapters.dicom_header import dcmread, quiet_pixels

# transfer syntax -> a pydicom test file that carries it (monochrome where pydicom has one)
MONOCHROME = {
    "1.2.840.10008.1.2.4.51": "JPGExtended.dcm",  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "693_J2KI.dcm",  # JPEG 2000 (a CT slice)
    "1.2.840.10008.1.2.5": "MR_small_RLE.dcm",  # RLE lossless
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",  # deflated explicit VR little endian
}
COLOUR_ONLY = {
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, first-order prediction
}


def _as_ct_series(source: Path, folder: Path) -> np.ndarray:
    """Two copies of `source` restamped as one axial CT series; returns the expected HU of one slice."""
    folder.mkdir(parents=True)
    ref = pydicom.dcmread(source)
    expected = quiet_pixels(ref).astype(np.float32)
    slope, intercept = float(ref.get("RescaleSlope", 1) or 1), float(ref.get("RescaleIntercept", 0) or 0)
    for k in range(2):
        path = folder / f"s{k}.dcm"
        shutil.copy(source, path)
        ds = dcmread(path)
        ds.Modality, ds.SeriesInstanceUID = "CT", "1.2.826.0.1.3680043.8.498.444"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.444.{k}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.5 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        if "NumberOfFrames" in ds and int(ds.NumberOfFrames) == 1:
            del ds.NumberOfFrames
        ds.save_as(path)
    return expected * np.float32(slope) + np.float32(intercept)


@pytest.mark.parametrize("syntax, name", sorted(MONOCHROME.items()), ids=sorted(MONOCHROME))
def test_monochrome_compressed_series_reads_exactly(tmp_path, syntax, name):
    source = Path(get_testdata_file(name, download=False))
    assert str(pydicom.dcmread(source).file_meta.TransferSyntaxUID) == syntax
    expected = _as_ct_series(source, tmp_path / "s")
    (series,), skipped = dicom.read_series(tmp_path)
    assert not skipped and series.status == "ok", series.reasons
    assert str(pydicom.dcmread(tmp_path / "s" / "s0.dcm").file_meta.TransferSyntaxUID) == syntax
    np.testing.assert_array_equal(series.hu[0], expected)


@pytest.mark.parametrize("syntax, name", sorted(COLOUR_ONLY.items()), ids=sorted(COLOUR_ONLY))
def test_colour_only_syntaxes_decode_and_are_rejected_as_colour(tmp_path, syntax, name):
    source = Path(get_testdata_file(name, download=False))
    assert str(pydicom.dcmread(source).file_meta.TransferSyntaxUID) == syntax
    assert quiet_pixels(pydicom.dcmread(source)).shape[-1] == 3  # the decoder is installed
    _as_ct_series(source, tmp_path / "s")
    (series,), _ = dicom.read_series(tmp_path)
    assert series.status == "rejected" and series.reasons[0].startswith("colour image")


def test_a_compressed_copy_cut_short_is_skipped_and_the_series_kept(tmp_path):
    """A JPEG 2000 file cut before its sequence delimiter: skipped with a reason, its intact twin read."""
    source = Path(get_testdata_file("693_J2KI.dcm", download=False))
    _as_ct_series(source, tmp_path / "s")
    whole = (tmp_path / "s" / "s1.dcm").read_bytes()
    (tmp_path / "s" / "s1_copy_cut.dcm").write_bytes(whole[: len(whole) - 600])
    (series,), skipped = dicom.read_series(tmp_path)
    assert series.status == "ok" and series.hu.shape[0] == 2
    assert [Path(s["path"]).name for s in skipped] == ["s1_copy_cut.dcm"]
    assert skipped[0]["reason"].startswith("truncated")
