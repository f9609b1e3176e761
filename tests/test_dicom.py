"""The DICOM reader on real and broken input: pydicom's shipped series, damaged files, geometry, HU."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from common.cli import main
from data_adapters import dicom
from data_adapters.synth.ct_phantom import write_series


def _dicomdirtests() -> Path:
    return Path(get_testdata_file("CT_small.dcm", download=False)).parent / "dicomdirtests"


def _inspect(capsys, path) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["dicom", "inspect", str(path), "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, json.loads(captured.out)


def _by_suffix(report: dict, suffix: str) -> dict:
    return next(s for s in report["series"] if s["seriesuid"].endswith(suffix))


def test_pydicom_dicomdirtests_each_problem_has_a_reason(capsys):
    code, report = _inspect(capsys, _dicomdirtests())
    assert code == 3
    reversed_ok = _by_suffix(report, ".16302.0.6")  # instance numbers run against slice position
    assert reversed_ok["status"] == "ok" and reversed_ok["n_slices"] == 5
    assert reversed_ok["spacing_zyx"][0] == pytest.approx(2.5, abs=1e-3)
    assert reversed_ok["origin_xyz"][2] == pytest.approx(-1.2375, abs=1e-3)  # lowest z first after sorting
    assert reversed_ok["hu_min"] <= reversed_ok["hu_max"]
    gap = _by_suffix(report, ".28319.0.2")
    assert gap["status"] == "rejected" and any("gap" in r for r in gap["reasons"])
    localizers = _by_suffix(report, ".16302.0.2")
    assert localizers["status"] == "rejected" and any("localizer" in r for r in localizers["reasons"])
    mr = [s for s in report["series"] if s["modality"] == "MR"]
    assert mr and all(s["status"] == "rejected" and "modality MR" in s["reasons"][0] for s in mr)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["DICOMDIR"].startswith("DICOMDIR") and reasons["README.txt"] == "not a DICOM file"


def test_gap_split_policy_keeps_the_longest_run(capsys):
    series, _ = dicom.read_series(_dicomdirtests() / "77654033", gap_policy="split", load=True)
    ct = next(s for s in series if s.modality == "CT")
    assert ct.status == "ok" and len(ct.slices) == 3 and any("split" in r for r in ct.reasons)
    assert ct.hu.shape[0] == 3


def _phantom_series(root: Path, name: str, seed: int = 0, orientation=(1, 0, 0, 0, 1, 0)) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 400, (6, 12, 10)).astype(np.float32)
    uid = write_series(root / name, hu, (2.5, 0.8, 0.7), (10.0, -20.0, 30.0), rng=rng, patient=name,
                       reverse_files=True, orientation=orientation)  # fmt: skip
    return uid, hu


def _restamp(folder: Path, **changes) -> None:
    """Give every file in `folder` new attribute values (e.g. a new series UID and modality)."""
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(path)


def test_bad_inputs_are_reported_and_valid_series_still_processed(tmp_path, capsys):
    root = tmp_path / "in"
    good_uid, _ = _phantom_series(root, "mixed", seed=1)
    second_uid, _ = _phantom_series(root / "mixed_tmp", "b", seed=2)  # moved into the same folder below
    for f in (root / "mixed_tmp" / "b").iterdir():
        shutil.move(str(f), root / "mixed" / f"second_{f.name}")
    _phantom_series(root, "mr", seed=3)
    _restamp(root / "mr", Modality="MR", SeriesInstanceUID="1.2.3.4.5.6.7")
    _phantom_series(root, "nopixels", seed=4)
    _restamp(root / "nopixels", SeriesInstanceUID="1.2.3.4.5.6.8")
    victim = sorted((root / "nopixels").iterdir())[0]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    _phantom_series(root, "truncated", seed=5)
    _restamp(root / "truncated", SeriesInstanceUID="1.2.3.4.5.6.9")
    cut = sorted((root / "truncated").iterdir())[0]
    cut.write_bytes(cut.read_bytes()[:-100])
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "notes.bin").write_bytes(b"not dicom at all" * 10)

    code, report = _inspect(capsys, root)
    assert code == 3
    status = {s["seriesuid"]: s for s in report["series"]}
    assert status[good_uid]["status"] == "ok" and status[second_uid]["status"] == "ok"  # two series, one folder
    assert status[good_uid]["shape_zyx"] == [6, 12, 10]
    assert "modality MR" in status["1.2.3.4.5.6.7"]["reasons"][0]
    nopixels = status["1.2.3.4.5.6.8"]  # the header-only file is skipped, the series kept (it was an end slice)
    assert nopixels["status"] == "ok" and "without PixelData" in nopixels["reasons"][0] and nopixels["n_slices"] == 5
    assert status["1.2.3.4.5.6.9"]["status"] == "ok", status["1.2.3.4.5.6.9"]
    assert status["1.2.3.4.5.6.9"]["n_slices"] == 5
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert skipped["notes.bin"] == "not a DICOM file"
    assert "truncated" in skipped[cut.name] or "unreadable" in skipped[cut.name]


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0)], ids=["increasing", "decreasing"])
def test_geometry_round_trip_and_hu(tmp_path, orientation):
    uid, hu = _phantom_series(tmp_path, "geo", seed=7, orientation=orientation)
    (series,), _ = dicom.read_series(tmp_path, load=True)
    assert series.status == "ok" and series.seriesuid == uid
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [float(s.position @ normal) for s in series.slices]
    assert positions == sorted(positions)
    np.testing.assert_allclose(series.spacing_zyx, (2.5, 0.8, 0.7), atol=1e-6)
    np.testing.assert_allclose(series.hu, hu, atol=0.5)  # per-slice slope/intercept, signed or unsigned
    rng = np.random.default_rng(0)
    zyx = rng.uniform(0, 5, (20, 3))
    np.testing.assert_allclose(dicom.world_to_voxel(series, dicom.voxel_to_world(series, zyx)), zyx, atol=1e-9)
    # voxel [k, j, i] lies where the file for slice k says it does
    first = pydicom.dcmread(series.slices[3].path)
    ipp = np.array([float(v) for v in first.ImagePositionPatient])
    np.testing.assert_allclose(dicom.voxel_to_world(series, [3, 0, 0])[0], ipp, atol=1e-6)
    col_step = dicom.voxel_to_world(series, [3, 0, 1])[0] - ipp
    np.testing.assert_allclose(col_step, np.array(orientation[:3]) * 0.7, atol=1e-6)


def test_gantry_tilt_is_rejected_with_angle(tmp_path):
    _phantom_series(tmp_path, "tilt", seed=8)
    for path in (tmp_path / "tilt").iterdir():
        ds = pydicom.dcmread(path)
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ipp[1] += (ipp[2] - 30.0) * np.tan(np.radians(15))
        ds.ImagePositionPatient = ipp
        ds.save_as(path)
    (series,), _ = dicom.read_series(tmp_path)
    assert series.status == "rejected" and "gantry tilt of 15.0 degrees" in series.reasons[0]


def test_deidentify_copy_keeps_series_and_removes_identifiers(tmp_path, capsys):
    src = tmp_path / "in"
    uid, _ = _phantom_series(src, "patient", seed=9)
    (src / "README").write_text("hello")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    (tmp_path / "secret").write_text("s" * 32)
    code = main(["dicom", "deidentify", str(src), str(tmp_path / "out"), "--secret-file", str(tmp_path / "secret")])
    assert code == 0  # the README is listed as another file, not counted as a failure
    assert before == {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}  # input untouched
    out_files = sorted((tmp_path / "out").rglob("IM*"))
    assert len(out_files) == 6
    datasets = [pydicom.dcmread(p) for p in out_files]
    for ds in datasets:
        assert ds.PatientIdentityRemoved == "YES"
        assert "PHANTOM" not in str(ds.PatientName) and ds.PatientID != "patient"
        assert ds.InstitutionName == "ANONYMIZED" and ds.get("PatientBirthDate", "") == ""
        assert ds.SeriesInstanceUID != uid and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 6
    (series,), _ = dicom.read_series(tmp_path / "out")
    assert series.status == "ok" and series.hu.shape == (6, 12, 10)


def test_deidentify_refuses_to_write_inside_its_input(tmp_path, capsys):
    _phantom_series(tmp_path, "p", seed=1)
    assert main(["dicom", "deidentify", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "must not be inside" in capsys.readouterr().err


def test_inspect_of_a_folder_without_dicom_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    os.mkdir(tmp_path / "empty")
    assert main(["dicom", "inspect", str(tmp_path / "empty")]) == 2
    assert main(["dicom", "inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not found" in err


def test_rle_compressed_series_decodes_natively(tmp_path):
    from pydicom.uid import RLELossless

    _, hu = _phantom_series(tmp_path, "rle", seed=10)
    for path in (tmp_path / "rle").iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    (series,), skipped = dicom.read_series(tmp_path)
    assert not skipped and series.status == "ok"
    np.testing.assert_allclose(series.hu, hu, atol=0.5)
