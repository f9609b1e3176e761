"""OpenCV after the model: anomaly map -> smoothed map -> binary defects -> components, contours, boxes.

The model says how unusual each pixel looks; a line needs countable defects with positions. Steps:
Gaussian smoothing (isolated noisy pixels are not defects), the pixel threshold calibrated on good
parts, morphological opening (drop specks) and closing (join a crack's pieces), connected
components with an area filter, then contours and bounding boxes. Work happens at the model's
resolution and the geometry is scaled to the input image's own pixels at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import InspectConfig


@dataclass
class Defect:
    """One located defect in input-image pixels."""

    x: int
    y: int
    w: int
    h: int
    area_px: int
    score: float
    contour: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 1, 2), np.int32))


@dataclass
class Verdict:
    """The decision on one image: OK/NG, its score, and the defects found when NG."""

    anomaly_score: float
    is_defective: bool
    defects: list[Defect]
    heatmap: np.ndarray  # smoothed defect probability at model resolution, float32 [0, 1]
    roi: tuple[int, int, int, int] | None = None  # (x, y, w, h) of the part when cropped to it (roi.py)


def smooth(prob: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a probability map (sigma in map pixels; 0 disables)."""
    prob = prob.astype(np.float32)
    return cv2.GaussianBlur(prob, (0, 0), sigma) if sigma > 0 else prob


def binarize(heat: np.ndarray, threshold: float, kernel: int) -> np.ndarray:
    """Threshold, then open (remove specks) and close (bridge gaps) with an elliptical kernel."""
    binary = (heat >= threshold).astype(np.uint8)
    if kernel > 1:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, element)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, element)
    return binary


def components(
    binary: np.ndarray, heat: np.ndarray, min_area: int, scale: tuple[float, float] = (1.0, 1.0)
) -> list[Defect]:
    """Connected components at least `min_area` pixels, as Defects scaled by (sx, sy) to the input."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    sx, sy = scale
    found = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        region = (labels == label).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea) if contours else np.zeros((0, 1, 2), np.int32)
        scaled = np.round(contour.astype(np.float32) * (sx, sy)).astype(np.int32)
        found.append(
            Defect(
                x=int(round(x * sx)),
                y=int(round(y * sy)),
                w=max(1, int(round(w * sx))),
                h=max(1, int(round(h * sy))),
                area_px=int(round(area * sx * sy)),
                score=float(heat[labels == label].max()),
                contour=scaled,
            )
        )
    found.sort(key=lambda d: -d.score)
    return found


def decide(
    logits: np.ndarray,
    score: float,
    thresholds: tuple[float, float],
    cfg: InspectConfig,
    image_shape: tuple[int, int] | None = None,
) -> Verdict:
    """OK/NG and the defects of one image from the model's outputs (logits (S, S) at model size).

    NG parts always get at least one defect: when nothing passes the calibrated pixel threshold,
    the region above half the map's maximum is reported, so an operator sees where to look.
    """
    image_t, pixel_t = thresholds
    heat = smooth(1.0 / (1.0 + np.exp(-logits.astype(np.float32))), cfg.blur_sigma)
    is_defective = bool(score > image_t)
    defects: list[Defect] = []
    if is_defective:
        h, w = heat.shape
        out_h, out_w = image_shape or (h, w)
        scale = (out_w / w, out_h / h)
        min_area = max(1, int(cfg.min_area_frac * h * w))
        defects = components(binarize(heat, pixel_t, cfg.morph_kernel), heat, min_area, scale)
        if not defects:
            fallback = (heat >= 0.5 * float(heat.max())).astype(np.uint8)
            defects = components(fallback, heat, 1, scale)[:1]
    return Verdict(float(score), is_defective, defects, heat)


def display_score(score: float, image_threshold: float) -> float:
    """The score people read: 0.5 exactly at the decision threshold, monotone, in (0, 1).

    Raw image scores bunch near 1 (a threshold of 0.9928 put "OK 0.99" beside "NG 1.00"). Shifting
    the logit by the threshold's, sigmoid(logit(s) - logit(t)), spreads them around the middle (raw
    0.990 -> 0.42, 0.9995 -> 0.93 at t = 0.9928) without a fitted parameter: it needs only the
    threshold stored in the model, and keeps every ranking and decision (s > t  <=>  display > 0.5).
    """
    eps = 1e-7
    s = min(max(float(score), eps), 1 - eps)
    t = min(max(float(image_threshold), eps), 1 - eps)
    shifted = math.log(s / (1 - s)) - math.log(t / (1 - t))
    return 1.0 / (1.0 + math.exp(-shifted)) if shifted > -700 else 0.0


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Ground-truth boxes: one per connected region of a mask."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [tuple(int(v) for v in stats[i][:4]) for i in range(1, count)]  # type: ignore[misc]
