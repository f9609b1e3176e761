"""Model directory in, model directory out: what `fedsite compress` and `fedsite profile` do.

The CLI only parses options; this module loads the model directory, finds data to measure on (the
site's own `--data`, or held-out synthetic data from the Task when none is given, which the report
says), runs the pipeline and writes the compressed model directory atomically: `model.pt`,
`config.toml`, `metadata.json`, `model.onnx` (the chosen runtime model), `model_fp32.onnx`,
`model_int8.onnx` (when INT8 was tried) and `compression.json`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from common import runs
from common.compress.pipeline import CompressOptions, compress_model
from common.errors import UserError
from common.progress import log
from common.strict_json import to_json


def _load_split(task: Any, cfg: Any, source: Path, split: str) -> Any:
    try:
        return task.load_data(cfg, source, split)
    except UserError:
        raise
    except Exception as exc:  # the vertical's loader failed on this input: one line, naming the source
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise UserError(f"{source}: cannot load {task.name} data for split '{split}' ({reason})") from None


def _data(task: Any, cfg: Any, data: Path | None, seed: int, scale: str, scratch: Path) -> tuple[Any, Any, dict]:
    """(train, held-out, description): from `data`, or synthesized when it is None."""
    if data is not None:
        if not Path(data).exists():
            raise UserError(f"{data}: data source not found")
        info = {"source": str(data), "synthesized": False, "fingerprint": runs.fingerprint(data)}
        source = Path(data)
    else:
        log(f"compress: no --data given; synthesizing held-out {task.name} data (scale={scale}, seed={seed})")
        source = task.synthesize(scratch / "data", seed=seed, scale=scale)
        info = {"source": "synthesized", "synthesized": True, "scale": scale, "seed": seed}
    return _load_split(task, cfg, source, "train"), _load_split(task, cfg, source, "test"), info


def compress_directory(
    model_dir: Path,
    out: Path,
    options: CompressOptions,
    *,
    data: Path | None = None,
    seed: int = 0,
    scale: str = "small",
) -> dict[str, Any]:
    """Compress the model in `model_dir` into the model directory `out`; return compression.json's content."""
    from common.device import seed_everything, set_threads

    if Path(out).resolve() == Path(model_dir).resolve():
        raise UserError(f"{out}: --out must differ from the input model directory (inputs are never overwritten)")
    if not 0.0 <= options.prune < 1.0:
        raise UserError(f"--prune {options.prune}: must be in [0, 1)")
    if not 0.0 <= options.sparsity < 1.0:
        raise UserError(f"--sparsity {options.sparsity}: must be in [0, 1)")
    if options.max_drop < 0:
        raise UserError(f"--max-drop {options.max_drop}: must be >= 0")
    if options.distill and options.prune == 0:
        log("compress: --distill without --prune: the student is the model pruned by 50%")
        options = CompressOptions(**{**options.__dict__, "prune": 0.5})
    set_threads(None)
    seed_everything(seed)
    loaded = runs.load_model(model_dir)
    task, cfg = loaded.task, loaded.cfg
    with tempfile.TemporaryDirectory(prefix="fedsite-compress-") as tmp:
        scratch = Path(tmp)
        train, held_out, data_info = _data(task, cfg, data, seed, scale, scratch)
        result = compress_model(task, loaded.model, cfg, train, held_out, scratch / "work", options)
        report = {"vertical": task.name, "source_model": str(model_dir), "seed": seed, "data": data_info}
        report.update(result.report)
        for cand in report["int8"].get("candidates", []):
            cand["path"] = Path(cand["path"]).name
        files = {
            "model.onnx": result.chosen_onnx.read_bytes(),
            "model_fp32.onnx": result.fp32_onnx.read_bytes(),
            "compression.json": (to_json(report) + "\n").encode(),
        }
        if result.int8_onnx is not None:
            files["model_int8.onnx"] = result.int8_onnx.read_bytes()
        extra = {
            "compressed_from": str(model_dir),
            "compression": {k: report[k] for k in ("chosen", "size_bytes", "latency_ms", "metric", "kept_fp32_nodes")},
        }
        if report.get("pruned_structure"):
            extra["pruned_structure"] = report["pruned_structure"]
        runs.save_model(
            out,
            task.name,
            result.model,
            cfg,
            metrics=report["metrics_after"],
            seed=seed,
            data_fingerprint=data_info.get("fingerprint"),
            extra=extra,
            extra_files=files,
        )
    log(f"compress: wrote {out} (chosen {report['chosen']})")
    return report


def input_labels(model: Any, example: Any) -> list[dict[str, Any]]:
    """[{"name": forward's parameter name, "shape": [...]}] so a profile says what each input is."""
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values() if p.kind != p.VAR_KEYWORD]
    names = [p.name for p in params] + [f"input_{i}" for i in range(len(params), len(example))]
    return [{"name": n, "shape": list(t.shape)} for n, t in zip(names, example)]


def profile_directory(model_dir: Path, *, ort: bool = True) -> dict[str, Any]:
    """Per-layer profile plus whole-model latency in torch, ORT fp32 and ORT int8 at the example input."""
    from common.compress.latency import ort_latency_ms, torch_latency_ms
    from common.compress.quantize import prepare, quantize_static_int8
    from common.device import set_threads
    from common.export import export_onnx
    from common.profile import profile_model

    set_threads(None)
    loaded = runs.load_model(model_dir)
    example = loaded.task.example_input(loaded.cfg)
    table = profile_model(loaded.model, example)
    latency: dict[str, float | None] = {"torch": torch_latency_ms(loaded.model, example)}
    if ort:
        with tempfile.TemporaryDirectory(prefix="fedsite-profile-") as tmp:
            fp32 = export_onnx(loaded.model, example, Path(tmp) / "fp32.onnx")
            latency["ort_fp32"] = ort_latency_ms(fp32, example)
            existing = Path(model_dir) / "model_int8.onnx"
            if existing.exists():
                int8 = existing
            else:  # ranges from the example input: fine for timing, not for accuracy
                int8 = quantize_static_int8(prepare(fp32, Path(tmp) / "prep.onnx"), Path(tmp) / "int8.onnx", [example])
            latency["ort_int8"] = ort_latency_ms(int8, example)
    table["latency_ms"] = latency
    table["vertical"] = loaded.task.name
    table["example_input_shapes"] = [list(t.shape) for t in example]
    table["example_inputs"] = input_labels(loaded.model, example)
    return table
