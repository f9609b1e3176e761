"""Structural channel pruning (Torch-Pruning / DepGraph) and unstructured magnitude pruning.

Structural pruning really removes channels, so the model gets smaller and faster everywhere (torch,
ONNX Runtime, INT8). It runs iteratively (a few percent of channels per round) with importance
from first-order Taylor, |weight x grad|, where grad is the mean gradient of the Task's own loss seen
during the preceding fine-tuning pass through `Task.fit`; fine-tuning between rounds lets the model
recover before the next cut. Layers whose outputs are the model's outputs are never cut (found by
walking the autograd graph back from the outputs), so the output shapes do not change.

Unstructured magnitude pruning zeroes the smallest weights; it is reported as sparsity because dense
kernels run no faster on zeros.

A pruned model no longer matches its config's shapes; `structure()` records the pruned widths
(saved in metadata.json) and `resize_to_structure()` rebuilds a fresh model to them before loading.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from common.export import output_leaves
from common.progress import log

# Module attributes that hold a layer's width, restored when a pruned model is loaded.
_WIDTH_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features")
_WIDTH_ATTRS += ("num_channels", "num_groups", "normalized_shape", "embed_dim", "hidden_size")


def _param_behind(fn: Any, hops: int = 3) -> torch.Tensor | None:
    """The parameter a grad_fn chain leads to when it is a plain reshaping of one (e.g. `weight.t()`)."""
    for _ in range(hops):
        if type(fn).__name__ == "AccumulateGrad":
            return fn.variable
        children = [child for child, _ in fn.next_functions if child is not None]
        if len(children) != 1:
            return None
        fn = children[0]
    return fn.variable if type(fn).__name__ == "AccumulateGrad" else None


def output_layers(model: nn.Module, example: Sequence[torch.Tensor]) -> list[nn.Module]:
    """Modules whose weights directly produce the model's outputs, in eval and in train mode.

    Walking back from each output, the first op fed by a conv/linear weight (a parameter of rank > 1)
    fixes that output's channels: its module must keep its output width. Norm layers (rank-1
    parameters) are walked through, since their width follows the layer before them. Train mode is
    probed too (on a copy, so running statistics stay untouched): models often return extra outputs
    in training, such as a reconstruction, whose width the Task's loss depends on.
    """
    names = {}
    for mode in (False, True):
        probe = copy.deepcopy(model).train(mode)
        by_id = {id(m): n for n, m in probe.named_modules()}
        names.update({by_id[id(m)]: None for m in _output_layers_of(probe, example)})
    modules = dict(model.named_modules())
    return [modules[n] for n in names]


def _output_layers_of(model: nn.Module, example: Sequence[torch.Tensor]) -> list[nn.Module]:
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    with torch.enable_grad():
        outputs = output_leaves(model(*example))
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        children = [child for child, _ in fn.next_functions if child is not None]
        params = [_param_behind(child) for child in children]
        weighted = [
            owners[id(p)]
            for p in params
            if p is not None
            and id(p) in owners
            and getattr(owners[id(p)], "weight", None) is not None
            and owners[id(p)].weight.dim() > 1
        ]
        if weighted:  # a conv / linear: it sets the output's channels; stop walking this branch
            for module in weighted:
                found[id(module)] = module
            continue
        stack.extend(child for child, param in zip(children, params) if param is None)
    return list(found.values())


class _GradientMeter:
    """Averages each parameter's gradient over the backward passes of a `Task.fit` call."""

    def __init__(self, model: nn.Module) -> None:
        self.sums: dict[nn.Parameter, torch.Tensor] = {}
        self.counts: dict[nn.Parameter, int] = {}
        self.handles = [p.register_hook(self._hook(p)) for p in model.parameters() if p.requires_grad]

    def _hook(self, param: nn.Parameter) -> Callable[[torch.Tensor], None]:
        def record(grad: torch.Tensor) -> None:
            self.sums[param] = self.sums.get(param, 0) + grad.detach()
            self.counts[param] = self.counts.get(param, 0) + 1

        return record

    def apply(self, model: nn.Module) -> None:
        """Leave the mean gradient in `.grad` (zeros where none was seen), as Taylor importance reads it."""
        for handle in self.handles:
            handle.remove()
        for p in model.parameters():
            if p in self.sums:
                p.grad = self.sums[p] / self.counts[p]
            else:
                p.grad = torch.zeros_like(p)


