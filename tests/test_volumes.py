"""Volume files (MetaImage, NIfTI, NRRD) beside DICOM: one phantom in every format, same candidates.

The phantom is written once as a DICOM series and once per file format (some stored with flipped
axes, NIfTI and detached NRRD in RAS space); `fedsite medical inspect` must report one geometry for
all of them and `fedsite medical detect` the same candidates at the same world positions. The
detector is trained through the CLI on LUNA16-style .mhd files, so training reads volumes too.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from volume_writers import (
    flipped,
    write_luna16_mhd,
    write_nhdr_ras,
    write_nifti,
    write_with_simpleitk,
)

from common.cli import main
from common.progress import set_quiet
from data_adapters import volumes
from data_adapters.synth.ct_phantom import SCALES, make_phantom, write_series

TINY_SETS = ["spacing_mm=5", "channels=8,16,24,32", "patch=32", "window=32", "epochs=1", "steps_per_epoch=3"]
TINY_SETS += ["score_threshold=0.0", "max_candidates=30"]  # many candidates: more positions to compare
SPACING = (6.3, 5.7, 6.1)  # z, y, x: anisotropic, none equal
ORIGIN = np.array([-141.37, -128.91, -233.55])
EYE = np.eye(3)
# file name -> (writer, stored axis flips x,y,z)
FORMATS = {
    "ph_mhd.mhd": (write_luna16_mhd, (False, False, False)),
    "ph_mha.mha": (write_with_simpleitk, (False, False, True)),
    "ph_nii.nii": (write_nifti, (True, False, False)),
    "ph_niigz.nii.gz": (write_nifti, (False, True, True)),
    "ph_nrrd.nrrd": (write_with_simpleitk, (True, True, False)),
    "ph_nhdr.nhdr": (write_nhdr_ras, (False, True, False)),
}


def _phantom(seed: int) -> tuple[np.ndarray, list]:
    size, nz, *_ = SCALES["tiny"]
    rng = np.random.default_rng(seed)
    hu, nodules = make_phantom(rng, (nz, size, size), SPACING, (14.0, 22.0), 2)
    hu = hu + rng.normal(0, 15, hu.shape)
    return np.clip(np.round(hu), -1024, 3000).astype(np.int16), nodules  # what every DICOM encoding keeps


def _write(path, hu, flips):
    writer, _ = FORMATS[path.name]
    arr, origin, direction = flipped(hu, ORIGIN, SPACING, EYE, flips)
    if writer is write_luna16_mhd:
        writer(path, arr, origin, SPACING)
    else:
        writer(path, arr, origin, SPACING, direction)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A model trained on .mhd phantoms, and a folder with one phantom as DICOM and in every file format."""
    set_quiet(True)
    root = tmp_path_factory.mktemp("volumes")
    train, rows = root / "train", []
    train.mkdir()
    for n in range(3):
        hu, nodules = _phantom(10 + n)
        write_luna16_mhd(train / f"train_{n}.mhd", hu, ORIGIN, SPACING)
        rows += [[f"train_{n}", *(ORIGIN + c[::-1]), d] for c, d, *_ in nodules]
    with open(train / "annotations.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], *rows])
    args = ["medical", "train", "--data", str(train), "--annotations", str(train / "annotations.csv")]
    args += ["--out", str(root / "model"), "--seed", "1", *[a for s in TINY_SETS for a in ("--set", s)]]
    assert main(args) == 0
    data = root / "data"
    hu, _ = _phantom(99)
    uid = write_series(
        data / "dicom", hu.astype(np.float32), SPACING, ORIGIN, rng=np.random.default_rng(0),
        patient="P", reverse_files=True,
    )  # fmt: skip
    for name, (_, flips) in FORMATS.items():
        _write(data / name, hu, flips)
    yield root, uid
    set_quiet(False)


def test_inspect_lists_every_format_with_the_dicom_geometry(world, capsys):
    root, uid = world
    assert main(["medical", "inspect", str(root / "data"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == []  # .raw data files are the volumes' own, not "not DICOM"
    recs = {r["seriesuid"]: r for r in report["series"]}
    assert set(recs) == {uid, *(volumes.series_uid_of(n) for n in FORMATS)}
    ref = recs[uid]
    for name in FORMATS:
        rec = recs[volumes.series_uid_of(name)]
        assert rec["status"] == "ok", rec
        assert rec["shape_zyx"] == ref["shape_zyx"] and rec["n_slices"] == ref["n_slices"]
        np.testing.assert_allclose(rec["spacing_zyx"], ref["spacing_zyx"], atol=1e-5)
        np.testing.assert_allclose(rec["origin_xyz"], ref["origin_xyz"], atol=1e-4)
        np.testing.assert_allclose(rec["direction"], ref["direction"], atol=1e-6)
        assert (rec["hu_min"], rec["hu_max"]) == (ref["hu_min"], ref["hu_max"])
        assert set(rec) >= set(ref) - {"folder"}
    assert recs["ph_mhd"]["files"] == 2 and recs["ph_nii"]["files"] == 1
    assert main(["dicom", "inspect", str(root / "data"), "--json"]) == 3  # DICOM-only: the files are skipped


def test_detect_finds_the_same_candidates_in_every_format(world):
    root, uid = world
    out = root / "det"
    assert main(["medical", "detect", str(root / "data"), "--model", str(root / "model"), "--out", str(out)]) == 0
    with open(out / "candidates.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_uid: dict[str, list] = {}
    for r in rows:
        values = [float(r[k]) for k in ("coordX", "coordY", "coordZ", "probability")]
        by_uid.setdefault(r["seriesuid"], []).append(values)
    ref = np.array(sorted(by_uid[uid], key=lambda v: (-v[3], *v[:3])))
    assert len(ref) >= 10
    for name in FORMATS:
        got = np.array(sorted(by_uid[volumes.series_uid_of(name)], key=lambda v: (-v[3], *v[:3])))
        assert got.shape == ref.shape, name
        # a voxel is 5.7-6.3 mm; the CSV keeps 3 decimals
        np.testing.assert_allclose(got[:, :3], ref[:, :3], atol=0.01, err_msg=name)
        np.testing.assert_allclose(got[:, 3], ref[:, 3], atol=1e-4, err_msg=name)
    report = json.loads((out / "report.json").read_text())
    assert len(report["series"]) == 1 + len(FORMATS) and report["skipped"] == []


def test_broken_and_implausible_volume_files_are_rejected_with_reasons(tmp_path, capsys):
    import SimpleITK as sitk

    hu, _ = _phantom(5)
    write_luna16_mhd(tmp_path / "good.mhd", hu, ORIGIN, SPACING)
    write_luna16_mhd(tmp_path / "noraw.mhd", hu, ORIGIN, SPACING)
    (tmp_path / "noraw.raw").unlink()
    sitk.WriteImage(sitk.GetImageFromArray(hu[0]), str(tmp_path / "flat.nrrd"))  # 2-D
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([hu] * 3, -1), isVector=True), str(tmp_path / "rgb.mha"))
    one_time_point = sitk.JoinSeries([sitk.GetImageFromArray(hu)])  # 4-D with one time point
    sitk.WriteImage(one_time_point, str(tmp_path / "t1.nii.gz"))
    hot = sitk.GetImageFromArray(hu.astype(np.float32) * 1000)
    sitk.WriteImage(hot, str(tmp_path / "hot.nii.gz"))
    (tmp_path / "sub").mkdir()
    write_luna16_mhd(tmp_path / "sub" / "good.mhd", hu, ORIGIN, SPACING)  # same seriesuid twice
    assert main(["medical", "inspect", str(tmp_path), "--json"]) == 3
    recs = {(r["seriesuid"], r["path"]): r for r in json.loads(capsys.readouterr().out)["series"]}
    bad = [(uid if uid != "good" else path, r["reasons"][-1]) for (uid, path), r in recs.items() if r["status"] != "ok"]
    reason = dict(bad)
    assert "data file noraw.raw is missing" in reason["noraw"]
    assert "2-D image" in reason["flat"] and "components per voxel" in reason["rgb"]
    assert "HU range" in reason["hot"]
    assert "already used" in reason[str(tmp_path / "sub" / "good.mhd")]
    assert recs[("good", str(tmp_path / "good.mhd"))]["status"] == "ok"
    assert recs[("t1", str(tmp_path / "t1.nii.gz"))]["shape_zyx"] == list(hu.shape)


def test_seriesuid_is_the_luna16_file_stem():
    uid = "1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260"
    assert volumes.series_uid_of(f"/x/{uid}.mhd") == uid
    assert volumes.series_uid_of("/x/case.01.nii.gz") == "case.01"
    assert volumes.series_uid_of("/x/CASE.NRRD") == "CASE"
    assert volumes.volume_suffix("/x/notes.txt") is None and volumes.volume_suffix("/x/.nii") is None
