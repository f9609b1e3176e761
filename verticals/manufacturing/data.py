"""A site's inspection data in memory: images resized to the model's size, labels, masks, kinds.

Images are kept as uint8 (a quarter of float32's memory) and converted per batch. Unreadable files
in a training or test folder stop the command with a one-line error naming the file: a dataset is
curated input, unlike the stream `inspect` reads, where bad files are reported and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from common.errors import UserError
from data_adapters.images import ImageError, dataset_split, read_image, read_mask

from .config import InspectConfig
from .roi import full_frame, locate_part


@dataclass
class InspectionData:
    """Images (N, S, S, 3) uint8 RGB; labels 0/1; masks (N, S, S) bool; which masks are known."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    kinds: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, size: int) -> list[torch.Tensor]:
        """Float (B, 3, S, S) tensors in [0, 1], in order."""
        return [to_tensor(self.images[i : i + size]) for i in range(0, len(self.images), size)]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to the model's square input (area filter when shrinking, so fine defects survive)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def load_split(cfg: InspectConfig, source: str | Path, split: str) -> InspectionData:
    """Read `source` (MVTec AD or VisA layout): "train" is the good parts; "val" and "test" the labelled test set.

    MVTec AD has no validation split and metrics need defective parts, which only test/ holds, so
    "val" (what federation reports per round) reads test/ too. Nothing is tuned on it: thresholds
    are calibrated on good parts held out of train/good inside `fit`.
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"split must be train, val or test, got {split!r}")
    labelled = split in ("val", "test")
    try:
        listing = dataset_split(source, "test" if labelled else "train")
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if not listing.paths:
        where = ("test/*" if labelled else "train/good") + " (or the VisA split file's rows)"
        raise UserError(f"{source}: no PNG/JPEG/BMP images in {where}")
    size = cfg.image_size
    images = np.zeros((len(listing.paths), size, size, 3), np.uint8)
    masks = np.zeros((len(listing.paths), size, size), bool)
    has_mask = np.zeros(len(listing.paths), bool)
    for i, (path, label, mask_path) in enumerate(zip(listing.paths, listing.labels, listing.masks)):
        try:
            image = read_image(path)
            roi = locate_part(image, cfg.roi_margin, cfg.roi_min_area_frac) if cfg.roi else full_frame(image)
            images[i] = resize_rgb(roi.crop(image), size)
            if label == 0:
                has_mask[i] = True
            elif mask_path is not None:
                mask = read_mask(mask_path, image.shape[:2], listing.mask_threshold)
                masks[i] = read_mask_crop(roi.crop(mask), size)
                has_mask[i] = True
        except ImageError as exc:
            raise UserError(f"{path}: {exc}") from None
    root = Path(source)
    names = [p.relative_to(root).as_posix() for p in listing.paths]
    return InspectionData(
        images, np.asarray(listing.labels, np.int64), masks, has_mask, list(listing.kinds), names, root
    )


def read_mask_crop(mask: np.ndarray, size: int) -> np.ndarray:
    """A boolean mask (already cropped to the ROI) at the model's square size (nearest neighbour)."""
    if mask.shape == (size, size):
        return mask
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def split_holdout(data: InspectionData, fraction: float) -> tuple[InspectionData, InspectionData | None]:
    """Last `fraction` of the good images kept aside for threshold calibration (None when too few)."""
    n = len(data)
    n_hold = int(round(n * fraction)) if n >= 5 else 0
    if n_hold == 0:
        return data, None

    def take(sl: slice) -> InspectionData:
        return InspectionData(
            data.images[sl], data.labels[sl], data.masks[sl], data.has_mask[sl], data.kinds[sl], data.names[sl]
        )

    return take(slice(0, n - n_hold)), take(slice(n - n_hold, n))
