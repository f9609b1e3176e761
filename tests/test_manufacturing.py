"""Manufacturing vertical: post-processing, metrics, baseline, training, and the four commands end to end."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess

import cv2
import numpy as np
import pytest
import torch

from common import cli
from common.config import replace
from common.task import FitContext, Proximal
from data_adapters.synth.inspection import write_dataset
from verticals.manufacturing import TASK
from verticals.manufacturing.baseline import baseline_predictions, fit_baseline
from verticals.manufacturing.config import InspectConfig
from verticals.manufacturing.data import InspectionData, load_split
from verticals.manufacturing.evaluate import aupro, metrics_from
from verticals.manufacturing.postprocess import decide, mask_boxes

TINY = [
    "--set",
    "image_size=64",
    "--set",
    "width=8",
    "--set",
    "epochs=1",
    "--set",
    "steps_per_epoch=10",
    "--set",
    "crop=64",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run `fedsite ...` in this process through common.cli.main (same parsing and exit-code mapping,
    without paying torch's import time again per call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def test_decide_finds_each_blob_and_scales_boxes():
    cfg = InspectConfig(blur_sigma=0.0, morph_kernel=1, min_area_frac=0.001)
    logits = np.full((64, 64), -6.0, np.float32)
    logits[10:20, 5:15] = 6.0
    logits[40:44, 40:60] = 6.0
    verdict = decide(logits, score=0.9, thresholds=(0.5, 0.5), cfg=cfg, image_shape=(128, 256))
    assert verdict.is_defective and len(verdict.defects) == 2
    boxes = sorted((d.x, d.y, d.w, d.h) for d in verdict.defects)
    assert boxes == [(20, 20, 40, 20), (160, 80, 80, 8)]  # x scaled by 4, y by 2
    assert all(len(d.contour) >= 4 for d in verdict.defects)
    ok = decide(logits, score=0.1, thresholds=(0.5, 0.5), cfg=cfg)
    assert not ok.is_defective and ok.defects == []


def test_aupro_rewards_maps_that_cover_every_region():
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 2:6, 2:6] = True  # a small defect
    masks[0, 10:30, 10:30] = True  # a large one
    noise = np.random.default_rng(0).random((2, 32, 32)) * 0.1
    perfect = noise + masks
    only_large = noise.copy()
    only_large[0, 10:30, 10:30] += 1
    assert aupro(perfect, masks) > 0.95
    assert 0.45 < aupro(only_large, masks) < 0.7  # one of two regions found: PRO ~ 0.5 + chance
    assert aupro(noise, masks) < 0.3


def _tiny_data(tmp_path, category="metal"):
    cfg = TASK.tiny_config()
    source = TASK.synthesize(tmp_path / category, seed=0, scale="tiny")
    return cfg, TASK.load_data(cfg, source, "train"), TASK.load_data(cfg, source, "test")


def test_baseline_flags_high_contrast_defects(tmp_path):
    cfg = InspectConfig(image_size=128)
    source = write_dataset(tmp_path / "metal", "metal", seed=0, scale="small")
    train, test = load_split(cfg, source, "train"), load_split(cfg, source, "test")
    template = fit_baseline(train, cfg)
    scores, maps, boxes = baseline_predictions(template, test, cfg)
    assert maps.shape == (len(test), 128, 128) and len(boxes) == len(test)
    metrics = metrics_from(scores, maps, template.image_threshold, boxes, test, cfg)
    assert metrics["image_auroc_hole"] >= 0.9  # dark holes on brushed metal: the template's easy case
    assert list(metrics)[:4] == ["image_auroc", "pixel_auroc", "aupro", "f1_image"]
    assert {"box_precision", "box_recall", "image_auroc_stain"} <= set(metrics)


def test_fit_adds_proximal_and_extra_loss_and_calibrates(tmp_path):
    cfg, train, _ = _tiny_data(tmp_path)
    cfg = replace(cfg, steps_per_epoch=4)
    model = TASK.build_model(cfg)
    anchor = {k: v.detach().clone() + 1.0 for k, v in model.named_parameters()}
    calls = []

    def extra(m, inputs, outputs):
        calls.append(outputs[0].shape)
        return outputs[1].mean() * 0.0

    metrics = TASK.fit(
        model, train, cfg, epochs=1, context=FitContext(proximal=Proximal(anchor, mu=0.1), extra_loss=extra)
    )
    plain = TASK.fit(TASK.build_model(cfg), train, cfg, epochs=1)
    assert metrics["loss"] > plain["loss"]  # the proximal term (far anchor) is in the loss
    assert len(calls) == cfg.steps_per_epoch and calls[0][-1] == cfg.crop
    assert float(model.calibrated) == 1.0
    assert 0 < float(model.image_threshold) < 1 and float(model.pixel_threshold) >= cfg.min_pixel_threshold


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset and a model directory trained on it through the CLI (shared by the tests below)."""
    from verticals.manufacturing import api, deploy

    root = tmp_path_factory.mktemp("mfg")
    proc = _cli("manufacturing", "synth", "--out", str(root / "data"), "--scale", "tiny", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    calibrated_on = []

    def recording(model, cfg, calibration, work):  # the real deployment step, its input kept for a test
        calibrated_on.extend(calibration)
        return deploy.prepare_deployment(model, cfg, calibration, work)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "prepare_deployment", recording)
        proc = _cli(
            "manufacturing", "train", "--data", str(root / "data"), "--out", str(root / "model"), "--seed", "3", *TINY
        )
    assert proc.returncode == 0, proc.stderr
    torch.save(calibrated_on, root / "calibrated_on.pt")
    return root


