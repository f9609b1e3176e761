"""Optional part localisation before the model (OpenCV): find the part, crop to it, map results back.

On a line the camera often sees the part somewhere on a conveyor or fixture, not filling the frame.
Feeding the whole frame wastes the model's resolution on background and shifts the part around
from image to image. With `roi = true` every image (training, calibration, evaluation, inspection)
goes through `locate_part` first:

1. grey, Gaussian blur; the background level is the median of the image's border ring, so both a
   dark part on a bright belt and a bright part on a dark one work;
2. |grey - background|, Otsu threshold (rejected when it is not well above the border's own
   spread: then the frame is a texture, not a part on a background), morphological closing;
3. the largest external contour; its bounding box, padded by `roi_margin`, is the ROI.

When nothing plausible is found (no contour of at least `roi_min_area_frac` of the frame, e.g. a
texture that fills the frame), the ROI is the whole image, so `roi = true` never loses a part.
Defects found in the crop are shifted back by the ROI's corner (`shift_verdict`), so boxes,
contours and the heat map in every output are in the original image's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from .postprocess import Verdict


@dataclass(frozen=True)
class Roi:
    """A crop rectangle in the original image's pixels."""

    x: int
    y: int
    w: int
    h: int

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


def full_frame(image: np.ndarray) -> Roi:
    return Roi(0, 0, int(image.shape[1]), int(image.shape[0]))


def locate_part(image_rgb: np.ndarray, margin: float = 0.05, min_area_frac: float = 0.02) -> Roi:
    """The part's bounding box (padded by `margin` of its size), or the full frame when none is found."""
    h, w = image_rgb.shape[:2]
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY) if image_rgb.ndim == 3 else image_rgb
    blur = cv2.GaussianBlur(grey, (0, 0), max(1.0, min(h, w) / 200))
    ring = max(1, min(h, w) // 50)
    border = np.concatenate(
        [blur[:ring].ravel(), blur[-ring:].ravel(), blur[:, :ring].ravel(), blur[:, -ring:].ravel()]
    )
    level = int(np.median(border))
    diff = cv2.absdiff(blur, np.full_like(blur, level))
    spread = float(np.percentile(np.abs(border.astype(np.int16) - level), 95))
    otsu, binary = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if otsu < 2 * spread + 4:  # the border varies as much as the rest: a texture filling the frame
        return full_frame(image_rgb)
    k = max(3, (min(h, w) // 40) | 1)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return full_frame(image_rgb)
    largest = max(contours, key=cv2.contourArea)
    if cv2.contourArea(largest) < min_area_frac * h * w:
        return full_frame(image_rgb)
    x, y, bw, bh = cv2.boundingRect(largest)
    pad_x, pad_y = round(margin * bw), round(margin * bh)
    x0, y0 = max(0, x - pad_x), max(0, y - pad_y)
    x1, y1 = min(w, x + bw + pad_x), min(h, y + bh + pad_y)
    return Roi(int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def shift_verdict(verdict: Verdict, roi: Roi, image_shape: tuple[int, int]) -> Verdict:
    """A verdict made on the crop, in the original image's pixels (heat map zero outside the ROI)."""
    defects = [
        replace(d, x=d.x + roi.x, y=d.y + roi.y, contour=(d.contour + np.array([roi.x, roi.y], np.int32)))
        for d in verdict.defects
    ]
    h, w = image_shape
    full = np.zeros((h, w), np.float32)
    full[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w] = cv2.resize(
        verdict.heatmap, (roi.w, roi.h), interpolation=cv2.INTER_LINEAR
    )
    return Verdict(verdict.anomaly_score, verdict.is_defective, defects, full, roi=(roi.x, roi.y, roi.w, roi.h))
