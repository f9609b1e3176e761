"""Latency by measurement, and ONNX Runtime models that a Task can evaluate like torch models.

Every compression decision here is made on measured numbers: the same input, warm-up runs first,
the median of repeats (robust to a neighbour's job stealing a core for a moment). `OrtModule` wraps
an InferenceSession as an `nn.Module`, so a Task's own `evaluate` scores the exported fp32 or int8
model exactly as it scores the torch one (verticals' `evaluate` only calls `model(...)`/`model.eval()`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from common.export import run_session, session


def median_ms(fn: Callable[[], Any], *, repeats: int = 20, warmup: int = 3, budget_s: float = 20.0) -> float:
    """Median wall time of `fn()` in milliseconds (fewer repeats when one call is slow)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if spent > budget_s and len(times) >= 3:
            break
    return statistics.median(times) * 1000.0


def paired_median_ms(
    fns: Sequence[Callable[[], Any]], *, repeats: int = 20, warmup: int = 3, budget_s: float = 40.0
) -> list[float]:
    """Median wall time of each of `fns` in ms, calling them in turn (a, b, c, a, b, c, ...).

    Why: a ratio of two latencies measured minutes apart on a shared machine measures the load as
    much as the models (the benchmark once reported the pruned fraud model 0.63x "slower": its 0.1 ms
    and the unpruned one's came from different runs; interleaved they were equal). Alternating calls
    let a neighbour's burst hit every model alike.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    spent = 0.0
    for _ in range(max(repeats, 1)):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            bucket.append(elapsed)
            spent += elapsed
        if spent > budget_s and len(times[0]) >= 3:
            break
    return [statistics.median(t) * 1000.0 for t in times]


def torch_caller(model: nn.Module, example: Sequence[torch.Tensor]) -> Callable[[], Any]:
    """One eval-mode, no-grad CPU forward of `model` at `example`, as a zero-argument call."""
    model = model.eval().cpu()
    example = tuple(t.cpu() for t in example)

    def call() -> None:
        with torch.inference_mode():
            model(*example)

    return call


def ort_caller(onnx_path: str | os.PathLike[str], example: Sequence[torch.Tensor]) -> Callable[[], Any]:
    """One ONNX Runtime run of the model at `onnx_path` at `example`, as a zero-argument call."""
    sess = session(onnx_path)
    arrays = [t.detach().cpu().numpy() for t in example]  # converted once, not inside the timed call
    return lambda: run_session(sess, arrays)


def torch_latency_ms(model: nn.Module, example: Sequence[torch.Tensor], **kwargs: Any) -> float:
    """Median eager-torch latency of `model` at `example` (eval mode, no grad, on CPU)."""
    return median_ms(torch_caller(model, example), **kwargs)


def ort_latency_ms(onnx_path: str | os.PathLike[str], example: Sequence[torch.Tensor], **kwargs: Any) -> float:
    """Median ONNX Runtime latency of the model at `onnx_path` at `example`."""
    return median_ms(ort_caller(onnx_path, example), **kwargs)


class OrtModule(nn.Module):
    """An ONNX Runtime session that looks like the torch model it was exported from.

    Outputs come back as torch tensors in the torch model's structure (tensor, tuple or dict), so
    a Task's `evaluate` needs no special case. The empty parameter keeps `next(model.parameters())`
    (a common way to find the device) working; `.to(device)` moves only where outputs are placed.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], output_spec: Any = None) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self._session = session(self.onnx_path)
        self._spec = output_spec
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    @classmethod
    def like(cls, onnx_path: str | os.PathLike[str], model: nn.Module, example: Sequence[torch.Tensor]) -> OrtModule:
        """Wrap `onnx_path`, copying the output structure of `model` at `example`."""
        model = model.eval()
        with torch.no_grad():
            outputs = model(*[t.cpu() for t in example])
        _, spec = pytree.tree_flatten(outputs)
        return cls(onnx_path, spec)

    def forward(self, *inputs: torch.Tensor) -> Any:
        device = inputs[0].device if inputs and isinstance(inputs[0], torch.Tensor) else torch.device("cpu")
        arrays = run_session(self._session, inputs)
        tensors = [torch.from_numpy(a).to(device) for a in arrays]
        if self._spec is None:
            return tensors[0] if len(tensors) == 1 else tuple(tensors)
        return pytree.tree_unflatten(tensors, self._spec)

    def train(self, mode: bool = True) -> OrtModule:  # an ORT model has no training mode
        return super().train(False)