def test_compress_calibrates_on_the_images_training_deployed_with(trained):
    """TASK.calibration_batches (what `fedsite compress` quantizes with) on the model's own config
    and training data gives exactly the images `train` calibrated its INT8 model on, defects included."""
    from common import runs

    used = torch.load(trained / "calibrated_on.pt")
    cfg = runs.load_model(trained / "model", expect="manufacturing").cfg
    assert cfg.seed == 3  # --seed reaches the config, so the synthetic anomalies are the same ones
    batches = TASK.calibration_batches(TASK.load_data(cfg, trained / "data", "train"), cfg)
    ours = torch.cat([b for (b,) in batches])
    assert torch.equal(ours, torch.cat(used))
    half = len(ours) // 2
    assert all((ours[i] - ours[i + half]).abs().amax() > 1.5 / 255 for i in range(half))  # anomalies pasted


@pytest.mark.slow
def test_train_writes_a_complete_model_directory(trained):
    model = trained / "model"
    names = {p.name for p in model.iterdir()}
    assert {"model.pt", "config.toml", "metadata.json", "model.onnx", "baseline.npz"} <= names
    meta = json.loads((model / "metadata.json").read_text())
    deployment = meta["deployment"]
    assert deployment["chosen"] in ("ort_fp32", "ort_int8")
    assert ("model.int8.onnx" in names) == (deployment["chosen"] == "ort_int8")
    assert meta["data_fingerprint"].startswith("sha256:")


