"""Grain stage (grain.py): finds a faint line across a grain, fits, exports, loads old models."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import torch

from common.export import export_onnx, run_session, session
from verticals.manufacturing.config import InspectConfig
from verticals.manufacturing.data import InspectionData
from verticals.manufacturing.deploy import quantize_int8
from verticals.manufacturing.grain import grain_z, ridge_kernels, ridge_responses
from verticals.manufacturing.memory import choose_weights, fit_grain_affine, validation_set
from verticals.manufacturing.model import DefectNet


def _brushed(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Horizontal brush marks: white noise smeared along x (grey in [0, 1])."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    grain = cv2.blur(noise, (31, 1), borderType=cv2.BORDER_REFLECT)
    return np.clip(0.55 + 0.25 * grain / grain.std() * 0.1, 0, 1)


def test_ridge_kernels_are_zero_sum_and_oriented() -> None:
    k = ridge_kernels(13, angles=16, offset=2)
    assert k.shape[:2] == (16, 1) and k.shape[-1] % 2 == 1
    assert torch.allclose(k.sum(dim=(1, 2, 3)), torch.zeros(16), atol=1e-6)  # blind to flat shading
    c = k.shape[-1] // 2
    assert bool((k[0, 0, c, c - 6 : c + 7] > 0).all())  # angle 0: the positive line is the centre row


def test_faint_line_across_the_grain_stands_out() -> None:
    rng = np.random.default_rng(0)
    good = [_brushed(rng) for _ in range(6)]
    bad = _brushed(rng)
    bad[30:100, 64] *= 0.96  # 1 px, 4 % darker, 70 px long, ACROSS the horizontal grain
    to_x = lambda imgs: torch.from_numpy(np.stack(imgs))[:, None].repeat(1, 3, 1, 1)  # noqa: E731
    kernels = ridge_kernels(13)
    rms = ridge_responses(to_x(good), kernels).square().mean(dim=(0, 2, 3)).sqrt()
    z_good = grain_z(to_x(good), kernels, rms)
    z_bad = grain_z(to_x([bad]), kernels, rms)[0, 0]
    on_line = float(z_bad[35:95, 63:66].mean())
    assert on_line > 2 * float(z_good.amax())  # far above anything a good part shows
    assert float(z_bad[:, :40].amax()) < float(z_good.amax()) * 1.5  # and away from it the map stays normal


def _tiny_data(n: int, seed: int) -> InspectionData:
    rng = np.random.default_rng(seed)
    images = np.stack([np.repeat((_brushed(rng, 64)[..., None] * 255).astype(np.uint8), 3, -1) for _ in range(n)])
    zeros = np.zeros(images.shape[:3], bool)
    return InspectionData(images, np.zeros(n, int), zeros, np.zeros(n, bool), ["good"] * n)


def test_fit_choose_export_and_int8_keep_the_grain_stage(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = InspectConfig(image_size=64, width=4, memory_size=0, grain=True, grain_weights="0,1")
    model = DefectNet(width=4, image_size=64, grain=True).eval()
    train, holdout = _tiny_data(8, 1), _tiny_data(4, 2)
    report = fit_grain_affine(model, train, holdout)
    assert report["grain_scale"] > 0 and bool((model.grain_rms > 0).all())
    (_, w_grain), scores = choose_weights(model, validation_set(holdout, 0, oriented=1.0), cfg)
    assert w_grain in (0.0, 1.0) and set(scores) == {"val_auroc_w0_g0", "val_auroc_w0_g1"}
    model.grain_affine[2] = 1.0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fp32 = export_onnx(model, (x,), tmp_path / "m.onnx")
    out = run_session(session(fp32), [x.numpy()])
    assert np.allclose(out[1], ref[1].numpy(), atol=1e-4)  # the ONNX file carries the grain stage
    calibration = [torch.rand(2, 3, 64, 64).numpy() for _ in range(2)]
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path / "m.int8.onnx", calibration))).graph
    grain_conv = [n for n in int8.node if n.op_type == "Conv" and "grain_kernels" in n.input[1]]
    assert [n.input[1] for n in grain_conv] == ["grain_kernels"]  # the fp32 kernels, not a DequantizeLinear output
    assert any(n.op_type == "DequantizeLinear" for n in int8.node)  # while the network itself is quantized


def test_checkpoint_without_grain_loads_with_the_stage_off() -> None:
    torch.manual_seed(0)
    old = DefectNet(width=4, image_size=64).eval()
    new = DefectNet(width=4, image_size=64, grain=True).eval()
    new.load_state_dict(old.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert float(new.grain_affine[2]) == 0.0
        assert torch.allclose(new(x)[0], old(x)[0])
