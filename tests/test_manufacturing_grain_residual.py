"""Grain-residual input (grain_residual.py): lines against the part's own grain, in the model and its ONNX file."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import torch

from common.export import export_onnx, run_session, session
from verticals.manufacturing.deploy import _FIXED_CONVS
from verticals.manufacturing.grain_residual import GrainResidual
from verticals.manufacturing.model import DefectNet
from verticals.manufacturing.train import set_normalisation


def _rings(angle: float = 0.0, size: int = 96) -> np.ndarray:
    """Wood-like stripes with SHARP edges (steps of 0.3) running at `angle`, plus faint noise (0.4 %)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    g = 0.15 * np.sign(np.sin(2 * np.pi * across / 12)) + np.random.default_rng(0).normal(0, 0.004, (size, size))
    return g.astype(np.float32)


def _maps(grey: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return GrainResidual()(torch.from_numpy(grey)[None, None])[0].numpy()


def test_line_across_the_grain_stands_out_in_the_residual() -> None:
    good = _rings()
    bad = good.copy()
    bad[20:76, 48] += 0.05  # 1 px, a sixth of the ring step, ACROSS the horizontal grain
    on_line = np.abs(_maps(bad)[0][25:71, 48]).mean()
    assert on_line > 1.5 * np.abs(_maps(good)[0]).max()  # the rings' own edges vanish, the line does not
    high_pass = lambda g: np.abs(g - cv2.blur(g, (11, 11)))  # noqa: E731 - the same support, blind to the grain
    assert high_pass(bad)[25:71, 48].mean() < high_pass(good).max()  # where a plain high-pass drowns it


def test_line_along_the_grain_is_a_bar_and_ring_edges_are_not() -> None:
    good = _rings()
    bright, dark = good.copy(), good.copy()
    bright[9, 20:76] += 0.05  # mid-stripe (stripes are 6 px), ALONG the grain
    dark[9, 20:76] -= 0.05
    g = _maps(good)
    assert _maps(bright)[1][9, 30:66].mean() > 2 * g[1].max()  # ring edges (steps of 0.3) give no bar
    assert _maps(dark)[2][9, 30:66].mean() > 2 * g[2].max()
    assert _maps(bright)[2][9, 30:66].max() < 0.5 * _maps(bright)[1][9, 30:66].mean()  # a bright line is not dark


def test_weights_follow_the_grain() -> None:
    for angle, expected in ((0.0, 0), (np.pi / 4, 6), (np.pi / 2, 4)):  # _line's angle runs counter-clockwise
        w = GrainResidual().weights(torch.from_numpy(_rings(angle))[None, None])
        assert int(w[0, :, 20:76, 20:76].mean((1, 2)).argmax()) == expected


def test_model_scales_exports_and_names_the_filters_int8_must_skip(tmp_path) -> None:
    torch.manual_seed(0)
    model = DefectNet(width=4, image_size=64, grain_input=True, memory_size=0)
    rings = np.repeat(((_rings(size=64) + 0.5) * 255).astype(np.uint8)[None, ..., None], 3, -1)
    set_normalisation(model, np.concatenate([rings, rings[:, ::-1]]))
    assert bool((model.grain_input_scale > 0).all()) and bool((model.grain_input_scale != 1).all())
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fp32 = export_onnx(model, (x,), tmp_path / "m.onnx")
    out = run_session(session(fp32), [x.numpy()])
    assert np.allclose(out[0], ref[0].numpy(), atol=1e-4)
    # quantize_int8 skips Conv nodes whose weight is named after a fixed filter: all five must be found
    graph = onnx.load(str(fp32), load_external_data=False).graph
    fixed = {n.input[1] for n in graph.node if n.op_type == "Conv" and any(k in n.input[1] for k in _FIXED_CONVS)}
    assert len(fixed) == 5, fixed  # Sobel, two Gaussian passes, direction energies, line means
