"""Per-layer profile: parameters, FLOPs, activation memory and latency share.

FLOPs come from torch.utils.flop_counter (counts real aten ops, so attention blocks and 3D convs are
priced correctly); activation memory is the size of each leaf module's outputs at the example input;
latency share is each leaf's measured wall time over the sum, from forward pre/post hooks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly or have no children (the rows of the table)."""
    rows = []
    for name, module in model.named_modules():
        owns = any(True for _ in module.parameters(recurse=False))
        if owns or (not list(module.children()) and name):
            rows.append((name or type(model).__name__, module))
    return rows


def _nbytes(output: Any) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, (list, tuple)):
        return sum(_nbytes(o) for o in output)
    if isinstance(output, dict):
        return sum(_nbytes(o) for o in output.values())
    return 0


def _own_flops(name: str, key: str, rows: list[str], counted: dict[str, dict]) -> int:
    """FLOPs of a row without those of the rows inside it.

    FlopCounterMode charges an op to a module and to all its parents. A row with children of its own
    (a TCN's TemporalConv1d owns the conv weights and has a padding child) used to be shown as 0;
    its count minus its top-most descendant rows' counts is what it does itself.
    """
    total = sum(counted.get(key, {}).values())
    inner = [r for r in rows if r.startswith(name + ".")]
    top = [r for r in inner if not any(r.startswith(o + ".") for o in inner if o != r)]
    root = key[: len(key) - len(name)]
    return int(total - sum(sum(counted.get(root + r, {}).values()) for r in top))


def profile_model(model: nn.Module, example: Sequence[torch.Tensor], repeats: int = 3) -> dict[str, Any]:
    """Profile `model` at `example`: {"layers": [...], "total": {...}} (rows sum to the model)."""
    model = model.eval()
    leaves = _leaves(model)
    timing: dict[str, float] = {name: 0.0 for name, _ in leaves}
    activation: dict[str, int] = {name: 0 for name, _ in leaves}
    starts: dict[str, float] = {}
    handles = []
    for name, module in leaves:

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, out, name=name):
            timing[name] += time.perf_counter() - starts.pop(name, time.perf_counter())
            activation[name] = _nbytes(out)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(*example)  # warm-up
            for name in timing:
                timing[name] = 0.0
            start = time.perf_counter()
            for _ in range(repeats):
                model(*example)
            total_time = (time.perf_counter() - start) / repeats
    finally:
        for handle in handles:
            handle.remove()

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*example)
    flops_by_module = counter.get_flop_counts()
    root = type(model).__name__
    timed = sum(timing.values()) or 1.0
    layers = []
    rows = [name for name, _ in leaves]
    for name, module in leaves:
        key = root if name == root else f"{root}.{name}"
        own_params = sum(p.numel() for p in module.parameters(recurse=False))
        flops = _own_flops(name, key, rows, flops_by_module)
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "params": int(own_params),
                "flops": int(flops),
                # 0 from a layer without weights is "not counted", not "free": the counter prices matmuls
                # and convolutions only (elementwise, padding, dropout and scatter ops are not priced)
                "flops_counted": bool(flops or own_params),
                "activation_bytes": int(activation[name]),
                "latency_share": timing[name] / timed,
            }
        )
    total_flops = sum(flops_by_module.get(root, {}).values())
    return {
        "layers": layers,
        "total": {
            "params": int(sum(p.numel() for p in model.parameters())),
            "flops": int(total_flops),
            "activation_bytes": int(sum(activation.values())),
            "latency_ms": total_time * 1000.0,
        },
    }
