"""The compression pipeline behind `fedsite compress`: prune -> export -> INT8 by measurement.

Every decision is measured on this machine, at the Task's example input, with the Task's metric:
- structural pruning (+ optional distillation from the unpruned teacher) through `Task.fit`;
- ONNX export with a parity check (a wrong fp32 graph would poison every later number);
- INT8 candidates: static QDQ with sensitivity-based mixed precision; static QDQ of the Conv nodes
  only, and of every node with stored weights (Conv/Gemm/MatMul), all other ops fp32; dynamic INT8
  of the MatMul/Gemm parts when the graph has any. With `int8="auto"` an INT8 model is chosen only when it
  is faster than ORT fp32 (by `min_speedup`) AND its metric drop is within `max_drop`; 3D convs,
  which run slower in INT8 here, are rejected by that measurement, not by a rule about 3D.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.compress.compact import compact_onnx
from common.compress.distill import distillation_loss
from common.compress.latency import (
    OrtModule,
    ort_caller,
    ort_latency_ms,
    paired_median_ms,
    torch_caller,
    torch_latency_ms,
)
from common.compress.prune import PruningUnsupported, count_params, magnitude_prune, prune_channels, structure
from common.compress.quantize import (
    WEIGHTED_OPS,
    nodes_with_weights,
    prepare,
    quantization_summary,
    quantize_dynamic_int8,
)
from common.compress.sensitivity import MixedPrecisionResult, candidate_nodes, mixed_precision, relative_drop
from common.export import export_onnx, onnx_size_bytes, parity
from common.guard import require_judgeable
from common.progress import log, stage


@dataclass(frozen=True)
class CompressOptions:
    """What to try; defaults match `fedsite compress` without options."""

    int8: str = "auto"  # on | off | auto
    prune: float = 0.0  # fraction of channels removed structurally
    distill: bool = False  # fine-tune the pruned student against the unpruned teacher
    sparsity: float = 0.0  # unstructured magnitude pruning (reported as sparsity)
    max_drop: float = 0.01  # allowed relative drop of the headline metric for INT8
    calibration: str = "minmax"  # minmax | percentile | entropy
    prune_step: float = 0.1
    finetune_epochs: int = 1
    min_speedup: float = 1.05  # INT8 must beat ORT fp32 latency by this factor in auto mode
    dynamic_int8: bool = True  # also try dynamic INT8 for MatMul/Gemm when the graph has them
    weighted_int8: bool = True  # also try static INT8 of Conv-only and of all weighted nodes, the rest fp32
    temperature: float = 4.0
    distill_weight: float = 0.5
    force: bool = False  # go on when the metric before compression cannot anchor a drop (see common/guard.py)


@dataclass
class CompressResult:
    """The compressed torch model, the ONNX files written to `workdir`, and the compression.json report."""

    model: nn.Module
    fp32_onnx: Path
    int8_onnx: Path | None
    chosen_onnx: Path
    report: dict[str, Any] = field(default_factory=dict)


def strip_debug_info(path: Path) -> Path:
    """Drop what a deployed file does not need: per-node stack traces, doc strings and the intermediate
    shape annotations (ORT infers shapes itself when it loads the model)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    return path


def _headline(task: Any, metrics: dict[str, float]) -> float:
    return float(metrics.get(task.headline_metric, next(iter(metrics.values()))))


