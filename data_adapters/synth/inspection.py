"""Write a synthetic inspection dataset in the MVTec AD layout.

DIR/train/good/000.png, DIR/test/good/000.png, DIR/test/<kind>/000.png and
DIR/ground_truth/<kind>/000_mask.png: the same layout as the public benchmark, so every command
that reads ours also reads MVTec AD itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.atomic import atomic_path
from data_adapters.synth.defects import add_defect, kinds_for
from data_adapters.synth.surfaces import CATEGORIES, Lighting, good_part


@dataclass(frozen=True)
class Scale:
    """How much data one synthetic dataset holds."""

    size: int
    n_train: int
    n_test_good: int
    n_per_kind: int


SCALES = {
    "tiny": Scale(size=64, n_train=10, n_test_good=4, n_per_kind=1),
    "small": Scale(size=128, n_train=32, n_test_good=8, n_per_kind=2),
    "full": Scale(size=256, n_train=80, n_test_good=24, n_per_kind=6),
}


def _write_png(path: Path, image: np.ndarray) -> None:
    """Save float RGB [0,1] or a uint8 mask as PNG, atomically (cv2 wants BGR)."""
    if image.dtype != np.uint8:
        image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: could not write PNG")


def write_dataset(
    out: str | Path,
    category: str,
    *,
    seed: int,
    scale: str | Scale = "full",
    lighting: Lighting | None = None,
    kinds: tuple[str, ...] | None = None,
) -> Path:
    """Write one category's dataset under `out`; return `out`.

    Parts for train and test come from one random stream per split, so the same seed always gives
    the same files, and a larger scale never changes what a smaller one would have drawn first.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown category '{category}' (known: {', '.join(CATEGORIES)})")
    spec = SCALES[scale] if isinstance(scale, str) else scale
    lighting = lighting or Lighting()
    kinds = kinds or kinds_for(category)
    root = Path(out)
    train_rng = np.random.default_rng([seed, 1])
    for i in range(spec.n_train):
        _write_png(root / "train" / "good" / f"{i:03d}.png", good_part(category, train_rng, spec.size, lighting))
    test_rng = np.random.default_rng([seed, 2])
    for i in range(spec.n_test_good):
        _write_png(root / "test" / "good" / f"{i:03d}.png", good_part(category, test_rng, spec.size, lighting))
    for k, kind in enumerate(kinds):
        kind_rng = np.random.default_rng([seed, 3, k])
        for i in range(spec.n_per_kind):
            image, mask = add_defect(kind, good_part(category, kind_rng, spec.size, lighting), kind_rng)
            _write_png(root / "test" / kind / f"{i:03d}.png", image)
            _write_png(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    info = {"category": category, "seed": seed, "size": spec.size, "kinds": list(kinds), "lighting": vars(lighting)}
    with atomic_path(root / "dataset.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return root


def site_category(site: int, categories: tuple[str, ...] = ("metal", "fabric", "wood", "tile")) -> str:
    """The surface a federated site's line makes: sites differ in product as well as lighting."""
    return categories[site % len(categories)]
