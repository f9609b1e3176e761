"""Re-score trained held-out models on a 4x larger test split of the same generator and seed.

Why: the benchmark's `full` held-out data has 24 good and 6 defective parts per kind, so one
per-kind image AUROC moves in steps of 1/144 and its standard error is about 0.1: two models that
differ by less cannot be told apart. This writes the SAME surface with the same seed and the same
80 training parts (the generator draws the training split first, from its own stream; the first 24
good and 6 per-kind test parts are also identical) but 96 good and 24 defective parts per kind, and
evaluates each model directory on it (torch fp32), so models trained by `benchmarks/manufacturing.py
--scale full` are compared on 4x the evidence without retraining. Judging only: nothing is chosen
on this split.

`--relations` also splits the thin kinds (scratch, thin_line) into lines ALONG and ACROSS the grain
(image AUROC of each half against all good parts). The generator does not store the relation, so it
is read back from each mask's principal axis: on wood and brushed metal the grain runs within a few
degrees of the image x axis, so an axis within 45 degrees of it is "along" (not meaningful on
machined metal, whose grain angle varies per part, or on surfaces without grain).

    python benchmarks/heldout_wide.py --surface wood [--relations] runs/base/models/heldout-wood [MODEL_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WIDE = {"size": 256, "n_train": 80, "n_test_good": 96, "n_per_kind": 24}
THIN = ("scratch", "thin_line")


def mask_axis(mask) -> float:
    """Angle in [0, pi) of the principal axis of a mask's pixels (x axis = 0)."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    vals, vecs = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(float)))
    return float(np.arctan2(vecs[1, -1], vecs[0, -1]) % np.pi)


def relation_aurocs(data_dir: Path, model_dir: Path) -> dict[str, float]:
    """Image AUROC of the thin kinds' lines along / across an x-axis grain (torch fp32), with their counts."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from common import runs
    from verticals.manufacturing.data import load_split
    from verticals.manufacturing.evaluate import predict

    loaded = runs.load_model(model_dir, expect="manufacturing")
    data = load_split(loaded.cfg, data_dir, "test")
    scores = predict(loaded.model, data, loaded.cfg)[0]
    kinds = np.array(data.kinds)
    good = scores[data.labels == 0]
    out = {}
    for kind in THIN:
        idx = np.nonzero(kinds == kind)[0]
        along = np.array([min(mask_axis(data.masks[i]), np.pi - mask_axis(data.masks[i])) < np.pi / 4 for i in idx])
        for name, sel in (("along", idx[along]), ("across", idx[~along])):
            bad = scores[sel]
            labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
            auroc = roc_auc_score(labels, np.r_[good, bad]) if len(bad) else float("nan")
            out[f"image_auroc_{kind}_{name}"] = float(auroc)
            out[f"n_{kind}_{name}"] = float(len(bad))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--surface", required=True)
    parser.add_argument("--data", type=Path, default=Path("runs/heldout-wide"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--relations", action="store_true", help="thin kinds along / across the grain as well")
    args = parser.parse_args(argv)

    from common.device import set_threads
    from data_adapters.synth.heldout_surfaces import write_heldout
    from data_adapters.synth.inspection import Scale
    from verticals.manufacturing.api import evaluate_model

    set_threads(None)
    data = args.data / f"{args.surface}-seed{args.seed}"
    if not (data / "dataset.json").is_file():
        write_heldout(data, args.surface, seed=args.seed, scale=Scale(**WIDE))
    rows = {}
    for model in args.models:
        r = evaluate_model(data, model, backend="torch", baseline=False)
        rows[str(model)] = {k: v for k, v in r.items() if k.startswith(("image_auroc", "pixel_auroc"))}
        if args.relations:
            rows[str(model)] |= relation_aurocs(data, model)
        cells = " ".join(f"{k}={v:.3f}" for k, v in sorted(rows[str(model)].items()))
        print(f"{model} {cells}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
