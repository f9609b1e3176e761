"""Mixed precision by measured sensitivity: the nodes whose INT8 hurts most stay fp32.

The honest form of "keep a core group of parameters at full precision, the rest at low precision":
1. quantize one node at a time (everything else fp32) and measure how far the model's outputs
   move from the fp32 model on the calibration batches (relative squared error, summed over outputs);
2. rank nodes by that error;
3. exclude the top k most sensitive nodes from quantization (k = 1, 2, 4, ...) and score the Task's
   own metric until its drop is within the allowed budget.
Activation ranges are calibrated once and cached, so step 1 costs one graph rewrite per node.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.compress.quantize import quantize_static_int8
from common.export import run_session, session
from common.progress import log

# Ops whose quantization changes numbers (shape-only ops such as Reshape pass values through).
ARITHMETIC_OPS = (
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "Add",
    "Mul",
    "Sigmoid",
    "Softmax",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Concat",
    "Resize",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
)


def candidate_nodes(onnx_path: str | os.PathLike[str]) -> list[str]:
    """Named nodes of the (pre-processed) graph that INT8 may touch, in graph order."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in ARITHMETIC_OPS and node.name]


def _all_outputs(onnx_path: Path, batches: Sequence[Sequence[torch.Tensor]]) -> list[list[np.ndarray]]:
    """Every output of the model on every batch, grouped by output: [output][batch]."""
    sess = session(onnx_path)
    runs = [run_session(sess, batch) for batch in batches]
    return [[run[i].astype(np.float64) for run in runs] for i in range(len(runs[0]))]


def _first_outputs(onnx_path: Path, batches: Sequence[Sequence[torch.Tensor]]) -> list[np.ndarray]:
    """The model's first output on every batch (what tests compare quantized graphs by)."""
    return _all_outputs(onnx_path, batches)[0]


def relative_error(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Sum of squared differences over the sum of squares of the reference (0 = identical)."""
    num = sum(float(((r - o) ** 2).sum()) for r, o in zip(reference, other))
    den = sum(float((r**2).sum()) for r in reference) or 1.0
    return num / den


def output_error(reference: Sequence[Sequence[np.ndarray]], other: Sequence[Sequence[np.ndarray]]) -> float:
    """The relative errors of every output, summed (each output normalised by its own size).

    Why every output: a node may feed only a second output. The defect model's image score (sigmoid,
    average pool, max) does not touch its first output, the map; ranked on the map alone those nodes
    looked harmless, stayed int8, and their 1/255 steps reordered the image scores (image AUROC -6 %
    at the default config, still -4.4 % with 64 of its 93 nodes kept fp32).
    """
    return sum(relative_error(r, o) for r, o in zip(reference, other))


def node_sensitivity(
    fp32_path: str | os.PathLike[str],
    batches: Sequence[Sequence[torch.Tensor]],
    workdir: str | os.PathLike[str],
    *,
    method: str = "minmax",
    nodes: Sequence[str] | None = None,
) -> dict[str, float]:
    """Output error caused by quantizing each node alone, most sensitive first."""
    fp32_path, workdir = Path(fp32_path), Path(workdir)
    cache = workdir / "calibration.json"
    reference = _all_outputs(fp32_path, batches)
    nodes = list(nodes) if nodes is not None else candidate_nodes(fp32_path)
    scores: dict[str, float] = {}
    for i, node in enumerate(nodes):
        single = workdir / f"single_{i}.onnx"
        quantize_static_int8(fp32_path, single, batches, method=method, nodes_to_quantize=[node], cache_path=cache)
        scores[node] = output_error(reference, _all_outputs(single, batches))
        single.unlink(missing_ok=True)
    return dict(sorted(scores.items(), key=lambda kv: kv[1], reverse=True))


def relative_drop(before: float, after: float, higher_is_better: bool) -> float:
    """How much worse `after` is than `before`, as a fraction of |before| (negative = better)."""
    worse = (before - after) if higher_is_better else (after - before)
    return worse / max(abs(before), 1e-12)


@dataclass
class MixedPrecisionResult:
    """The INT8 model the search settled on and how it got there."""

    path: Path
    metric: float
    drop: float
    kept_fp32_nodes: list[str]
    within_budget: bool
    sensitivity: dict[str, float] = field(default_factory=dict)
    tried: list[dict[str, float]] = field(default_factory=list)
    full_path: Path | None = None  # the fully quantized model, kept when some nodes had to stay fp32


def mixed_precision(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    batches: Sequence[Sequence[torch.Tensor]],
    score: Callable[[Path], float],
    reference_metric: float,
    *,
    higher_is_better: bool,
    max_drop: float,
    workdir: str | os.PathLike[str],
    method: str = "minmax",
    nodes: Sequence[str] | None = None,
    sensitivity: dict[str, float] | None = None,
) -> MixedPrecisionResult:
    """Fully quantize; if the metric drops past `max_drop`, keep the most sensitive nodes fp32.

    `score(path)` returns the Task's headline metric of the ONNX model at `path`. The returned model
    is the first (smallest k) within budget, or the best one tried when none is. `nodes` restricts
    quantization to those nodes (all others fp32 throughout); `sensitivity`, when given, is a ranking
    measured before (e.g. by a search over every node) and is reused instead of measured again.
    """
    fp32_path, out_path, workdir = Path(fp32_path), Path(out_path), Path(workdir)
    cache = workdir / "calibration.json"
    only = list(nodes) if nodes is not None else None
    quantize_static_int8(fp32_path, out_path, batches, method=method, cache_path=cache, nodes_to_quantize=only)
    metric = score(out_path)
    drop = relative_drop(reference_metric, metric, higher_is_better)
    tried = [{"kept_fp32": 0, "metric": metric, "drop": drop}]
    log(f"int8: fully quantized, metric {metric:.4g} (drop {drop:+.2%}, budget {max_drop:.2%})")
    if drop <= max_drop:
        return MixedPrecisionResult(out_path, metric, drop, [], True, {}, tried)

    log("int8: over budget; measuring per-node sensitivity")
    full_path = workdir / f"{out_path.stem}_full.onnx"
    shutil.copyfile(out_path, full_path)
    if not sensitivity:
        sensitivity = node_sensitivity(fp32_path, batches, workdir, method=method, nodes=only)
    if only is not None:
        sensitivity = {k: v for k, v in sensitivity.items() if k in set(only)}
    ranked = list(sensitivity)
    best = (drop, metric, [])
    k = 1
    while k <= len(ranked):
        kept = ranked[:k]
        trial = workdir / f"{out_path.stem}_mixed_{k}.onnx"
        quantize_static_int8(
            fp32_path, trial, batches, method=method, nodes_to_exclude=kept, nodes_to_quantize=only, cache_path=cache
        )
        metric = score(trial)
        drop = relative_drop(reference_metric, metric, higher_is_better)
        tried.append({"kept_fp32": k, "metric": metric, "drop": drop})
        log(f"int8: {k} most sensitive node(s) kept fp32, metric {metric:.4g} (drop {drop:+.2%})")
        if drop < best[0]:
            best = (drop, metric, kept)
            os.replace(trial, out_path)
        else:
            trial.unlink(missing_ok=True)
        if drop <= max_drop:
            return MixedPrecisionResult(out_path, metric, drop, kept, True, sensitivity, tried, full_path)
        if kept == ranked:
            break
        k = min(k * 2, len(ranked))
    drop, metric, kept = best
    return MixedPrecisionResult(out_path, metric, drop, kept, False, sensitivity, tried, full_path)