def fit_measuring_gradients(task: Any, model: nn.Module, data: Any, cfg: Any, epochs: int, **fit_kwargs: Any) -> dict:
    """One `Task.fit` call that also leaves the mean gradient of the Task's loss in each `.grad`."""
    meter = _GradientMeter(model)
    try:
        metrics = task.fit(model, data, cfg, epochs=epochs, **fit_kwargs)
    finally:
        meter.apply(model)
    return metrics


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def prune_channels(
    task: Any,
    model: nn.Module,
    train_data: Any,
    cfg: Any,
    example: Sequence[torch.Tensor],
    *,
    fraction: float,
    step: float = 0.1,
    finetune_epochs: int = 1,
    final_epochs: int = 1,
    extra_loss: Any = None,
) -> dict[str, Any]:
    """Remove `fraction` of the channels of every prunable layer, `step` per round, in place.

    Before each cut, a fine-tuning pass (`Task.fit`, with `extra_loss` e.g. distillation) measures the
    gradients that rank channels; after the last cut, `final_epochs` more of fine-tuning.
    """
    import torch_pruning as tp

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"pruning fraction must be in (0, 1), got {fraction}")
    rounds = max(1, math.ceil(fraction / step - 1e-9))
    params_before = count_params(model)
    example = tuple(example)
    shapes = _output_shapes(model, example)
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.GroupTaylorImportance(),
            pruning_ratio=fraction,
            iterative_steps=rounds,
            ignored_layers=output_layers(model, example),
        )
    except Exception as exc:  # noqa: BLE001 - a graph torch-pruning cannot trace is a fact to report
        raise PruningUnsupported(f"torch-pruning cannot trace this model ({_one_line(exc)})") from None
    history: list[dict[str, Any]] = []
    stopped = None
    snapshot = None
    for r in range(rounds):
        try:
            fit = fit_measuring_gradients(task, model, train_data, cfg, finetune_epochs, extra_loss=extra_loss)
        except Exception as exc:
            if snapshot is None:
                raise  # the Task's own fit fails on the unpruned model: not a pruning problem
            model.__dict__.update(snapshot.__dict__)
            history.pop()
            stopped = f"round {r}: the Task cannot train the pruned model ({_one_line(exc)}); kept round {r - 1}"
            log(f"prune: stopped at {stopped}")
            break
        snapshot = copy.deepcopy(model)
        try:
            pruner.step()
            problem = None if _output_shapes(model, example) == shapes else "the output shapes changed"
        except Exception as exc:  # noqa: BLE001 - roll back below, whatever broke
            problem = _one_line(exc)
        model.zero_grad(set_to_none=True)
        if problem:  # a cut the dependency graph got wrong: undo it and keep the last model that ran
            model.__dict__.update(snapshot.__dict__)
            stopped = f"round {r + 1}: the pruned model no longer runs ({problem}); kept round {r}"
            log(f"prune: stopped at {stopped}")
            break
        history.append({"round": r + 1, "params": count_params(model), "loss": float(fit.get("loss", float("nan")))})
        log(f"prune: round {r + 1}/{rounds}, {history[-1]['params']:,} parameters")
    if final_epochs and history and not stopped:
        try:
            task.fit(model, train_data, cfg, epochs=final_epochs, extra_loss=extra_loss)
        except Exception as exc:
            model.__dict__.update(snapshot.__dict__)
            history.pop()
            stopped = f"final fine-tuning: the Task cannot train the pruned model ({_one_line(exc)})"
            log(f"prune: stopped at {stopped}")
    model.eval()
    report = {
        "fraction": fraction,
        "rounds": rounds,
        "rounds_done": len(history),
        "params_before": params_before,
        "params_after": count_params(model),
        "history": history,
    }
    if stopped:
        report["stopped"] = stopped
    return report


class PruningUnsupported(ValueError):
    """torch-pruning cannot build the dependency graph of this model."""


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _output_shapes(model: nn.Module, example: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    """Output shapes in eval mode and in train mode (on a copy, so running statistics stay untouched)."""
    shapes = []
    with torch.no_grad():
        for probe in (model.eval(), copy.deepcopy(model).train()):
            shapes += [tuple(o.shape) for o in output_leaves(probe(*example))]
    model.eval()
    return shapes


def structure(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The width attributes of every module (JSON-ready): what a pruned model's shapes depend on."""
    out = {}
    for name, module in model.named_modules():
        attrs = {}
        for attr in _WIDTH_ATTRS:
            value = getattr(module, attr, None)
            if isinstance(value, (int, tuple, list)) and not isinstance(value, bool):
                attrs[attr] = list(value) if isinstance(value, tuple) else value
        if attrs:
            out[name] = attrs
    return out


def resize_to_structure(model: nn.Module, widths: dict[str, dict[str, Any]], state: dict[str, torch.Tensor]) -> None:
    """Reshape a freshly built model so a pruned `state` dict loads into it (weights come from `state`)."""
    modules = dict(model.named_modules())
    for name, attrs in widths.items():
        module = modules.get(name)
        if module is None:
            continue
        for attr, value in attrs.items():
            current = getattr(module, attr, None)
            setattr(module, attr, tuple(value) if isinstance(current, tuple) else value)
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            continue
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            if owner._parameters[leaf].shape != tensor.shape:
                owner._parameters[leaf] = nn.Parameter(torch.empty_like(tensor))
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            if owner._buffers[leaf].shape != tensor.shape:
                owner._buffers[leaf] = torch.empty_like(tensor)


def magnitude_prune(model: nn.Module, sparsity: float) -> dict[str, float]:
    """Zero the `sparsity` fraction of smallest-magnitude conv/linear weights (global threshold), in place."""
    from torch.nn.utils import prune

    targets = [
        (m, "weight") for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight.dim()
    ]
    if not targets:
        return {"sparsity": 0.0}
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for module, name in targets:
        prune.remove(module, name)  # bake the zeros into the weight; no mask left behind
    return {"sparsity": weight_sparsity(model)}


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero conv/linear weights."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    total = sum(w.numel() for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0