@pytest.mark.slow
def test_inspect_folder_with_video_and_bad_files_exits_3(trained, tmp_path):
    data = trained / "data"
    inbox = tmp_path / "inbox"
    (inbox / "cam1").mkdir(parents=True)
    good = cv2.imread(str(data / "test" / "good" / "000.png"))
    cv2.imwrite(str(inbox / "cam1" / "part.jpg"), cv2.resize(good, (90, 70)))
    cv2.imwrite(str(inbox / "gray.bmp"), cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))
    (inbox / "zero.png").write_bytes(b"")
    (inbox / "cam1" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    writer = cv2.VideoWriter(str(inbox / "belt.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for _ in range(3):
        writer.write(good)
    writer.release()
    out = tmp_path / "out"
    proc = _cli("manufacturing", "inspect", str(inbox), "--model", str(trained / "model"), "--out", str(out))
    assert proc.returncode == 3, proc.stderr
    assert "rejected" in proc.stderr and "Traceback" not in proc.stderr
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [
        "belt.avi/frame_000000",
        "belt.avi/frame_000001",
        "belt.avi/frame_000002",
        "cam1/bad.png",
        "cam1/part.jpg",
        "gray.bmp",
        "zero.png",
    ]
    assert [r["status"] for r in rows].count("rejected") == 2
    threshold = json.loads((out / "summary.json").read_text())["image_threshold"]
    for row in (r for r in rows if r["status"] == "ok"):  # the shown score: 0.5 at the threshold
        assert (float(row["anomaly_score"]) > 0.5) == (row["is_defective"] == "1")
        assert (float(row["raw_score"]) > threshold) == (row["is_defective"] == "1")
    for row in rows:
        if row["status"] == "ok":
            assert (out / "annotated" / (row["image"].rsplit(".", 1)[0] + ".png")).is_file() or (
                out / "annotated" / (row["image"] + ".png")
            ).is_file()
            assert int(row["num_defects"]) == 0 or row["is_defective"] == "1"
    with open(out / "defects.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["image", "x", "y", "w", "h", "area_px", "score"]
    annotated = cv2.imread(str(out / "annotated" / "cam1" / "part.png"))
    assert annotated.shape[:2] == (70, 90)  # drawn on the input at its own size
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 5 and summary["images_per_s"] > 0 and len(summary["rejected"]) == 2
    assert (out / "contact_sheet.png").is_file()


@pytest.mark.slow
def test_evaluate_prints_metrics_for_model_and_baseline(trained, tmp_path):
    report = tmp_path / "report"
    cmd = ["manufacturing", "evaluate", "--data", str(trained / "data"), "--model", str(trained / "model")]
    proc = _cli(*cmd, "--out", str(report))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert list(metrics)[:4] == ["image_auroc", "pixel_auroc", "aupro", "f1_image"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("image_auroc", "pixel_auroc", "aupro", "f1_image"))
    assert metrics["baseline"]["image_auroc"] >= 0.0 and metrics["backend"].startswith("ort")
    # --out: confusion counts agree with the printed F1 (same threshold), ROC and side-by-side images
    counts = json.loads((report / "confusion.json").read_text())
    assert counts["escapes"] + counts["true_rejects"] == counts["n_defective"] == metrics["n_defective"]
    assert counts["false_rejects"] + counts["true_accepts"] == metrics["n_images"] - metrics["n_defective"]
    tp, fp, fn = counts["true_rejects"], counts["false_rejects"], counts["escapes"]
    assert metrics["f1_image"] == pytest.approx(2 * tp / max(2 * tp + fp + fn, 1))
    assert (report / "roc.png").read_bytes()[:4] == b"\x89PNG"
    pairs = sorted((report / "annotated").glob("*.png"))
    assert len(pairs) == metrics["n_images"]
    pair = cv2.imread(str(pairs[0]))
    assert pair.shape[1] == 2 * pair.shape[0] + 4  # the square original, a 4 px gap, the annotated image


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    proc = _cli("manufacturing", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "missing" in proc.stderr
    proc = _cli("manufacturing", "inspect", str(tmp_path), "--model", str(tmp_path / "nomodel"), "--out", "o")
    assert proc.returncode == 2 and "model directory not found" in proc.stderr
    proc = _cli("manufacturing", "inspect", str(tmp_path), "--model", str(tmp_path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "inside it" in proc.stderr
    proc = _cli("manufacturing", "synth", "--out", str(tmp_path / "d"), "--category", "plastic")
    assert proc.returncode == 2 and "plastic" in proc.stderr


def test_ort_wrapper_evaluates_like_torch(tmp_path):
    from common.export import export_onnx
    from verticals.manufacturing.deploy import OrtModel

    cfg, _, test = _tiny_data(tmp_path)
    model = TASK.build_model(cfg).eval()
    path = export_onnx(model, TASK.example_input(cfg), tmp_path / "m.onnx")
    torch_metrics = TASK.evaluate(model, test, cfg)
    ort_metrics = TASK.evaluate(OrtModel(path), test, cfg)
    assert abs(torch_metrics["image_auroc"] - ort_metrics["image_auroc"]) < 1e-6
    assert abs(torch_metrics["pixel_auroc"] - ort_metrics["pixel_auroc"]) < 1e-3


def test_inspection_data_batches_are_float_in_unit_range():
    data = InspectionData(
        np.full((5, 8, 8, 3), 255, np.uint8), np.zeros(5, np.int64), np.zeros((5, 8, 8), bool), np.ones(5, bool)
    )
    batches = data.batches(2)
    assert [b.shape[0] for b in batches] == [2, 2, 1] and torch.allclose(batches[0], torch.ones(2, 3, 8, 8))
    assert mask_boxes(np.pad(np.ones((3, 4), bool), 2)) == [(2, 2, 4, 3)]


def test_val_split_is_labelled_for_federated_monitoring(tmp_path):
    cfg, train, test = _tiny_data(tmp_path)
    val = TASK.load_data(cfg, tmp_path / "metal", "val")
    assert set(train.labels) == {0} and set(val.labels) == {0, 1} and len(val) == len(test)


def test_int8_calibration_covers_defective_parts(tmp_path):
    from verticals.manufacturing.deploy import calibration_images

    cfg, train, _ = _tiny_data(tmp_path)
    batches = calibration_images(train, cfg, seed=0, n=4)
    images = torch.cat(batches)
    assert images.shape[0] == 8  # four good parts, then the same four with a synthetic anomaly
    assert torch.equal(images[0], torch.from_numpy(train.images[0]).permute(2, 0, 1).float() / 255)
    assert all((images[i] - images[i + 4]).abs().amax() > 1.5 / 255 for i in range(4))


def test_display_score_puts_the_threshold_in_the_middle():
    from verticals.manufacturing.postprocess import display_score

    t = 0.9928  # the threshold that put "OK 0.99" beside "NG 1.00"
    assert display_score(t, t) == pytest.approx(0.5)
    raw = [0.5, 0.98, 0.99, 0.9927, 0.9929, 0.9995, 0.99999]
    shown = [display_score(r, t) for r in raw]
    assert shown == sorted(shown)  # monotone: rankings unchanged
    assert all((s > 0.5) == (r > t) for r, s in zip(raw, shown))  # decisions unchanged
    assert shown[2] < 0.45 and shown[5] > 0.9  # OK 0.99 and NG 0.9995 now read far apart
