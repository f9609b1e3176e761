"""The patch memory beside the segmenter (memory.py): coreset, calibration, weight choice, ONNX parity."""

from __future__ import annotations

import numpy as np
import torch

from common.config import replace
from verticals.manufacturing import TASK
from verticals.manufacturing.anomalies import is_achromatic, luminance_only, synthesize_anomaly
from verticals.manufacturing.memory import greedy_coreset


def test_greedy_coreset_keeps_rare_points():
    rng = np.random.default_rng(0)
    points = torch.cat([torch.randn(500, 4) * 0.01, torch.full((1, 4), 5.0)])  # one rare good patch
    chosen = greedy_coreset(points, 8, rng)
    assert chosen.shape == (8, 4) and bool((chosen == 5.0).all(1).any())
    assert greedy_coreset(points[:3], 5, rng).shape == (5, 4)  # fewer points than slots: repeated


def test_anomalies_on_grey_parts_stay_grey_when_matched():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.uniform(0.3, 0.7, (64, 64, 1)), 3, axis=-1).astype(np.float32)
    assert is_achromatic(grey)
    coloured = grey.copy()
    coloured[..., 0] *= 0.5
    assert not is_achromatic(coloured)
    for _ in range(10):
        out, mask = synthesize_anomaly(grey, rng, matched_prob=1.0)
        assert mask.shape == (64, 64) and np.abs(out - out.mean(-1, keepdims=True)).max() < 1e-5
    red = np.zeros_like(grey)
    red[..., 0] = 1.0
    moved = luminance_only(grey, red)  # brightness of the foreign colour, hue of the part
    assert np.allclose(moved[..., 0], moved[..., 1]) and not np.allclose(moved, grey)


def test_memory_is_fitted_calibrated_and_exported(tmp_path):
    from common.export import export_onnx
    from verticals.manufacturing.deploy import OrtModel

    cfg = replace(TASK.tiny_config(), memory_size=64, memory_weights="0,1,2", steps_per_epoch=4)
    source = TASK.synthesize(tmp_path / "metal", seed=0, scale="tiny")
    train, test = TASK.load_data(cfg, source, "train"), TASK.load_data(cfg, source, "test")
    model = TASK.build_model(cfg)
    metrics = TASK.fit(model, train, cfg, epochs=1)
    assert metrics["memory_weight"] in (0.0, 1.0, 2.0) and metrics["memory_scale"] > 0
    assert {"val_auroc_w0", "val_auroc_w1", "val_auroc_w2"} <= set(metrics)
    assert float(model.memory.abs().sum()) > 0 and torch.isfinite(model.memory).all()
    model.memory_affine[2] = 1.0  # whatever validation chose, the ONNX graph must match torch with it on
    model.eval()
    x = TASK.example_input(cfg)[0]
    with torch.no_grad():
        distance = model.memory_distance(model.normalise(x)[..., ::2, ::2])
    assert distance.shape == (2, 1, cfg.image_size // 4, cfg.image_size // 4) and bool((distance >= 0).all())
    path = export_onnx(model, (x,), tmp_path / "m.onnx")
    with torch.no_grad():
        ours, theirs = model(x), OrtModel(path)(x)
    assert torch.allclose(ours[0], theirs[0], atol=1e-4) and torch.allclose(ours[1], theirs[1], atol=1e-5)
    assert set(TASK.evaluate(model, test, cfg)) >= {"image_auroc", "pixel_auroc"}
