"""Part localisation before the model (roi.py): find an off-centre part, crop to it, map results back."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from data_adapters.synth.surfaces import good_part
from verticals.manufacturing.config import InspectConfig
from verticals.manufacturing.data import load_split
from verticals.manufacturing.infer import Inspector
from verticals.manufacturing.roi import Roi, locate_part

PART = (170, 60, 120, 100)  # x, y, w, h of the part inside a 320x240 frame


def _scene(seed: int = 0, background: int = 30, spot: tuple[int, int] | None = None) -> np.ndarray:
    """A metal part placed off-centre on a uniform belt, optionally with a dark spot at (x, y) on it."""
    frame = np.full((240, 320, 3), background, np.uint8)
    x, y, w, h = PART
    part = good_part("metal", np.random.default_rng(seed), 128)
    frame[y : y + h, x : x + w] = (cv2.resize(part, (w, h)) * 255).astype(np.uint8)
    if spot is not None:
        cv2.circle(frame, spot, 6, (5, 5, 5), -1)
    return frame


def _iou(a: Roi, b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a.x + a.w, b[0] + b[2]) - max(a.x, b[0]))
    iy = max(0, min(a.y + a.h, b[1] + b[3]) - max(a.y, b[1]))
    inter = ix * iy
    return inter / (a.w * a.h + b[2] * b[3] - inter)


def test_locate_part_finds_an_off_centre_part_on_dark_and_bright_belts():
    for background in (30, 235):
        roi = locate_part(_scene(background=background), margin=0.0)
        assert _iou(roi, PART) > 0.9, (background, roi)
    padded = locate_part(_scene(), margin=0.1)
    assert padded.w > PART[2] and padded.x < PART[0]


def test_locate_part_keeps_the_full_frame_when_no_part_stands_out():
    texture = (good_part("metal", np.random.default_rng(1), 96) * 255).astype(np.uint8)
    assert locate_part(texture) == Roi(0, 0, 96, 96)
    assert locate_part(np.full((50, 70, 3), 128, np.uint8)) == Roi(0, 0, 70, 50)


class _CentreBlob(torch.nn.Module):
    """A stand-in model: one defect blob in the middle of whatever it is shown."""

    def forward(self, x):
        b, _, s, _ = x.shape
        logits = torch.full((b, 1, s, s), -8.0)
        logits[:, :, s // 2 - 4 : s // 2 + 4, s // 2 - 4 : s // 2 + 4] = 8.0
        return logits, torch.full((b,), 0.9), torch.tensor([[0.5, 0.5]]).expand(b, 2)


def test_inspector_with_roi_maps_boxes_back_to_the_original_image():
    cfg = InspectConfig(image_size=64, roi=True, roi_margin=0.0, blur_sigma=0.0, morph_kernel=1)
    frame = _scene()
    verdict = Inspector(_CentreBlob(), cfg)([frame])[0]
    assert verdict.is_defective and len(verdict.defects) == 1 and verdict.roi is not None
    d = verdict.defects[0]
    cx, cy = d.x + d.w / 2, d.y + d.h / 2
    assert abs(cx - (PART[0] + PART[2] / 2)) < 4 and abs(cy - (PART[1] + PART[3] / 2)) < 4  # the part's centre
    assert verdict.heatmap.shape == frame.shape[:2] and verdict.heatmap[: PART[1] - 5].max() == 0
    contour = d.contour.reshape(-1, 2)
    assert contour[:, 0].min() >= PART[0] - 2 and contour[:, 1].min() >= PART[1] - 2
    plain = Inspector(_CentreBlob(), InspectConfig(image_size=64, blur_sigma=0.0, morph_kernel=1))([frame])[0]
    assert abs(plain.defects[0].x + plain.defects[0].w / 2 - 160) < 4  # without roi: the frame's centre


def test_load_split_crops_images_and_masks_to_the_same_part(tmp_path):
    spot = (PART[0] + 30, PART[1] + 70)
    for sub, image in (("train/good", _scene(0)), ("test/good", _scene(1)), ("test/hole", _scene(2, spot=spot))):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / sub / "000.png"), image)
    mask = np.zeros((240, 320), np.uint8)
    cv2.circle(mask, spot, 6, 255, -1)
    (tmp_path / "ground_truth/hole").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "ground_truth/hole/000_mask.png"), mask)
    cfg = InspectConfig(image_size=64, roi=True, roi_margin=0.0)
    test = load_split(cfg, tmp_path, "test")
    i = test.kinds.index("hole")
    ys, xs = np.nonzero(test.masks[i])
    assert abs(xs.mean() - 30 / PART[2] * 64) < 3 and abs(ys.mean() - 70 / PART[3] * 64) < 3
    assert test.images[i][test.masks[i]].mean() < 60  # the dark spot sits under its mask after cropping
    assert load_split(cfg, tmp_path, "train").images.mean() > 60  # the crop holds the part, not the belt
