"""Image AUROC of trained manufacturing models under other image-score poolings, without retraining.

The image score is a pooling of the same anomaly map, so box vs line pooling (model.image_score) can be
compared on one trained model: its test split per defect kind, and the training-time validation set
(held-out good parts + synthetic anomalies, memory.validation_set) that a per-model choice would use.

    python benchmarks/score_pooling.py DATA_DIR:MODEL_DIR [...] [--lines 9,17,25,33]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _rows(data_dir: Path, model_dir: Path, lines: list[int], tops: list[int]) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from common import runs
    from verticals.manufacturing.data import load_split, split_holdout, to_tensor
    from verticals.manufacturing.memory import validation_set
    from verticals.manufacturing.model import line_kernels

    loaded = runs.load_model(model_dir, expect="manufacturing")
    model, cfg = loaded.model.eval(), loaded.cfg
    test = load_split(cfg, data_dir, "test")
    _, holdout = split_holdout(load_split(cfg, data_dir, "train"), cfg.holdout)
    val_images, val_labels, _ = validation_set(holdout, cfg.seed, oriented=cfg.oriented_anomalies)

    @torch.no_grad()
    def logits(images: np.ndarray) -> torch.Tensor:
        return torch.cat([model.fused(to_tensor(images[i : i + 8])) for i in range(0, len(images), 8)])

    variants = {"box": ("box", 0)} | {f"line{n}": ("line", n) for n in lines}
    variants |= {f"top{n}": ("top", n) for n in tops}

    @torch.no_grad()
    def score(maps: torch.Tensor, kind: str, n: int) -> np.ndarray:
        model.score_pooling = kind
        if kind == "line":
            size = max(3, round(n * cfg.image_size / 256 / cfg.model_stride))
            model.line_kernels = line_kernels(size)
        if kind == "top":  # mean of the top n per mille of the map's probabilities (a reference, not in the model)
            flat = torch.sigmoid(maps).flatten(1)
            return flat.topk(max(1, flat.shape[1] * n // 1000), dim=1).values.mean(1).numpy()
        return model.image_score(maps).numpy()

    test_maps, val_maps = logits(test.images), logits(val_images)
    out: dict[str, dict[str, float]] = {}
    kinds = sorted({k for k, lab in zip(test.kinds, test.labels) if lab})
    for name, (kind, n) in variants.items():
        s_test, s_val = score(test_maps, kind, n), score(val_maps, kind, n)
        row = {"validation": float(roc_auc_score(val_labels, s_val)), "all": float(roc_auc_score(test.labels, s_test))}
        for k in kinds:
            keep = np.asarray([lab == 0 or kk == k for kk, lab in zip(test.kinds, test.labels)])
            row[k] = float(roc_auc_score(test.labels[keep], s_test[keep]))
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="DATA_DIR:MODEL_DIR")
    parser.add_argument("--lines", default="9,17,25,33", help="line lengths in pixels of a 256 px image")
    parser.add_argument("--tops", default="", help="also: mean of the top N per mille of the map, e.g. 5,10,20")
    args = parser.parse_args(argv)
    tops = [int(v) for v in args.tops.split(",") if v.strip()]
    lines = [int(v) for v in args.lines.split(",") if v.strip()]
    results = {}
    for pair in args.pairs:
        data_dir, model_dir = pair.split(":")
        results[model_dir] = _rows(Path(data_dir), Path(model_dir), lines, tops)
        for name, row in results[model_dir].items():
            print(f"{Path(model_dir).name:20s} {name:7s} " + " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
