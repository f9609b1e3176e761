"""What the grain stage (verticals/manufacturing/grain.py) adds to trained models, per defect kind, without retraining.

The grain stage is fitted after the network (calibration on held-out good parts, weight chosen on the
training-time validation set), so its effect can be measured on the SAME trained model: each model is
rebuilt with the stage, calibrated and weighted exactly as `train` does (memory.fit_grain_affine,
memory.choose_weights), and scored on its test split through torch fp32. Rows per model:

- `as trained`: the model directory's own fusion (segmenter + memory + grain at the weights it chose);
- `no grain`: the same network without the grain stage, memory weight chosen alone on validation;
- `+grain L`: grain stage of line length L (px of a 256 px image), both weights re-chosen on validation;
- `+grain L wW`: the same with the grain weight forced to W (measurement only: what it would add);
- `grain alone`: the grain stage's evidence as the only map (a classical reference).

    python benchmarks/grain_stage.py DATA_DIR:MODEL_DIR [...] [--lines 25] [--json OUT.json] [--save DIR]

`--save DIR` writes each model refitted with the grain stage (first line length; thresholds
re-calibrated on the held-out good parts as `train` does; ONNX, INT8 choice and timing by the same
code) to DIR/<model name>, so `fedsite manufacturing evaluate|inspect` and benchmarks/thin_examples.py
run it end to end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _metrics(model, fused, test, blur: float) -> dict[str, float]:
    """Image AUROC (the model's own pooling) and pixel AUROC (map as `decide` smooths it), overall and per kind."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from verticals.manufacturing.postprocess import smooth

    scores = model.image_score(fused).numpy()
    up = F.interpolate(fused, size=test.masks.shape[-2:], mode="bilinear", align_corners=False)
    maps = np.stack([smooth(p, blur) for p in torch.sigmoid(up[:, 0]).numpy()])
    kinds = np.asarray(test.kinds)
    row = {"image": float(roc_auc_score(test.labels, scores))}
    row["pixel"] = float(roc_auc_score(test.masks.ravel(), maps.ravel()))
    for kind in sorted(set(test.kinds) - {"good"}):
        keep = (kinds == "good") | (kinds == kind)
        row[kind] = float(roc_auc_score(test.labels[keep], scores[keep]))
        row[f"px_{kind}"] = float(roc_auc_score(test.masks[keep].ravel(), maps[keep].ravel()))
    return row


def rows_for(
    data_dir: Path, model_dir: Path, lines: list[int], save: Path | None = None
) -> dict[str, dict[str, float]]:
    """Per-kind metrics of one trained model with and without the grain stage."""
    from dataclasses import replace

    import torch

    from common import runs
    from verticals.manufacturing.data import load_split, split_holdout
    from verticals.manufacturing.memory import choose_weights, fit_grain_affine, fusion_parts, validation_set
    from verticals.manufacturing.task import model_from_config

    loaded = runs.load_model(model_dir, expect="manufacturing")
    cfg = loaded.cfg
    test = load_split(cfg, data_dir, "test")
    train, holdout = split_holdout(load_split(cfg, data_dir, "train"), cfg.holdout)
    validation = validation_set(holdout, cfg.seed, oriented=cfg.oriented_anomalies)
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        base = loaded.model.eval()
        seg, mem, grain = fusion_parts(base, test.images)
        w_mem = float(base.memory_affine[2]) if base.memory_size > 0 else 0.0
        w_grain = float(base.grain_affine[2]) if base.grain else 0.0
        out["as trained"] = _metrics(base, seg + w_mem * mem + w_grain * grain, test, cfg.blur_sigma) | {
            "w_mem": w_mem,
            "w_grain": w_grain,
        }
        plain_cfg = replace(cfg, grain=False)  # the same network without the stage, memory weight chosen alone
        plain = model_from_config(plain_cfg)
        plain.load_state_dict(base.state_dict(), strict=False)
        plain.eval()
        (wm, _), _ = choose_weights(plain, validation, plain_cfg)
        out["no grain"] = _metrics(plain, seg + wm * mem, test, cfg.blur_sigma) | {"w_mem": wm}
        for length in lines:
            grain_cfg = replace(cfg, grain=True, grain_line=length)
            model = model_from_config(grain_cfg)
            model.load_state_dict(base.state_dict(), strict=False)
            model.eval()
            fit_grain_affine(model, train, holdout)
            (wm, wg), _ = choose_weights(model, validation, grain_cfg)
            seg, mem, grain = fusion_parts(model, test.images)
            out[f"+grain {length}"] = _metrics(model, seg + wm * mem + wg * grain, test, cfg.blur_sigma) | {
                "w_mem": wm,
                "w_grain": wg,
            }
            for forced in (1.0, 2.0):  # what the stage would add had validation picked it (not a choice)
                fixed = _metrics(model, seg + wm * mem + forced * grain, test, cfg.blur_sigma)
                out[f"+grain {length} w{forced:g}"] = fixed | {"w_mem": wm, "w_grain": forced}
            out[f"grain alone {length}"] = _metrics(model, grain - 4.0, test, cfg.blur_sigma)
            if save is not None and length == lines[0]:
                _save(model, grain_cfg, (wm, wg), train, holdout, data_dir, save / model_dir.name, loaded.metadata)
    return out


def _save(model, cfg, weights, train, holdout, data_dir: Path, out: Path, meta: dict) -> None:
    """Write the refitted model as a model directory (api.write_model_dir), thresholds re-calibrated."""
    import numpy as np

    from verticals.manufacturing.api import write_model_dir
    from verticals.manufacturing.data import InspectionData
    from verticals.manufacturing.train import calibrate

    if model.memory_size > 0:
        model.memory_affine[2] = weights[0]
    model.grain_affine[2] = weights[1]
    metrics = dict(meta.get("metrics", {})) | {"memory_weight": weights[0], "grain_weight": weights[1]}
    metrics |= calibrate(model, holdout, cfg)
    both = InspectionData(
        np.concatenate([train.images, holdout.images]),
        np.concatenate([train.labels, holdout.labels]),
        np.concatenate([train.masks, holdout.masks]),
        np.concatenate([train.has_mask, holdout.has_mask]),
        train.kinds + holdout.kinds,
    )
    write_model_dir(out, model, cfg, metrics, both, data_dir, seed=cfg.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="DATA_DIR:MODEL_DIR")
    parser.add_argument("--lines", default="25", help="grain line lengths in pixels of a 256 px image")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--save", type=Path, default=None, help="write the refitted models under this folder")
    args = parser.parse_args(argv)
    lines = [int(v) for v in args.lines.split(",") if v.strip()]
    results = {}
    for pair in args.pairs:
        data_dir, model_dir = pair.split(":")
        results[model_dir] = rows_for(Path(data_dir), Path(model_dir), lines, args.save)
        for name, row in results[model_dir].items():
            print(f"{Path(model_dir).name:18s} {name:15s} " + " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
