"""`fedsite compress` and `fedsite profile`: parse options, call common.compress.workflow, print.

Heavy imports (torch, onnxruntime) happen inside the commands so `fedsite --help` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from common.errors import PartialSuccess, UserError
from common.strict_json import to_json


class Int8Mode(StrEnum):
    on = "on"
    off = "off"
    auto = "auto"


class Calibration(StrEnum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"


class DataScale(StrEnum):
    tiny = "tiny"
    small = "small"


def compress(
    model_dir: Path = typer.Argument(..., help="Model directory to compress (never modified)."),
    out: Path = typer.Option(..., "--out", help="Output model directory (with compression.json)."),
    int8: Int8Mode = typer.Option(
        Int8Mode.auto, "--int8", help="INT8 via ONNX Runtime: on, off, or auto (kept only if measured faster)."
    ),
    prune: float = typer.Option(0.0, "--prune", help="Fraction of channels to remove structurally (e.g. 0.5)."),
    distill: bool = typer.Option(False, "--distill", help="Fine-tune the pruned model against the original."),
    max_drop: float = typer.Option(0.01, "--max-drop", help="Allowed relative drop of the headline metric (0.01=1%)."),
    data: Path = typer.Option(None, "--data", help="Site data to fine-tune, calibrate and score on."),
    seed: int = typer.Option(0, "--seed", help="Seed for synthesized data and fine-tuning."),
    calibration: Calibration = typer.Option(Calibration.minmax, "--calibration", help="Static INT8 calibration."),
    sparsity: float = typer.Option(0.0, "--sparsity", help="Unstructured magnitude pruning (reported as sparsity)."),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs", help="Epochs of fine-tuning per pruning round."),
    scale: DataScale = typer.Option(
        DataScale.small, "--scale", help="Size of the data synthesized when --data is not given (as in synth)."
    ),
    data_scale: DataScale = typer.Option(None, "--data-scale", hidden=True, help="Deprecated spelling of --scale."),
    as_json: bool = typer.Option(False, "--json", help="Print compression.json to stdout."),
    force: bool = typer.Option(
        False, "--force", help="Go on when the metric is 0 or undefined on the data (no accuracy guard then)."
    ),
) -> None:
    """Compress a model directory: prune, export to ONNX, INT8 by measurement; writes OUT/compression.json."""
    from common.compress.pipeline import CompressOptions
    from common.compress.workflow import compress_directory

    if finetune_epochs < 0:
        raise UserError(f"--finetune-epochs {finetune_epochs}: must be >= 0")
    options = CompressOptions(
        int8=int8.value,
        prune=prune,
        distill=distill,
        sparsity=sparsity,
        max_drop=max_drop,
        calibration=calibration.value,
        finetune_epochs=finetune_epochs,
        force=force,
    )
    if data_scale is not None:
        from common.progress import log

        log("warning: --data-scale is deprecated; say --scale (the same spelling as synth and federate)")
        scale = data_scale
    report = compress_directory(model_dir, out, options, data=data, seed=seed, scale=scale.value)
    if as_json:
        print(to_json(report))
    else:
        _print_summary(report)
    stopped = (report.get("prune") or {}).get("stopped")
    if stopped:  # outputs are written; the exit code says the pruning part was not done in full
        raise PartialSuccess(f"{out}: written, but pruning stopped early: {stopped} (see compression.json)")


def _print_summary(report: dict) -> None:
    lat, size, metric = report["latency_ms"], report["size_bytes"], report["metric"]
    print(f"chosen: {report['chosen']}  ({report['int8'].get('reason', 'int8 off')})")
    print(f"size bytes: fp32 {size['fp32']:,}  int8 {size['int8'] or 0:,}")
    print("latency ms: " + "  ".join(f"{k} {v:.3f}" for k, v in lat.items() if v is not None))
    print(f"{metric['name']}: before {metric['before']:.4f}  after {metric['after']:.4f}")
    if report["kept_fp32_nodes"]:
        print(f"kept fp32: {', '.join(report['kept_fp32_nodes'])}")


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


def profile(
    model_dir: Path = typer.Argument(..., help="Model directory to profile."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON instead of a table."),
    ort: bool = typer.Option(True, "--ort/--no-ort", help="Also time ONNX Runtime fp32 and int8."),
) -> None:
    """Per-layer parameters, FLOPs, activation memory and latency share; whole-model latency per runtime."""
    from common.compress.workflow import profile_directory

    table = profile_directory(model_dir, ort=ort)
    if as_json:
        print(to_json(table))
        return
    from rich.console import Console
    from rich.table import Table

    shapes = ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in table["example_inputs"])
    view = Table(
        title=f"{table['vertical']} model, example input (batch first): {shapes}",
        caption="FLOPs n/a: layers without weights (activations, padding, dropout, scatter); "
        "the counter prices matmul and convolution ops only.",
    )
    for column in ("layer", "type", "params", "FLOPs", "activations", "latency share"):
        view.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for row in table["layers"]:
        view.add_row(
            row["name"],
            row["type"],
            f"{row['params']:,}",
            _human(row["flops"]) if row["flops_counted"] else "n/a",
            _human(row["activation_bytes"], "B"),
            f"{row['latency_share']:.1%}",
        )
    total = table["total"]
    activations = _human(total["activation_bytes"], "B")
    view.add_row("total", "", f"{total['params']:,}", _human(total["flops"]), activations, "")
    console = Console(width=max(100, Console().width))
    console.print(view)
    lat = table["latency_ms"]
    console.print("latency ms (median): " + "  ".join(f"{k} {v:.3f}" for k, v in lat.items() if v is not None))
