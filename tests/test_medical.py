"""`fedsite medical synth/train/detect/evaluate` end to end on tiny phantoms, plus bad input and runners."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
from dicom_builders import axial_positions, make_rgb, write_enhanced, write_slices

from common.cli import main
from common.progress import set_quiet
from data_adapters import dicom

TINY_SETS = ["spacing_mm=5", "channels=8,16,24,32", "patch=32", "window=32", "epochs=1", "steps_per_epoch=3"]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthesize 3 tiny series and train on them through the CLI (with a --config file and --set)."""
    set_quiet(True)
    root = tmp_path_factory.mktemp("medical")
    assert (
        main(["medical", "synth", "--out", str(root / "data"), "--scans", "3", "--scale", "tiny", "--seed", "3"]) == 0
    )
    (root / "cfg.toml").write_text("[medical]\nnms_mm = 9.0\n")
    args = ["medical", "train", "--data", str(root / "data"), "--annotations", str(root / "data" / "annotations.csv")]
    args += ["--out", str(root / "model"), "--config", str(root / "cfg.toml"), *_sets(TINY_SETS), "--seed", "1"]
    assert main(args) == 0
    yield root
    set_quiet(False)


def test_synth_series_are_valid_and_annotations_point_at_nodules(trained):
    series, skipped = dicom.read_series(trained / "data")
    assert len(series) == 3 and all(s.status == "ok" for s in series) and not skipped
    with open(trained / "data" / "annotations.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["seriesuid"] for r in rows} <= {s.seriesuid for s in series}
    by_uid = {s.seriesuid: s for s in series}
    for row in rows:
        s = by_uid[row["seriesuid"]]
        zyx = np.round(dicom.world_to_voxel(s, [float(row[k]) for k in ("coordX", "coordY", "coordZ")])[0]).astype(int)
        assert s.hu[tuple(zyx)] > -750  # the centre is denser than aerated lung (-860 HU)


def test_model_directory_holds_config_and_onnx(trained):
    files = {p.name for p in (trained / "model").iterdir()}
    assert {"model.pt", "config.toml", "metadata.json", "model.onnx"} <= files
    text = (trained / "model" / "config.toml").read_text()
    assert "nms_mm = 9.0" in text and "window = 32" in text
    meta = json.loads((trained / "model" / "metadata.json").read_text())
    assert meta["vertical"] == "medical" and meta["data_fingerprint"].startswith("sha256:")


def test_detect_writes_candidates_report_and_identifier_free_overlays(trained, capsys):
    out = trained / "det"
    assert main(["medical", "detect", str(trained / "data"), "--model", str(trained / "model"), "--out", str(out)]) == 0
    with open(out / "candidates.csv") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
        rows = list(reader)
    report = json.loads((out / "report.json").read_text())
    assert report["runner"] == "onnxruntime"
    assert len(report["series"]) == 3 and all(s["status"] == "ok" for s in report["series"])
    assert sum(s["n_candidates"] for s in report["series"]) == len(rows)
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    for s in report["series"]:
        assert s["timings"]["total_s"] > 0
        for png in s["overlays"]:
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    patient_ids = {str(pydicom.dcmread(next((trained / "data" / d).iterdir())).PatientID) for d in ("scan_000",)}
    blobs = [(out / "report.json").read_bytes()] + [p.read_bytes() for p in (out / "overlays").rglob("*.png")]
    for blob in blobs:
        assert b"PHANTOM" not in blob and not any(pid.encode() in blob for pid in patient_ids)
    capsys.readouterr()
    args = ["medical", "evaluate", "--candidates", str(out / "candidates.csv")]
    assert main([*args, "--annotations", str(trained / "data" / "annotations.csv"), "--bootstrap", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_scans"] == 3 and 0.0 <= result["cpm"] <= 1.0


def test_detect_reports_rejected_series_and_still_processes_the_rest(trained, tmp_path, capsys):
    data = tmp_path / "in"
    shutil.copytree(trained / "data" / "scan_000", data / "good")
    shutil.copytree(trained / "data" / "scan_001", data / "mr")
    for path in (data / "mr").iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality, ds.SeriesInstanceUID = "MR", "1.2.3.999"
        ds.save_as(path)
    (data / "junk.dcm").write_bytes(b"\x00" * 50)
    code = main(["medical", "detect", str(data), "--model", str(trained / "model"), "--out", str(tmp_path / "o")])
    assert code == 3
    assert "Traceback" not in capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    status = {s["seriesuid"]: s for s in report["series"]}
    assert status["1.2.3.999"]["status"] == "rejected" and "modality MR" in status["1.2.3.999"]["reasons"][0]
    good = [s for s in report["series"] if s["status"] == "ok"]
    assert len(good) == 1 and "n_candidates" in good[0]
    assert report["skipped"][0]["path"].endswith("junk.dcm")


def test_onnx_runtime_and_torch_find_the_same_candidates(trained):
    from common import runs
    from common.config import replace
    from verticals.medical.infer import detect_case, fp_params, onnx_runner, torch_runner
    from verticals.medical.preprocess import load_cases

    loaded = runs.load_model(trained / "model")
    # every local maximum (score_threshold 0, report_all): the 1-epoch model's heat may be low everywhere
    cfg = replace(loaded.cfg, score_threshold=0.0)
    (case,), _, _ = load_cases(trained / "data" / "scan_002", None, cfg)
    fp = fp_params(loaded.model)
    a = detect_case(case, torch_runner(loaded.model), cfg, fp, report_all=True)
    b = detect_case(case, onnx_runner(trained / "model" / "model.onnx"), cfg, fp, report_all=True)
    assert len(a["probability"]) == len(b["probability"]) > 0
    np.testing.assert_allclose(a["probability"], b["probability"], atol=1e-3)
    np.testing.assert_allclose(a["xyz"], b["xyz"], atol=0.05)


def test_train_and_detect_bad_input_are_one_line_errors(trained, tmp_path, capsys):
    data = str(trained / "data")
    base = ["medical", "train", "--data", data, "--out", str(tmp_path / "m"), *_sets(TINY_SETS)]
    assert main([*base, "--annotations", str(tmp_path / "missing.csv")]) == 2
    other = tmp_path / "other.csv"
    other.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,0,0,0,5\n")
    assert main([*base, "--annotations", str(other)]) == 2
    assert main([*base, "--annotations", str(other), "--set", "no_such_key=1"]) == 2
    assert main(["medical", "detect", data, "--model", str(trained / "model"), "--out", f"{data}/x"]) == 2
    assert main(["medical", "detect", data, "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main([*base, "--annotations", f"{data}/annotations.csv", "--set", "window=40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if line.startswith("fedsite:")]
    assert len(err) == 6 and all(line.startswith("fedsite: error:") for line in err)
    assert "missing.csv" in err[0] and "no annotated nodule" in err[1] and "no_such_key" in err[2]
    assert "multiple of 16" in err[5]
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_detector_learns_to_find_nodules(tmp_path):
    """A short training on tiny phantoms finds most nodules of its own scans (it could fail: it must learn)."""
    from common.config import replace
    from common.device import seed_everything, set_threads
    from verticals.medical.config import PRESETS
    from verticals.medical.task import TASK

    set_threads(None)
    seed_everything(0)
    cfg = replace(PRESETS["small"], epochs=8, steps_per_epoch=12)
    data = TASK.load_data(cfg, TASK.synthesize(tmp_path / "d", seed=11, scale="tiny"), "train")
    model = TASK.build_model(cfg)
    untrained = TASK.evaluate(model, data, cfg)
    TASK.fit(model, data, cfg)
    trained_metrics = TASK.evaluate(model, data, cfg)
    assert trained_metrics["sensitivity_any"] >= 0.5
    assert trained_metrics["cpm"] > untrained["cpm"]


def test_detect_reports_a_40_mm_mass_in_masses_csv_and_report(trained, tmp_path):
    """A 40 mm soft-tissue mass in a lung is listed in masses.csv and report.json beside the nodule list."""
    from scipy import ndimage

    from data_adapters.synth.ct_phantom import make_phantom, write_series
    from verticals.medical.lungmask import lung_mask

    sp = (6.0, 5.0, 5.0)
    rng = np.random.default_rng(5)
    hu, _ = make_phantom(rng, (28, 56, 56), sp, (8.0, 16.0), 1)
    depth = ndimage.distance_transform_edt(lung_mask(hu, sp).lungs, sampling=sp)
    depth[:, :, 28:] = 0  # one lung: the point farthest from its wall
    centre = np.array(np.unravel_index(np.argmax(depth), depth.shape)) * np.array(sp)
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(hu.shape, sp)], indexing="ij", sparse=True)
    hu[sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 20.0**2] = 40.0
    origin = np.array([-140.0, -140.0, -80.0])
    write_series(tmp_path / "in" / "s", hu, sp, origin, rng=rng, patient="MASS", reverse_files=False)
    out = tmp_path / "out"
    assert main(["medical", "detect", str(tmp_path / "in"), "--model", str(trained / "model"), "--out", str(out)]) == 0
    with open(out / "masses.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    xyz = np.array([float(rows[0][k]) for k in ("coordX", "coordY", "coordZ")])
    assert np.linalg.norm(xyz - (origin + centre[::-1])) < 6.0
    assert 32.0 < float(rows[0]["diameter_mm"]) < 46.0
    (series,) = json.loads((out / "report.json").read_text())["series"]
    assert series["lung_mask"]["status"] == "ok" and len(series["masses"]) == 1
    assert (out / "overlays" / series["seriesuid"] / "lung_mask.png").read_bytes()[:4] == b"\x89PNG"


def test_detect_batch_survives_colour_multiframe_and_degenerate_series(trained, tmp_path, capsys):
    """Issue 18: RGB and Enhanced CT series once aborted the batch (exit 1, no report): now each has its status."""
    data = tmp_path / "in"
    shutil.copytree(trained / "data" / "scan_000", data / "good")
    (good,), _ = dicom.read_series(data / "good")
    hu = good.hu.astype(np.int16)
    positions = [[repr(float(v)) for v in good.origin_xyz[:2]] + [repr(good.origin_xyz[2] + k * good.spacing_zyx[0])]
                 for k in range(len(hu))]  # fmt: skip
    spacing = [repr(float(v)) for v in good.spacing_zyx[1:]]
    write_enhanced(data / "enhanced" / "mf.dcm", hu + 1024, positions, spacing=spacing, series_uid="1.2.826.0.1.7")
    make_rgb(write_slices(data / "rgb", hu[:3, :4, :4], axial_positions(3, 2.0, 2), series_uid="1.2.826.0.1.8"))
    write_slices(data / "tiny", hu[:2, :1, :1], axial_positions(2, 0.5, 2), spacing=("0.5", "0.5"),
                 series_uid="1.2.826.0.1.9")  # fmt: skip
    code = main(["medical", "detect", str(data), "--model", str(trained / "model"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err and "internal error" not in err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    status = {s["seriesuid"]: s for s in report["series"]}
    assert status[good.seriesuid]["status"] == "ok" and "n_candidates" in status[good.seriesuid]
    enhanced = status["1.2.826.0.1.7"]  # Enhanced CT of the same volume: read and detected like the original
    assert enhanced["status"] == "ok" and enhanced["shape_zyx"] == status[good.seriesuid]["shape_zyx"]
    assert status["1.2.826.0.1.8"]["status"] == "rejected" and "colour" in status["1.2.826.0.1.8"]["reasons"][0]
    tiny = status["1.2.826.0.1.9"]  # a 2x1x1 volume: degenerate but valid, processed with no candidate
    assert tiny["status"] == "ok" and tiny["n_candidates"] == 0
    assert (tmp_path / "o" / "candidates.csv").exists()


def test_detect_without_model_uses_the_shipped_weights(trained, tmp_path):
    """`fedsite medical detect DIR --out OUT` works out of the box: the default is the shipped detector."""
    from verticals.medical.api import SHIPPED_WEIGHTS

    assert (SHIPPED_WEIGHTS / "model.pt").stat().st_size < 8_000_000
    assert (SHIPPED_WEIGHTS / "MODEL_CARD.md").exists()
    data = tmp_path / "in"
    shutil.copytree(trained / "data" / "scan_000", data / "scan_000")
    out = tmp_path / "out"
    assert main(["medical", "detect", str(data), "--out", str(out), "--overlays", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == str(SHIPPED_WEIGHTS)
    (series,) = report["series"]
    assert series["status"] == "ok" and series["lung_mask"]["status"] == "ok"
    assert series["n_candidates"] < 40  # calibrated threshold, not a full list on every scan
