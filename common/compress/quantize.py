"""INT8 with ONNX Runtime: static QDQ (per-channel, calibrated) and dynamic (Linear/MatMul parts).

torch.ao.quantization is deprecated; ONNX Runtime quantization is what a site deploys. Static INT8
needs activation ranges, which come from the Task's own `calibration_batches` (real site data), with
MinMax, Percentile or Entropy calibration. Weights are int8 per output channel, activations uint8
(ORT's recommended CPU pairing). Whether INT8 is worth it is never assumed here: see `choose.py`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from common.progress import log

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# Op types that carry the weights (and most of the FLOPs) and that static INT8 quantizes.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _as_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def calibration_reader(
    onnx_path: str | os.PathLike[str], batches: Iterable[Sequence[torch.Tensor]], uniform_shapes: bool = False
):
    """An ORT CalibrationDataReader feeding `batches` (tuples of input tensors) to the model's inputs."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    feeds = []
    for batch in batches:
        batch = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
        if len(batch) != len(names):
            raise ValueError(f"calibration batch has {len(batch)} inputs, the model takes {len(names)}")
        feeds.append({name: _as_numpy(value) for name, value in zip(names, batch)})
    if not feeds:
        raise ValueError("no calibration batches: static INT8 needs real inputs to measure activation ranges")
    if uniform_shapes:  # histogram calibrators stack batches: keep those shaped like the first one
        shapes = {k: v.shape for k, v in feeds[0].items()}
        feeds = [f for f in feeds if all(v.shape == shapes[k] for k, v in f.items())]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._iter = iter(feeds)

        def get_next(self):
            return next(self._iter, None)

        def rewind(self) -> None:
            self._iter = iter(feeds)

    return _Reader()


def prepare(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Shape inference and graph fusion (Conv+BN, ...) before quantization, as ORT recommends.

    Falls back to a plain copy when the pre-processor cannot handle a model: quantization still
    works, it just has fewer fusions.
    """
    from onnxruntime.quantization import quant_pre_process

    out = Path(out_path)
    # ORT's symbolic shape inference fails on some graphs (the defect model's patch slices at 256 px:
    # TypeError); ONNX's own shape inference is enough for the fusions, so that is tried next
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=skip_symbolic)
            return out
        except Exception as exc:  # noqa: BLE001 - the fallback is always valid
            error = exc
    log(f"quantize: pre-processing skipped ({type(error).__name__}); quantizing the exported graph as is")
    shutil.copyfile(fp32_path, out)
    return out


def weighted_nodes(onnx_path: str | os.PathLike[str]) -> list[str]:
    """Names of the nodes static INT8 quantizes for their weights (conv, matmul, gemm), in graph order."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in WEIGHTED_OPS]


def nodes_with_weights(onnx_path: str | os.PathLike[str], op_types: Sequence[str] = WEIGHTED_OPS) -> list[str]:
    """Nodes of `op_types` (Conv/ConvTranspose/Gemm/MatMul) that multiply by a stored weight.

    A stored weight is an initializer or a Constant output (after `prepare`'s constant folding that
    includes e.g. the defect model's patch-memory bank). A MatMul of two computed tensors is left out.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    stored = {t.name for t in model.graph.initializer}
    stored |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weight_inputs = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in op_types
        and node.op_type in weight_inputs
        and any(i < len(node.input) and node.input[i] in stored for i in weight_inputs[node.op_type])
    ]


def quantize_weighted_int8(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    batches: Iterable[Sequence[torch.Tensor]],
    op_types: Sequence[str] = WEIGHTED_OPS,
    **kwargs,
) -> Path:
    """Static INT8 (QDQ, per-channel) of the `op_types` nodes with stored weights; every other op stays fp32.

    Why a candidate of its own: full static INT8 also quantizes sigmoids, concats, muls and resizes;
    whether those QLinear ops and their layout changes pay on a given model is for timing to say.
    """
    nodes = nodes_with_weights(fp32_path, op_types)
    if not nodes:
        raise ValueError(f"{fp32_path}: no {'/'.join(op_types)} node with stored weights to quantize")
    return quantize_static_int8(fp32_path, out_path, batches, nodes_to_quantize=nodes, **kwargs)


def quantize_static_int8(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    batches: Iterable[Sequence[torch.Tensor]],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    nodes_to_quantize: Sequence[str] | None = None,
    cache_path: str | os.PathLike[str] | None = None,
    reduce_range: bool = False,
    quantize_bias: bool = False,
) -> Path:
    """Static INT8 in QDQ format, calibrated on `batches`; `nodes_to_exclude` stay fp32.

    Biases stay fp32 by default: an int32 bias in QDQ needs a per-channel fp32 scale and a
    DequantizeLinear beside it (8 bytes a channel instead of 4), and ORT's QLinearConv fusion
    quantizes an fp32 bias itself at load time (measured: same latency, files 1-2 % smaller).

    `nodes_to_quantize`, when given, restricts quantization to those nodes (sensitivity probes).

    `cache_path` keeps the measured activation ranges so repeated quantizations of the same model
    (the sensitivity search) calibrate only once.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ValueError(f"unknown calibration method '{method}' (one of {', '.join(CALIBRATION_METHODS)})")
    reader = None
    if cache_path is None or not Path(cache_path).exists():
        reader = calibration_reader(fp32_path, batches, uniform_shapes=method != "minmax")
    out = Path(out_path)
    quantize_static(
        str(fp32_path),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(nodes_to_exclude),
        nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
        calibrate_method=methods[method],
        calibration_cache_path=str(cache_path) if cache_path else None,
        extra_options={"QuantizeBias": quantize_bias},
    )
    return out


def quantize_dynamic_int8(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    op_types: Sequence[str] = ("MatMul", "Gemm"),
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Dynamic INT8 (weights int8 ahead of time, activations quantized per call) for Linear/MatMul ops.

    Restricted to MatMul/Gemm by default: on this platform dynamic INT8 slows convolutions 5x-9x,
    while it is the cheap win for the dense parts of a model (the fraud model's heads).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out_path)
    quantize_dynamic(
        str(fp32_path),
        str(out),
        op_types_to_quantize=list(op_types),
        per_channel=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(nodes_to_exclude),
    )
    return out


def quantization_summary(onnx_path: str | os.PathLike[str]) -> dict[str, int]:
    """How much of a model is really INT8: Q/DQ nodes, integer ops and int8 weight initializers."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = [node.op_type for node in model.graph.node]
    int8_types = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "integer_ops": sum(op in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger") for op in ops)
        + ops.count("DynamicQuantizeLinear"),
        "int8_initializers": sum(t.data_type in int8_types for t in model.graph.initializer),
    }