def _has_dense_ops(onnx_path: Path) -> bool:
    import onnx

    return any(n.op_type in ("MatMul", "Gemm") for n in onnx.load(str(onnx_path), load_external_data=False).graph.node)


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def compress_model(
    task: Any,
    model: nn.Module,
    cfg: Any,
    train_data: Any,
    eval_data: Any,
    workdir: str | os.PathLike[str],
    options: CompressOptions = CompressOptions(),
    example: Sequence[torch.Tensor] | None = None,
) -> CompressResult:
    """Compress `model` (not modified) as `options` say; ONNX files land in `workdir`."""
    if options.int8 not in ("on", "off", "auto"):
        raise ValueError(f"int8 must be on, off or auto, got {options.int8!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    example = tuple(example if example is not None else task.example_input(cfg))
    original = model.eval()
    model = copy.deepcopy(original)
    better = task.higher_is_better

    def score_torch(m: nn.Module) -> dict[str, float]:
        return task.evaluate(m, eval_data, cfg)

    def score_onnx(path: Path) -> dict[str, float]:
        return task.evaluate(OrtModule.like(path, model, example), eval_data, cfg)

    log("compress: scoring the original model")
    before_metrics = score_torch(original)
    before = _headline(task, before_metrics)
    metric: dict[str, Any] = {"name": task.headline_metric, "higher_is_better": better, "before": before}
    guard_off = require_judgeable(
        before,
        f"the model's {task.headline_metric}",
        force=options.force,
        hint="give --data where the model scores above 0",
    )
    if guard_off:
        metric["guard"] = f"off: {guard_off}"
    latency: dict[str, Any] = {"torch_original": torch_latency_ms(original, example)}
    report: dict[str, Any] = {"prune": None, "distill": None, "sparsity": None}

    if options.prune > 0:
        teacher = copy.deepcopy(original) if options.distill else None
        extra = None
        if teacher is not None:
            extra = distillation_loss(teacher, temperature=options.temperature, weight=options.distill_weight)
            report["distill"] = {"teacher": "original model", "temperature": options.temperature}
            report["distill"]["weight"] = options.distill_weight
        log(f"compress: pruning {options.prune:.0%} of channels, {options.prune_step:.0%} per round")
        try:
            report["prune"] = prune_channels(
                task,
                model,
                train_data,
                cfg,
                example,
                fraction=options.prune,
                step=options.prune_step,
                finetune_epochs=options.finetune_epochs,
                final_epochs=options.finetune_epochs,
                extra_loss=extra,
            )
        except PruningUnsupported as exc:
            log(f"compress: pruning skipped: {exc}")
            report["prune"] = {"fraction": options.prune, "rounds_done": 0, "stopped": str(exc)}
        metric["pruned"] = _headline(task, score_torch(model))
        metric["pruned_drop"] = relative_drop(before, metric["pruned"], better)
    if options.sparsity > 0:
        report["sparsity"] = magnitude_prune(model, options.sparsity)
        metric["sparse"] = _headline(task, score_torch(model))
    model.eval()

    log("compress: exporting to ONNX and checking parity")
    fp32 = strip_debug_info(export_onnx(model, example, workdir / "model_fp32.onnx"))
    batches = [tuple(b) for b in task.calibration_batches(train_data, cfg)]
    report["parity_max_abs_diff"] = parity(model, fp32, batches[0] if batches else example, atol=1e-4, rtol=1e-5)
    latency["torch"] = torch_latency_ms(model, example)
    latency["ort_fp32"] = ort_latency_ms(fp32, example)
    fp32_metrics = score_onnx(fp32)
    metric["ort_fp32"] = _headline(task, fp32_metrics)
    sizes: dict[str, Any] = {"fp32": onnx_size_bytes(fp32), "int8": None}

    int8_path, kept, chosen, chosen_metrics = None, [], "ort_fp32", fp32_metrics
    int8_report: dict[str, Any] = {"mode": options.int8, "calibration": options.calibration, "candidates": []}
    latency["ort_int8"] = None
    if options.int8 != "off":
        data = (train_data, eval_data)
        with stage("compress: INT8 calibration and sensitivity search"):
            candidates = _int8_candidates(task, model, cfg, data, fp32, workdir, options, metric["ort_fp32"])
        for cand in candidates:
            compact_onnx(cand["path"])  # sensitivity is done: node names are no longer needed
            cand["size_bytes"] = onnx_size_bytes(cand["path"])
        # fp32 and every candidate timed in turn, so a load change during the search moves them alike
        calls = [ort_caller(p, example) for p in (fp32, *(c["path"] for c in candidates))]
        with stage(f"compress: timing ORT fp32 against {len(candidates)} INT8 candidate(s)"):
            paired = paired_median_ms(calls, repeats=100)  # 20 rounds at sub-ms: 1.3x off the benchmark
        latency["ort_fp32"] = paired[0]
        for cand, ms in zip(candidates, paired[1:]):
            cand["latency_ms"] = ms
            log(f"compress: {cand['kind']} int8 {ms:.3g} ms vs ort fp32 {latency['ort_fp32']:.3g} ms")
        int8_report["candidates"] = [
            {k: (str(v) if isinstance(v, Path) else v) for k, v in c.items() if k != "sensitivity"} for c in candidates
        ]
        within = [c for c in candidates if c["drop"] <= options.max_drop]
        pool = within or candidates
        fastest = min(c["latency_ms"] for c in pool)
        # among candidates as fast as the fastest (5 % timing noise), the smallest file: a dynamic INT8 of
        # a conv net's one Gemm head times like fp32 and must not win a tie against a fully static model
        best = min((c for c in pool if c["latency_ms"] <= 1.05 * fastest), key=lambda c: c["size_bytes"])
        int8_path = workdir / "model_int8.onnx"
        os.replace(best["path"], int8_path)
        kept = best["kept_fp32_nodes"]
        latency["ort_int8"] = best["latency_ms"]
        sizes["int8"] = onnx_size_bytes(int8_path)
        metric["ort_int8"] = best["metric"]
        int8_report.update(kind=best["kind"], quantized=quantization_summary(int8_path))
        int8_report["sensitivity"] = best.get("sensitivity", {})
        faster = best["latency_ms"] * options.min_speedup <= latency["ort_fp32"]
        ok_metric = best["drop"] <= options.max_drop
        if options.int8 == "on" or (faster and ok_metric):
            chosen = "ort_int8"
            chosen_metrics = score_onnx(int8_path)
        reasons = []
        if not faster:
            reasons.append(f"int8 is not {options.min_speedup:g}x faster than ort fp32 here")
        if not ok_metric:
            reasons.append(f"int8 drops the metric by {best['drop']:.2%} > {options.max_drop:.2%}")
        int8_report["reason"] = "; ".join(reasons) or "int8 is faster and within the metric budget"

    compact_onnx(fp32)  # the same lossless compaction as the INT8 file, so their sizes compare weights
    sizes["fp32"] = onnx_size_bytes(fp32)
    if report["prune"] and report["prune"].get("rounds_done"):  # pruned vs original eager torch, in turn
        latency["torch_original"], latency["torch"] = paired_median_ms(
            [torch_caller(original, example), torch_caller(model, example)]
        )
    chosen_path = int8_path if chosen == "ort_int8" else fp32
    metric["after"] = _headline(task, chosen_metrics)
    metric["drop"] = relative_drop(before, metric["after"], better)
    sizes["chosen"] = onnx_size_bytes(chosen_path)
    report.update(
        {
            "size_bytes": sizes,
            "latency_ms": {k: _round(v, 4) for k, v in latency.items()},
            "speedup": _speedups(latency),
            "metric": metric,
            "metrics_after": chosen_metrics,
            "kept_fp32_nodes": kept,
            "chosen": chosen,
            "int8": int8_report,
            "params": {"before": count_params(original), "after": count_params(model)},
            "example_input_shapes": [list(t.shape) for t in example],
            "options": asdict(options),
        }
    )
    if report["prune"] and report["prune"]["rounds_done"]:
        report["pruned_structure"] = structure(model)
    return CompressResult(model, fp32, int8_path, chosen_path, report)


def _int8_candidates(
    task: Any,
    model: nn.Module,
    cfg: Any,
    data: tuple[Any, Any],
    fp32: Path,
    workdir: Path,
    options: CompressOptions,
    fp32_metric: float,
) -> list[dict[str, Any]]:
    """Static mixed-precision INT8 always; static INT8 of the Conv nodes only and of every node with
    stored weights (every other op fp32) when that differs from full static; dynamic MatMul/Gemm INT8
    too when the graph has dense ops. Which one wins is left to the caller's timing and metric."""
    train_data, eval_data = data
    example = task.example_input(cfg)
    batches = [tuple(b) for b in task.calibration_batches(train_data, cfg)]
    prepared = prepare(fp32, workdir / "prepared.onnx")

    def score(path: Path) -> float:
        wrapper = OrtModule.like(path, model, example)
        return _headline(task, task.evaluate(wrapper, eval_data, cfg))

    def search(path: Path, **restrict: Any) -> MixedPrecisionResult:
        """The sensitivity search (common/compress/sensitivity.py) with this model's calibration and metric."""
        return mixed_precision(
            prepared, path, batches, score, fp32_metric, higher_is_better=task.higher_is_better,
            max_drop=options.max_drop, workdir=workdir, method=options.calibration, **restrict,
        )  # fmt: skip

    log(f"compress: static int8 ({options.calibration} calibration, per-channel QDQ)")
    result = search(workdir / "static_int8.onnx")
    candidates = [
        {
            "kind": "static",
            "path": strip_debug_info(result.path),
            "metric": result.metric,
            "drop": result.drop,
            "kept_fp32_nodes": result.kept_fp32_nodes,
            "sensitivity": {k: _round(v, 8) for k, v in result.sensitivity.items()},
            "tried": result.tried,
        }
    ]
    if result.full_path is not None:  # mixed precision kept some nodes fp32: the fully int8 model is a candidate too
        full = result.tried[0]
        candidates.append(
            {
                "kind": "static_full",
                "path": strip_debug_info(result.full_path),
                "metric": full["metric"],
                "drop": full["drop"],
                "kept_fp32_nodes": [],
            }
        )
    arithmetic, seen = set(candidate_nodes(prepared)), []
    for kind, op_types in (("static_conv", ("Conv", "ConvTranspose")), ("static_weighted", WEIGHTED_OPS)):
        nodes = nodes_with_weights(prepared, op_types)
        # skipped when empty, when the same as the previous set, or when it is the full static model again
        if not options.weighted_int8 or not nodes or nodes in seen or not (arithmetic - set(nodes)):
            continue
        seen.append(nodes)
        log(f"compress: static int8 of the {'/'.join(op_types)} nodes with weights only (the rest fp32)")
        part = search(workdir / f"{kind}_int8.onnx", nodes=nodes, sensitivity=result.sensitivity)
        if part.full_path is not None:
            part.full_path.unlink(missing_ok=True)
        candidates.append(
            {
                "kind": kind,
                "path": strip_debug_info(part.path),
                "metric": part.metric,
                "drop": part.drop,
                "kept_fp32_nodes": part.kept_fp32_nodes,
                "tried": part.tried,
            }
        )
    if options.dynamic_int8 and _has_dense_ops(prepared):
        log("compress: dynamic int8 for MatMul/Gemm")
        dyn = strip_debug_info(quantize_dynamic_int8(prepared, workdir / "dynamic_int8.onnx"))
        value = score(dyn)
        drop = relative_drop(fp32_metric, value, task.higher_is_better)
        candidates.append({"kind": "dynamic", "path": dyn, "metric": value, "drop": drop, "kept_fp32_nodes": []})
    return candidates


def _speedups(latency: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: str, b: str) -> float | None:
        return _round(latency[a] / latency[b], 3) if latency.get(a) and latency.get(b) else None

    return {
        "ort_fp32_vs_torch": ratio("torch", "ort_fp32"),
        "ort_int8_vs_ort_fp32": ratio("ort_fp32", "ort_int8"),
        "torch_vs_original": ratio("torch_original", "torch"),
    }
