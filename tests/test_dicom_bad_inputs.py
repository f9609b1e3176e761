"""The DICOM reader against the bad inputs of issue 18: each class of fault, built by code, small.

Every case here failed before (wrong status, wrong volume, lost series, silent skip); each asserts
the behaviour a site needs: a reason, the right volume, and the other series untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_builders import axial_positions, ds_str, make_rgb, write_enhanced, write_slices

from common.cli import main
from data_adapters import dicom

REPO = Path(__file__).resolve().parents[1]


def _pixels(n: int, seed: int = 0, shape=(6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, (n, *shape)).astype(np.int16)


def _oblique(a_deg: float, b_deg: float, iop_decimals: int, ipp_decimals: int, step: float, n: int):
    a, b = np.radians(a_deg), np.radians(b_deg)
    row = np.array([np.cos(b), np.sin(b), 0.0])
    col = np.array([-np.sin(b) * np.cos(a), np.cos(b) * np.cos(a), np.sin(a)])
    normal = np.cross(row, col)
    iop = [ds_str(v, iop_decimals) for v in (*row, *col)]
    origin = np.array([-40.3, 20.7, -110.2])
    return iop, [[ds_str(v, ipp_decimals) for v in origin + k * step * normal] for k in range(n)]


def _one(root: Path, **kwargs) -> dicom.Series:
    series, _ = dicom.read_series(root, **kwargs)
    assert len(series) == 1, [s.record() for s in series]
    return series[0]


@pytest.mark.parametrize("iop_dec, ipp_dec, step", [(4, 2, 1.0), (4, 3, 0.625), (3, 2, 1.0), (4, 1, 0.625)], ids=str)
def test_oblique_orientation_written_to_few_decimals_is_not_a_gantry_tilt(tmp_path, iop_dec, ipp_dec, step):
    iop, positions = _oblique(20, 10, iop_dec, ipp_dec, step, 8)
    write_slices(tmp_path / "s", _pixels(8), positions, iop)
    series = _one(tmp_path)
    assert series.status == "ok", series.reasons
    assert series.spacing_zyx[0] == pytest.approx(step, abs=0.01)


def test_a_real_small_tilt_is_still_rejected_at_any_precision(tmp_path):
    iop, positions = _oblique(20, 10, 6, 4, 1.0, 8)
    normal = np.cross([float(v) for v in iop[:3]], [float(v) for v in iop[3:]])
    row = np.array([float(v) for v in iop[:3]])
    tilted = [
        [ds_str(v, 4) for v in np.array([float(x) for x in p]) + k * np.tan(np.radians(3)) * row]
        for k, p in enumerate(positions)
    ]
    assert np.cross(row, normal) is not None
    write_slices(tmp_path / "s", _pixels(8), tilted, iop)
    series = _one(tmp_path)
    assert series.status == "rejected" and "gantry tilt of 3.0 degrees" in series.reasons[0]


def test_thin_slices_written_to_one_decimal_are_not_a_gap(tmp_path):
    write_slices(tmp_path / "s", _pixels(16), axial_positions(16, 0.625, 1))
    series = _one(tmp_path)
    assert series.status == "ok", series.reasons
    assert series.spacing_zyx[0] == pytest.approx(0.625, abs=0.01)  # the mean step, not the rounded 0.6
    # a real missing slice is still a gap
    gap = axial_positions(17, 0.625, 1)
    del gap[8]
    write_slices(tmp_path / "t", _pixels(16), gap, series_uid="1.2.826.0.1.3680043.8.498.2")
    rejected = next(s for s in dicom.read_series(tmp_path / "t")[0])
    assert rejected.status == "rejected" and "gap" in rejected.reasons[0]


def test_duplicate_positions_with_identical_pixels_are_dropped(tmp_path):
    pixels = _pixels(5)
    write_slices(tmp_path / "s", pixels, axial_positions(5, 2.0, 2))
    write_slices(tmp_path / "s", pixels[1:3], axial_positions(5, 2.0, 2)[1:3], name="COPY")
    series = _one(tmp_path)
    assert series.status == "ok" and series.hu.shape == (5, 6, 5)
    assert any("2 duplicate image(s) with identical pixels" in r for r in series.reasons)


def test_two_phases_at_the_same_positions_become_two_volumes(tmp_path):
    arterial, venous = _pixels(5, seed=1), _pixels(5, seed=2)
    positions = axial_positions(5, 2.0, 2)
    write_slices(tmp_path / "s", arterial, positions, extra=[{"AcquisitionNumber": 1}] * 5, name="A")
    write_slices(tmp_path / "s", venous, positions, extra=[{"AcquisitionNumber": 2}] * 5, name="V")
    series, _ = dicom.read_series(tmp_path)
    assert [s.seriesuid.split("#")[1] for s in series] == ["AcquisitionNumber=1", "AcquisitionNumber=2"]
    assert all(s.status == "ok" and s.hu.shape == (5, 6, 5) for s in series)
    np.testing.assert_array_equal(series[0].hu, arterial.astype(np.float32))
    np.testing.assert_array_equal(series[1].hu, venous.astype(np.float32))


def test_two_phases_without_a_telling_key_are_rejected_not_merged(tmp_path):
    positions = axial_positions(5, 2.0, 2)
    write_slices(tmp_path / "s", _pixels(5, seed=1), positions, name="A")
    write_slices(tmp_path / "s", _pixels(5, seed=2), positions, name="V")
    series = _one(tmp_path)
    assert series.status == "rejected" and "share a slice position" in series.reasons[0]


def test_truncated_copies_are_skipped_and_the_series_kept(tmp_path):
    paths = write_slices(tmp_path / "s", _pixels(6), axial_positions(6, 2.0, 2))
    data = paths[2].read_bytes()
    header_end = data.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData tag: keep the header only
    (tmp_path / "s" / "copy_header_only.dcm").write_bytes(data[:header_end])
    (tmp_path / "s" / "copy_cut_in_pixels.dcm").write_bytes(data[: header_end + 40])
    series, skipped = dicom.read_series(tmp_path)
    assert [s.status for s in series] == ["ok"] and series[0].hu.shape == (6, 6, 5)
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert reasons["copy_cut_in_pixels.dcm"].startswith("truncated pixel data")
    header_only = reasons.get("copy_header_only.dcm") or "; ".join(series[0].reasons)
    assert "PixelData" in header_only or "truncated" in header_only


def test_enhanced_ct_reads_per_frame_geometry_and_rescale(tmp_path):
    pixels = _pixels(6, seed=3)
    positions = axial_positions(6, 1.25, 3)[::-1]  # frames stored top to bottom: the reader must sort
    slopes = [("1", str(-1024 + k)) for k in range(6)]
    write_enhanced(tmp_path / "e" / "enhanced.dcm", pixels, positions, slopes=slopes)
    series = _one(tmp_path)
    assert series.status == "ok", series.reasons
    assert series.hu.shape == (6, 6, 5) and series.spacing_zyx == pytest.approx((1.25, 0.8, 0.8))
    expected = np.stack([pixels[k].astype(np.float32) - 1024 + k for k in range(6)])[::-1]
    np.testing.assert_array_equal(series.hu, expected)
    assert series.origin_xyz[2] == pytest.approx(-100.0)


def test_enhanced_ct_with_two_temporal_positions_becomes_two_volumes(tmp_path):
    first, second = _pixels(4, seed=4), _pixels(4, seed=5)
    positions = axial_positions(4, 2.0, 2)
    write_enhanced(
        tmp_path / "e" / "cine.dcm", np.concatenate([first, second]), positions + positions, temporal=[1] * 4 + [2] * 4
    )
    series, _ = dicom.read_series(tmp_path)
    assert [s.seriesuid.split("#")[1] for s in series] == ["TemporalPositionIndex=1", "TemporalPositionIndex=2"]
    np.testing.assert_array_equal(series[0].hu, first.astype(np.float32) - 1024)
    np.testing.assert_array_equal(series[1].hu, second.astype(np.float32) - 1024)


def test_multiframe_without_functional_groups_and_rgb_are_rejected_with_reasons(tmp_path):
    write_enhanced(tmp_path / "m" / "mf.dcm", _pixels(4), axial_positions(4, 1, 1), functional_groups=False)
    uid = "1.2.826.0.1.3680043.8.498.3"
    make_rgb(write_slices(tmp_path / "rgb", _pixels(3), axial_positions(3, 2.0, 2), series_uid=uid))
    series, skipped = dicom.read_series(tmp_path)
    assert [s.status for s in series] == ["rejected"] and "colour image (RGB" in series[0].reasons[0]
    assert "without per-frame functional groups" in skipped[0]["reason"]


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"PixelSpacing": ["0", "0"]}, "PixelSpacing"),
        ({"RescaleSlope": "1e30"}, "RescaleSlope"),
        ({"RescaleSlope": "100"}, "HU range"),
    ],
    ids=["spacing0", "slope1e30", "hu-range"],
)
def test_physically_implausible_headers_are_rejected(tmp_path, change, reason):
    write_slices(tmp_path / "s", _pixels(4), axial_positions(4, 2.0, 2), extra=[change] * 4)
    series = _one(tmp_path)
    assert series.status == "rejected" and reason in series.reasons[0]


def _without_privileges(*args: str) -> subprocess.CompletedProcess:
    """`fedsite ARGS` run as a process that cannot read mode-000 files and folders.

    root reads anything (CAP_DAC_OVERRIDE): as root, the command runs with every capability dropped
    (util-linux setpriv), so mode 000 applies as it would for a hospital's service account.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "common.cli", *args]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_folders_and_files_without_read_permission_are_reported(tmp_path):
    root = tmp_path / "in"
    paths = write_slices(root / "ok", _pixels(3), axial_positions(3, 2.0, 2))
    shutil.copy(paths[0], root / "ok" / "locked_copy.dcm")
    write_slices(root / "locked", _pixels(3), axial_positions(3, 2.0, 2), series_uid="1.2.826.0.1.3680043.8.498.4")
    (root / "locked").chmod(0o000)
    (root / "ok" / "locked_copy.dcm").chmod(0o000)
    (tmp_path / "key").write_text("k" * 32)
    try:
        inspect = _without_privileges("dicom", "inspect", str(root), "--json")
        deid = _without_privileges("dicom", "deidentify", str(root), str(tmp_path / "out"), "--secret-file",
                                   str(tmp_path / "key"))  # fmt: skip
    finally:
        (root / "locked").chmod(0o755)
        (root / "ok" / "locked_copy.dcm").chmod(0o644)
    assert inspect.returncode == 3, inspect.stderr
    report = json.loads(inspect.stdout)
    assert [s["status"] for s in report["series"]] == ["ok"]
    assert report["skipped"] == [
        {"path": str(root / "locked"), "reason": "folder not readable (Permission denied)"},
        {"path": str(root / "ok" / "locked_copy.dcm"), "reason": "file not readable (permission denied)"},
    ]
    assert deid.returncode == 3, deid.stderr
    failed = {Path(f["path"]).name: f["reason"] for f in json.loads(deid.stdout)["failed"]}
    assert set(failed) == {"locked", "locked_copy.dcm"} and "not readable" in failed["locked"]


