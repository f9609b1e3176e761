"""The Python API behind `fedsite manufacturing synth / train / inspect / evaluate`.

The CLI only parses arguments and calls these; the demo and the benchmark call them directly.
`inspect` lives in infer.py and is re-exported here so every command has its function in one place.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from common import atomic, runs
from common.config import replace
from common.device import seed_everything, set_threads
from common.errors import UserError
from common.progress import log, stage
from data_adapters.images import dataset_split
from data_adapters.synth.inspection import write_dataset
from data_adapters.synth.surfaces import CATEGORIES, Lighting

from .baseline import GoldenTemplate, baseline_predictions, fit_baseline
from .config import InspectConfig
from .data import load_split
from .deploy import FP32_NAME, INT8_NAME, load_backend, prepare_deployment
from .evaluate import metrics_from, model_maps_and_boxes, predict
from .infer import inspect
from .task import TASK

BASELINE_NAME = "baseline.npz"


def synth(out: str | Path, *, seed: int = 0, category: str = "metal", scale: str = "full", site: int = 0) -> Path:
    """Write one synthetic dataset (MVTec layout) at `out`, atomically; `category="all"` writes one per category."""
    if category != "all" and category not in CATEGORIES:
        raise UserError(f"--category {category}: unknown (known: all, {', '.join(CATEGORIES)})")
    if scale not in ("tiny", "small", "full"):
        raise UserError(f"--scale {scale}: expected tiny, small or full")
    lighting = Lighting.for_site(site)
    with atomic.atomic_dir(out) as tmp:
        if category == "all":
            for i, name in enumerate(CATEGORIES):
                write_dataset(tmp / name, name, seed=seed * 100 + i, scale=scale, lighting=lighting)
        else:
            write_dataset(tmp, category, seed=seed, scale=scale, lighting=lighting)
    log(f"manufacturing: wrote synthetic {category} data ({scale}) to {out}")
    return Path(out)


def train(data_dir: str | Path, out: str | Path, cfg: InspectConfig, *, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Train DefectNet (through the Task, as federation does) and the golden-template baseline on
    the good parts of `data_dir` (MVTec AD train/good or VisA's train split); write a model directory.

    The directory also holds the ONNX export (and the INT8 one when measured faster and faithful),
    the baseline, and the measured deployment choice in metadata.json. `seed` becomes the config's
    seed, so `fedsite compress` on the directory calibrates INT8 on the same images training did.
    """
    set_threads(None)
    seed_everything(seed)
    cfg = replace(cfg, seed=seed)
    data = TASK.load_data(cfg, data_dir, "train")
    model = TASK.build_model(cfg)
    metrics = TASK.fit(model, data, cfg)
    cfg = replace(cfg, blur_sigma=metrics.get("blur_sigma", cfg.blur_sigma))  # chosen on validation
    log(f"manufacturing: trained in {metrics['train_seconds']:.0f}s (loss {metrics['loss']:.3f})")
    return write_model_dir(out, model, cfg, metrics, data, data_dir, seed=seed), metrics


def write_model_dir(
    out: str | Path,
    model: Any,
    cfg: InspectConfig,
    metrics: dict[str, Any],
    data: Any,
    data_dir: str | Path,
    *,
    seed: int,
) -> Path:
    """The model directory of a fitted DefectNet: baseline, ONNX (+ INT8 when measured better), metadata.

    Also used by benchmarks/grain_stage.py to write a trained model refitted with the grain stage.
    """
    with stage("manufacturing: fitting the golden-template baseline"):
        baseline = fit_baseline(data, cfg)
    model = model.cpu().eval()
    calibration = [batch for (batch,) in TASK.calibration_batches(data, cfg)]
    files = {BASELINE_NAME: baseline.to_bytes()}
    with tempfile.TemporaryDirectory(prefix="fedsite-mfg-") as work, stage("manufacturing: ONNX export, INT8, timing"):
        deployment = prepare_deployment(model, cfg, calibration, Path(work))
        for name in (FP32_NAME, INT8_NAME):
            if (Path(work) / name).is_file():
                files[name] = (Path(work) / name).read_bytes()
    log(f"manufacturing: deployment {deployment['chosen']} (latency ms {deployment['latency_ms']})")
    return runs.save_model(
        out,
        "manufacturing",
        model,
        cfg,
        metrics=metrics,
        seed=seed,
        data_fingerprint=runs.fingerprint(dataset_split(data_dir, "train").paths),  # MVTec or VisA
        extra={"deployment": deployment, "train_images": len(data)},
        extra_files=files,
    )


def evaluate_model(
    data_dir: str | Path,
    model_dir: str | Path,
    *,
    backend: str = "auto",
    baseline: bool = True,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of the model (and of the golden-template baseline, under "baseline") on `data_dir/test`.

    `out_dir`: also write roc.png, confusion.json and annotated/ there (evaluate_report.py).
    """
    loaded = runs.load_model(model_dir, expect="manufacturing")
    cfg = loaded.cfg
    data = load_split(cfg, data_dir, "test")
    with tempfile.TemporaryDirectory(prefix="fedsite-mfg-") as work:
        module, name = load_backend(Path(model_dir), loaded.model, cfg, backend, Path(work))
        scores, logits, thresholds = predict(module, data, cfg)
    maps, boxes = model_maps_and_boxes(scores, logits, thresholds, cfg)
    metrics: dict[str, Any] = dict(metrics_from(scores, maps, thresholds[0], boxes, data, cfg))
    baseline_scores = None
    metrics["backend"] = name
    metrics["n_images"] = len(data)
    metrics["n_defective"] = int(data.labels.sum())
    baseline_path = Path(model_dir) / BASELINE_NAME
    if baseline and baseline_path.is_file():
        template = GoldenTemplate.from_bytes(baseline_path.read_bytes(), str(baseline_path))
        baseline_scores, b_maps, b_boxes = baseline_predictions(template, data, cfg)
        metrics["baseline"] = metrics_from(baseline_scores, b_maps, template.image_threshold, b_boxes, data, cfg)
    if out_dir is not None:
        from .evaluate_report import write_report

        metrics["confusion"] = write_report(out_dir, data, scores, logits, thresholds, cfg, baseline_scores)
    return metrics


__all__ = ["evaluate_model", "inspect", "synth", "train"]
