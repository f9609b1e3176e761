"""The classical OpenCV inspector the learned model must beat: a golden template.

Fit: align every good image to the first one (phase correlation), then keep the per-pixel mean
(the golden template) and standard deviation. Inspect: align the part to the template, take the
absolute difference in units of the good parts' own spread, blur it, and call the part NG when its
maximum passes a threshold calibrated on held-out good parts (same false-reject target as the
model). Defect regions come from Otsu's threshold on the difference map, then morphology and
connected components (postprocess.py). This is how many lines inspect printed or machined parts,
and it is the honest peer for the learned model: strong on aligned, rigid parts, weak on textures
and on faint, large defects.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np

from .config import InspectConfig
from .data import InspectionData, split_holdout
from .postprocess import Defect, components


@dataclass
class GoldenTemplate:
    """Per-pixel mean and spread of aligned good parts, plus the calibrated image threshold."""

    mean: np.ndarray  # (S, S, 3) float32 in [0, 255]
    std: np.ndarray  # (S, S, 3) float32
    image_threshold: float = float("inf")
    blur_sigma: float = 2.0

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, mean=self.mean, std=self.std, image_threshold=self.image_threshold)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes, name: str = "baseline.npz") -> GoldenTemplate:
        """The template saved by `to_bytes`; a UserError naming `name` when the bytes are not one."""
        try:
            arrays = np.load(io.BytesIO(data))
            template = GoldenTemplate(arrays["mean"], arrays["std"], float(arrays["image_threshold"]))
        except Exception as exc:  # zip, npy or key errors of a cut/foreign file all mean one thing
            from common.errors import UserError

            raise UserError(f"{name}: unreadable golden-template baseline ({type(exc).__name__})") from None
        if template.mean.shape != template.std.shape or template.mean.ndim != 3:
            from common.errors import UserError

            raise UserError(f"{name}: golden-template baseline has inconsistent arrays")
        return template

    def align(self, image: np.ndarray) -> np.ndarray:
        return align_to(image, self.mean)

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        """Blurred |part - template| / spread, averaged over channels (float32, model size)."""
        diff = np.abs(self.align(image).astype(np.float32) - self.mean) / (self.std + 4.0)
        return cv2.GaussianBlur(diff.mean(axis=2), (0, 0), self.blur_sigma)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        heat = self.anomaly_map(image)
        return float(heat.max()), heat

    def defects(self, heat: np.ndarray, cfg: InspectConfig) -> list[Defect]:
        """Otsu on the difference map, opening/closing, then components above the area filter."""
        scaled = np.clip(heat / (heat.max() + 1e-6) * 255, 0, 255).astype(np.uint8)
        _, binary = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.morph_kernel, cfg.morph_kernel))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, element)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, element)
        min_area = max(1, int(cfg.min_area_frac * heat.size))
        return components(binary, heat, min_area)


def align_to(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Shift `image` onto `reference` by the translation phase correlation finds (borders reflected)."""
    gray = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    ref = cv2.cvtColor(reference.astype(np.float32), cv2.COLOR_RGB2GRAY)
    window = cv2.createHanningWindow(gray.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(ref, gray, window)
    matrix = np.float32([[1, 0, -dx], [0, 1, -dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image.astype(np.float32), matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def fit_baseline(data: InspectionData, cfg: InspectConfig) -> GoldenTemplate:
    """Build the template from the training part of `data` and calibrate on its held-out part."""
    train, holdout = split_holdout(data, cfg.holdout)
    reference = train.images[0].astype(np.float32)
    aligned = np.stack([align_to(img, reference) for img in train.images])
    template = GoldenTemplate(aligned.mean(0).astype(np.float32), aligned.std(0).astype(np.float32))
    calib = holdout if holdout is not None else train
    scores = [template.score(img)[0] for img in calib.images]
    template.image_threshold = float(np.quantile(scores, 1 - cfg.target_frr))
    return template


def baseline_predictions(
    template: GoldenTemplate, data: InspectionData, cfg: InspectConfig
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int, int, int]]]]:
    """(scores, maps, boxes per image) of the baseline on `data`, in the evaluation's format."""
    scores, maps, boxes = [], [], []
    for image in data.images:
        score, heat = template.score(image)
        scores.append(score)
        maps.append(heat)
        found = template.defects(heat, cfg) if score > template.image_threshold else []
        boxes.append([(d.x, d.y, d.w, d.h) for d in found])
    return np.asarray(scores), np.stack(maps), boxes