def test_pydicom_warnings_stay_off_stderr_unless_debug(tmp_path):
    paths = write_slices(tmp_path / "s", _pixels(3), axial_positions(3, 2.0, 2))
    for path in paths:  # pixel data longer than Rows x Columns: pydicom warns when it decodes
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.PixelData + b"\0" * 8
        ds.save_as(path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "common.cli", "dicom", "inspect", str(tmp_path)]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "UserWarning" not in quiet.stderr and "excess padding" not in quiet.stderr
    loud = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, env=env, timeout=120)
    assert "excess padding" in loud.stderr and loud.returncode == 0


def test_inspect_table_has_a_header_folders_hu_and_a_skipped_summary(tmp_path, capsys):
    write_slices(tmp_path / "patient1" / "ct", _pixels(4), axial_positions(4, 2.0, 2))
    write_slices(
        tmp_path / "patient2", _pixels(3), axial_positions(3, 2.0, 2), extra=[{"Modality": "MR"}] * 3,
        series_uid="1.2.826.0.1.3680043.8.498.5",
    )  # fmt: skip
    for k in range(30):
        (tmp_path / "notes" / f"n{k}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "notes" / f"n{k}.txt").write_text("x")
    write_slices(tmp_path / ".git" / "objects", _pixels(3), axial_positions(3, 2.0, 2), series_uid="1.2.9.9")
    (tmp_path / ".hidden.dcm").write_bytes(b"x")
    capsys.readouterr()
    assert main(["dicom", "inspect", str(tmp_path), "--max-skipped", "3"]) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"DICOM series under {tmp_path.resolve()}: 2 found, 1 ok, 1 rejected")
    assert lines[1].split() == "folder modality slices shape spacing mm HU range status reason".split()
    ok = next(line for line in lines if line.startswith("patient1/ct"))
    hu = np.concatenate([_pixels(4).ravel()])
    assert f"{hu.min():.0f}..{hu.max():.0f}" in ok and "4x6x5" in ok and " ok " in ok
    assert any(line.startswith("patient2") and "modality MR" in line for line in lines)
    assert "skipped 30 file(s): 30 not a DICOM file" in "\n".join(lines)
    assert lines[-1].strip() == "... and 27 more (--max-skipped N to list more, --json for all)"
    assert not any(".git" in line or ".hidden" in line for line in lines)
    capsys.readouterr()
    assert main(["dicom", "inspect", str(tmp_path), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"series", "skipped"} and len(report["skipped"]) == 30
    contract = {"seriesuid", "modality", "n_slices", "shape_zyx", "spacing_zyx", "origin_xyz", "direction",
                "hu_min", "hu_max", "status", "reasons", "files"}  # fmt: skip
    assert all(contract <= set(rec) for rec in report["series"])
