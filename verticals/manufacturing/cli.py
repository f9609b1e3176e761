"""`fedsite manufacturing synth / train / inspect / evaluate`: parse, call api.py, map errors.

Heavy imports (torch, cv2) happen inside the commands so `fedsite --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from common.cli import QUICK_SYNTH_HELP, QUICK_TRAIN_HELP
from common.errors import PartialSuccess

app = typer.Typer(no_args_is_help=True, help="Visual defect inspection: synth, train, inspect, evaluate.")


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (MVTec AD layout)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same files)."),
    category: str = typer.Option(
        "metal", "--category", help="metal, fabric, wood, tile, brick, grass, gravel, or 'all' (one folder each)."
    ),
    scale: str | None = typer.Option(
        None,
        "--scale",
        help="tiny (64 px), small (128 px) or full (256 px, benchmark) [default: full; small with --quick].",
    ),
    site: int = typer.Option(0, "--site", help="Site index: changes the line's lighting."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_SYNTH_HELP),
) -> None:
    """Write a synthetic inspection dataset: good parts for training, good and defective parts with masks for test."""
    from .api import synth as run

    scale = scale or ("small" if quick else "full")

    run(out, seed=seed, category=category, scale=scale, site=site)


@app.command()
def train(
    data: Path = typer.Option(
        ..., "--data", help="Dataset folder (MVTec AD or VisA layout); trains on the good parts only."
    ),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    config: Path | None = typer.Option(None, "--config", help="TOML file of config overrides."),
    set_: list[str] = typer.Option([], "--set", help="Override one config key: key=value (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_TRAIN_HELP),
) -> None:
    """Train the defect model and the golden-template baseline from defect-free images; export to ONNX.

    --quick trains the small preset (128 px), sized for `synth --quick` data."""
    from common.config import resolve

    from .api import train as run
    from .config import PRESETS, InspectConfig

    base = PRESETS["small" if quick else "default"]
    cfg = resolve(InspectConfig, config, set_, section="manufacturing", base=base)
    path, metrics = run(data, out, cfg, seed=seed)
    typer.echo(json.dumps({"model": str(path), **{k: round(v, 6) for k, v in metrics.items()}}))


@app.command()
def inspect(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="An image, a folder of images (recursive) or a video."
    ),
    model: Path = typer.Option(..., "--model", help="Model directory from `train`."),
    out: Path = typer.Option(
        ..., "--out", help="Output folder: results.csv, defects.csv, annotated/, contact_sheet.png."
    ),
    backend: str = typer.Option("auto", "--backend", help="auto (fastest measured), ort_fp32, ort_int8 or torch."),
    every: int = typer.Option(1, "--every", min=1, help="For video: inspect every N-th frame."),
    no_annotated: bool = typer.Option(False, "--no-annotated", help="Skip annotated images (fastest)."),
) -> None:
    """Inspect parts: OK/NG, score, defect boxes and annotated images.

    INPUT is an image (PNG/JPEG/BMP), a folder searched recursively, or a video file. Corrupt, empty
    or unsupported files are listed in results.csv (status=rejected) and the command exits 3.
    """
    from common.errors import UserError

    from .api import inspect as run

    if backend not in ("auto", "ort_fp32", "ort_int8", "torch"):
        raise UserError(f"--backend {backend}: expected auto, ort_fp32, ort_int8 or torch")
    summary = run(input_path, model, out, backend=backend, video_every=every, write_annotated=not no_annotated)
    typer.echo(
        json.dumps({k: v for k, v in summary.items() if k != "rejected"} | {"rejected": len(summary["rejected"])})
    )
    if summary["rejected"]:
        first = summary["rejected"][0]
        raise PartialSuccess(
            f"{len(summary['rejected'])} input(s) rejected (first: {first['image']}: {first['reason']}); "
            f"see {out / 'results.csv'}",
            rejected=len(summary["rejected"]),
        )


@app.command()
def evaluate(
    data: Path = typer.Option(
        ..., "--data", help="Dataset folder: MVTec AD (test/, ground_truth/) or VisA (split_csv/1cls.csv)."
    ),
    model: Path = typer.Option(..., "--model", help="Model directory from `train`."),
    backend: str = typer.Option("auto", "--backend", help="auto, ort_fp32, ort_int8 or torch."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the golden-template baseline."),
    out: Path | None = typer.Option(
        None, "--out", help="Directory for roc.png, confusion.json (escapes, false rejects) and annotated/ images."
    ),
) -> None:
    """Print JSON metrics: image_auroc, pixel_auroc, aupro, f1_image, box precision/recall, per-kind AUROC, baseline."""
    from .api import evaluate_model

    metrics = evaluate_model(data, model, backend=backend, baseline=not no_baseline, out_dir=out)
    typer.echo(json.dumps(metrics, indent=2))
