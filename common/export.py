"""torch -> ONNX with a dynamic batch axis, ONNX Runtime sessions, and a parity check.

ONNX Runtime is the deployment path at every site (2x to 4.5x faster than eager torch for our 3D
CNNs on CPU, see docs/architecture.md), so every Task's model must export and agree with torch. The parity
check fails loudly: a silently wrong exported model is the worst kind of bug in a detector.

Models may take several inputs (the fraud model: sequences, features, a graph) and return tuples or
dicts (the detector: class and box maps); outputs are compared leaf by leaf in pytree order, which is
the order the exporter writes them in.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from common.atomic import atomic_path
from common.task import first_output


class ParityError(AssertionError):
    """ONNX Runtime and torch disagree beyond tolerance."""


def _input_names(n: int) -> list[str]:
    return [f"input_{i}" for i in range(n)]


def output_leaves(outputs: Any) -> list[torch.Tensor]:
    """Every tensor of a model's output (tensor, tuple, list or dict, nested), in export order."""
    return [leaf for leaf in pytree.tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]


def _batched_example(example: Sequence[torch.Tensor], batch_inputs: Sequence[bool]) -> tuple[torch.Tensor, ...]:
    """Examples with a batch of at least 2 on the dynamic inputs.

    torch.export specialises a dimension of size 1 to a constant, so a batch-1 example would give a
    model that only accepts batch 1; repeating the example to batch 2 keeps the axis symbolic.
    """
    out = []
    for tensor, batched in zip(example, batch_inputs):
        if batched and tensor.dim() > 0 and tensor.shape[0] == 1:
            tensor = torch.cat([tensor, tensor], dim=0)
        out.append(tensor)
    return tuple(out)


def export_onnx(
    model: nn.Module,
    example: Sequence[torch.Tensor],
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    batch_inputs: Sequence[bool] | None = None,
    opset: int = 18,
) -> Path:
    """Export `model` to `path` with its weights inline (one file), written atomically.

    Uses the dynamo exporter (torch's default). With `dynamic_batch`, axis 0 of every input is the
    shared symbolic "batch" axis, so one file serves a single request and a batch; `batch_inputs`
    (one bool per input) leaves inputs without a batch axis (e.g. a graph's edge index) static.
    When the dynamo exporter cannot trace a model, the TorchScript exporter is tried before giving up.
    """
    # the exporter warns about torchvision ops on every call; they are irrelevant to our models
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = model.eval().cpu()
    example = tuple(t.cpu() for t in example)
    names = _input_names(len(example))
    flags = list(batch_inputs) if batch_inputs is not None else [True] * len(example)
    if len(flags) != len(example):
        raise ValueError(f"batch_inputs has {len(flags)} flags for {len(example)} inputs")
    flags = [f and dynamic_batch for f in flags]
    example = _batched_example(example, flags)
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = tuple({0: batch} if f else None for f in flags)
    final = Path(path)
    with atomic_path(final, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                input_names=names,
                dynamic_shapes=dynamic_shapes if any(flags) else None,
                opset_version=opset,
                verbose=False,
            )
            program.save(str(tmp), external_data=False)
        except Exception as dynamo_error:  # fall back to the TorchScript exporter, then fail with the first cause
            axes = {name: {0: "batch"} for name, f in zip(names, flags) if f}
            try:
                torch.onnx.export(
                    model, example, str(tmp), dynamo=False, input_names=names, dynamic_axes=axes, opset_version=opset
                )
            except Exception:
                raise dynamo_error from None
    return final


def onnx_size_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of an ONNX model on disk including its external weight files (e.g. `model.onnx.data`)."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                locations.add(entry.value)
    for location in locations:
        total += (path.parent / location).stat().st_size
    return total


def providers() -> list[str]:
    """CUDA first when this onnxruntime build and machine have it, CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session(path: str | os.PathLike[str], threads: int | None = None):  # -> ort.InferenceSession
    """An ONNX Runtime session with full graph optimisation and `threads` intra-op threads.

    `threads` defaults to FEDSITE_THREADS (0 or unset: ONNX Runtime's choice, one per core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    from common.device import env_threads

    threads = threads or env_threads()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers())
    except Exception as exc:  # empty, cut or foreign file: name it (exit 2), not an internal error
        from common.errors import UserError

        if not Path(path).is_file():
            raise
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: unreadable ONNX model ({first})") from None


def run_session(sess, inputs: Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    """Run `sess` on positional inputs (tensors or arrays) and return every output."""
    metas = sess.get_inputs()
    if len(inputs) != len(metas):
        raise ValueError(f"the ONNX model takes {len(metas)} inputs, got {len(inputs)}")
    feeds = {}
    for meta, value in zip(metas, inputs):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        feeds[meta.name] = array
    return sess.run(None, feeds)


def parity(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    inputs: Sequence[torch.Tensor],
    atol: float = 1e-4,
    rtol: float = 0.0,
) -> float:
    """Max abs difference between torch and ORT on `inputs`, over every output.

    Raises ParityError where |torch - ort| > atol + rtol * |torch| (numpy's allclose rule). The
    default is a pure 1e-4 absolute bound; `rtol` allows for float32 rounding on large outputs
    (a logit of 500 has an ulp of 3e-5, so a few ulps of reordered summation exceed 1e-4).
    """
    model = model.eval().cpu()
    with torch.no_grad():
        expected_list = output_leaves(model(*[t.cpu() for t in inputs]))
    got = run_session(session(onnx_path), inputs)
    if len(got) != len(expected_list):
        raise ParityError(f"ONNX model has {len(got)} outputs, torch has {len(expected_list)}")
    worst, excess = 0.0, 0.0
    for i, (e, g) in enumerate(zip(expected_list, got)):
        e_np = e.detach().cpu().numpy()
        if e_np.shape != g.shape:
            raise ParityError(f"output {i}: shape {g.shape} in ONNX, {e_np.shape} in torch")
        if e_np.size:
            reference = e_np.astype(np.float64)
            diff = np.abs(reference - g.astype(np.float64))
            if not np.all(np.isfinite(diff)):
                raise ParityError(f"output {i}: non-finite difference between ONNX Runtime and torch")
            worst = max(worst, float(diff.max()))
            excess = max(excess, float((diff - atol - rtol * np.abs(reference)).max()))
    if excess > 0:
        rule = f"tolerance {atol:g}" + (f" + {rtol:g} x |torch|" if rtol else "")
        raise ParityError(f"ONNX Runtime differs from torch by {worst:.3g} ({rule})")
    return worst


__all__ = [
    "ParityError",
    "export_onnx",
    "first_output",
    "onnx_size_bytes",
    "output_leaves",
    "parity",
    "providers",
    "run_session",
    "session",
]
