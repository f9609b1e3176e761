"""Training-side dev set: a model's image AUROC per synthetic anomaly type on its own held-out good parts.

Why: choosing a training change by its held-out-generator test figures would tune to that test.
This scores a trained model on data `train` itself may use: the `holdout` good parts of its
training split, and the same parts with each of our own anomaly renderers (anomalies.py) applied
separately, so one can see WHICH kind of synthetic defect a model misses (e.g. 5-12 % intensity
blobs with diffuse edges, strokes along or across the grain) before training anything new.

    python benchmarks/anomaly_dev.py DATA_DIR MODEL_DIR [--copies 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

Render = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def blob(gain: tuple[float, float], edge: tuple[float, float]) -> Render:
    """Perlin-shaped brightness change of `gain` (fraction) with an edge blur of `edge` px per 128 px."""
    from data_adapters.synth.defects import perlin_mask

    def render(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        alpha = cv2.GaussianBlur(perlin_mask((h, w), rng, 0.01, 0.2), (0, 0), rng.uniform(*edge) * max(1.0, w / 128))
        g = rng.choice([-1, 1]) * rng.uniform(*gain)
        return img * (1 + alpha[..., None] * g), alpha > 0.5

    return render


def types() -> dict[str, Render]:
    from verticals.manufacturing import anomalies

    def stroke(relation: str) -> Render:
        return lambda img, rng: anomalies.oriented_stroke(img, rng, relation)[:2]

    return {
        "blob 5-12%": blob((0.05, 0.12), (0.5, 2.5)),
        "blob 12-30%": blob((0.12, 0.3), (0.5, 2.5)),
        "diffuse blob 5-12%": blob((0.05, 0.12), (2, 4)),
        "diffuse blob 12-30%": blob((0.12, 0.3), (2, 4)),
        "stroke along": stroke("along"),
        "stroke across": stroke("across"),
        "foreign blend": anomalies._texture_blend,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)

    import torch
    from sklearn.metrics import roc_auc_score

    from common import runs
    from common.device import set_threads
    from verticals.manufacturing.data import load_split, split_holdout, to_tensor

    set_threads(None)
    loaded = runs.load_model(args.model, expect="manufacturing")
    model, cfg = loaded.model.eval(), loaded.cfg
    _, holdout = split_holdout(load_split(cfg, args.data, "train"), cfg.holdout)

    def scores(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([model(to_tensor(images[i : i + 8]))[1].numpy() for i in range(0, len(images), 8)])

    good = scores(holdout.images)
    rng = np.random.default_rng(args.seed)
    for name, render in types().items():
        bad = []
        for _ in range(args.copies):
            for img in holdout.images:
                out, _ = render(img.astype(np.float32) / 255.0, rng)
                bad.append(np.clip(np.clip(out, 0, 1) * 255 + 0.5, 0, 255).astype(np.uint8))
        s = scores(np.stack(bad))
        auroc = roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(s))], np.r_[good, s])
        print(f"{args.model} {name:20s} image AUROC {auroc:.3f} ({len(good)} good, {len(s)} anomalous)", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
