"""Structural channel pruning (Torch-Pruning / DepGraph) and unstructured magnitude pruning.

Structural pruning really removes channels, so the model gets smaller and faster everywhere (torch,
ONNX Runtime, INT8). It runs iteratively (a few percent of channels per round) with importance
from first-order Taylor, |weight x grad|, where grad is the mean gradient of the Task's own loss seen
during the preceding fine-tuning pass through `Task.fit`; fine-tuning between rounds lets the model
recover before the next cut. Layers whose outputs are the model's outputs are never cut (found by
walking the autograd graph back from the outputs), so the output shapes do not change.

Three things Torch-Pruning's dependency graph gets wrong on our models, fixed here rather than in
each vertical:
- a `torch.cat` whose input widths it cannot infer (U-Net skips fed by attention blocks: the 3D
  detector failed with `int + NoneType`): the widths are recorded from the traced forward pass;
- the spatial gate of scSE/CBAM (one channel, broadcast-multiplied onto x) would be coupled to x's
  channels: it gets its own pruner (its input channels follow x, its single output is never cut);
- output layers that forward does not return (a reconstruction head only the training loss sees):
  besides the forward outputs, the layers nearest the Task's loss are found by walking back from the
  loss tensor of the first `backward()` in `Task.fit`, and a Task may name more layers to leave
  alone with its `prune_ignored_layers(model) -> [module or name]` hook (common.task.Task).

Unstructured magnitude pruning zeroes the smallest weights; it is reported as sparsity because dense
kernels run no faster on zeros.

A pruned model no longer matches its config's shapes; `structure()` records the pruned widths
(saved in metadata.json) and `resize_to_structure()` rebuilds a fresh model to them before loading.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from common.export import output_leaves
from common.progress import log
from common.task import FitContext

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
    return _walk_to_weighted([o.grad_fn for o in outputs], owners)


def _walk_to_weighted(roots: Sequence[Any], owners: dict[int, nn.Module]) -> list[nn.Module]:
    """From autograd nodes, walk back to the first op fed by a conv/linear weight on every path."""
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()
    stack = [fn for fn in roots if fn is not None]
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
        if weighted:  # a conv / linear: it sets this path's channels; stop walking this branch
            for module in weighted:
                found[id(module)] = module
            continue
        stack.extend(child for child, param in zip(children, params) if param is None)
    return list(found.values())


@contextlib.contextmanager
def loss_layers(model: nn.Module, found: list[nn.Module]):
    """While active, the first `loss.backward()` appends to `found` the layers nearest that loss.

    These are the layers whose output widths the Task's loss depends on, including heads that the
    forward pass does not return (e.g. a reconstruction compared with the input).
    """
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    original = torch.Tensor.backward
    done = []

    def backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not done and self.grad_fn is not None:
            done.append(True)
            found.extend(_walk_to_weighted([self.grad_fn], owners))
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    try:
        yield found
    finally:
        torch.Tensor.backward = original


def declared_ignored_layers(task: Any, model: nn.Module) -> list[nn.Module]:
    """Layers the Task asks pruning to leave alone: `task.prune_ignored_layers(model)` (modules or names)."""
    modules = dict(model.named_modules())
    out = []
    for item in task.prune_ignored_layers(model):
        if isinstance(item, str):
            if item not in modules:
                raise ValueError(f"prune_ignored_layers names '{item}', which the model does not have")
            out.append(modules[item])
        else:
            out.append(item)
    return out


@contextlib.contextmanager
def _traceable(model: nn.Module):
    """While Torch-Pruning traces `model`: activations are not in place, and each channel-wise torch.cat
    records its input widths for Torch-Pruning's index mapping (which otherwise infers them and fails
    on some U-Net skips).

    In-place activations after InstanceNorm (whose output is a view) rewrite the autograd graph into
    CopySlices/AsStrided nodes, which hides the norm layer from the tracer: its channels then stay
    while the conv before it is cut (the 3D detector broke exactly so).
    """
    import torch_pruning.dependency.index_mapping as index_mapping

    inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for module in inplace:
        module.inplace = False

    widths: dict[Any, list[int]] = {}
    originals = {name: getattr(torch, name) for name in ("cat", "concat", "concatenate")}

    def recording(original: Callable) -> Callable:
        def cat(tensors: Sequence[torch.Tensor], dim: int = 0, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = original(tensors, dim, *args, **kwargs)
            if out.grad_fn is not None and out.dim() > 1 and dim % out.dim() == 1:
                widths[out.grad_fn] = [int(t.shape[1]) for t in tensors]
            return out

        return cat

    update = index_mapping.update_concat_index_mapping

    def update_with_widths(graph: Any, node: Any) -> None:
        if getattr(node.module, "concat_sizes", "absent") is None and node.grad_fn in widths:
            node.module.concat_sizes = list(widths[node.grad_fn])
        update(graph, node)

    for name, fn in originals.items():
        setattr(torch, name, recording(fn))
    index_mapping.update_concat_index_mapping = update_with_widths
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        index_mapping.update_concat_index_mapping = update
        for module in inplace:
            module.inplace = True


def _gate_pruners() -> dict[type, Any]:
    """A pruner for the attention blocks' spatial gate: a leaf whose one output channel is broadcast."""
    import torch_pruning as tp

    from common.blocks import SpatialGate

    class SpatialGatePruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            return layer  # one broadcast channel: x's channels are cut, the gate's single map stays

        def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
            if not layer.pooled:  # scSE: a 1x1 conv over x's channels; CBAM pools them to 2 first
                tp.prune_conv_in_channels(layer.conv, idxs)
            return layer

        def get_out_channels(self, layer: nn.Module) -> None:
            return None

        def get_in_channels(self, layer: nn.Module) -> int | None:
            return None if layer.pooled else layer.conv.in_channels

    return {SpatialGate: SpatialGatePruner()}


class _LossReached(BaseException):
    """Raised by the patched `backward()` to stop `Task.fit` at its first loss (BaseException, so a
    Task's own `except Exception` cannot swallow it)."""


def loss_forward(task: Any, data: Any, cfg: Any, extra_loss: Any = None) -> Callable:
    """A Torch-Pruning `forward_fn` that runs the Task's own training step up to its first loss.

    Tracing the loss rather than `model(*example)` puts layers only the loss sees (a reconstruction
    head) in the dependency graph, so their input channels are cut with the layers that feed them.
    No optimizer step runs; the model's state (e.g. BatchNorm statistics) and gradients are put back.
    """

    def forward_fn(model: nn.Module, example: Any) -> torch.Tensor:
        original = torch.Tensor.backward
        state = copy.deepcopy(model.state_dict())
        grads = {p: p.grad for p in model.parameters()}  # the Taylor gradients: fit's zero_grad drops them
        training = model.training

        def stop(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
            raise _LossReached(self)

        torch.Tensor.backward = stop
        try:
            task.fit(model, data, cfg, epochs=1, context=FitContext(extra_loss=extra_loss))
        except _LossReached as reached:
            return reached.args[0]
        finally:
            torch.Tensor.backward = original
            model.load_state_dict(state)
            model.train(training)
            for param, grad in grads.items():
                param.grad = grad
        raise RuntimeError("Task.fit never called loss.backward()")

    return forward_fn


def _dependency_graph(model: nn.Module, example: Sequence[torch.Tensor], forward_fn: Callable | None = None) -> Any:
    import torch_pruning as tp

    with _traceable(model):
        return tp.DependencyGraph().build_dependency(
            model, example, forward_fn=forward_fn, customized_pruners=_gate_pruners()
        )


def breaking_groups(
    model: nn.Module, example: Sequence[torch.Tensor], ignored: Sequence[nn.Module], forward_fn: Callable | None = None
) -> list[str]:
    """Layers whose channel group Torch-Pruning gets wrong: cutting half its channels (every other one and
    the last), on a copy of the model, breaks the forward pass (train or eval mode) or changes an output's shape.

    The dependency graph is a trace; data-dependent indexing, flattening reshapes and gathers over
    features (the fraud model's ego-graphs) can fool it. Probing each group alone finds those groups,
    and leaving them out lets the rest of the model be pruned instead of rolling everything back.
    """
    import torch_pruning as tp

    shapes = _output_shapes(model, example)
    skip = {n for n, m in model.named_modules() if any(m is i for i in ignored)}
    graph = _dependency_graph(copy.deepcopy(model), example, forward_fn)
    names = {id(m): n for n, m in graph.model.named_modules()}
    roots = []
    for group in graph.get_all_groups(root_module_types=(tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)):
        root = names.get(id(group[0].dep.target.module))
        if root is not None and root not in skip:
            roots.append(root)
    broken = []
    for root in roots:
        probe = copy.deepcopy(model)
        try:
            graph = _dependency_graph(probe, example, forward_fn)
            layer = dict(probe.named_modules())[root]
            pruner = graph.get_pruner_of_module(layer)
            width = pruner.get_out_channels(layer)
            if width < 3:
                continue
            cut = sorted({*range(0, width, 2), width - 1} - {width - 2})
            graph.get_pruning_group(layer, pruner.prune_out_channels, cut).prune()
            ok = _output_shapes(probe, example) == shapes
        except Exception:  # noqa: BLE001 - any failure means this group's cut is not safe
            ok = False
        if not ok:
            broken.append(root)
    return broken


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

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"pruning fraction must be in (0, 1), got {fraction}")
    rounds = max(1, math.ceil(fraction / step - 1e-9))
    params_before = count_params(model)
    example = tuple(example)
    shapes = _output_shapes(model, example)
    untouched = copy.deepcopy(model)
    keep: list[str] = []
    broken: list[str] = []
    pruner = None
    history: list[dict[str, Any]] = []
    stopped = None
    snapshot = None
    for r in range(rounds):
        near_loss: list[nn.Module] = []
        capture = loss_layers(model, near_loss) if pruner is None else contextlib.nullcontext()
        try:
            with capture:
                fit = fit_measuring_gradients(
                    task, model, train_data, cfg, finetune_epochs, context=FitContext(extra_loss=extra_loss)
                )
        except Exception as exc:
            if snapshot is None:
                raise  # the Task's own fit fails on the unpruned model: not a pruning problem
            model.__dict__.update(snapshot.__dict__)
            history.pop()
            stopped = f"round {r}: the Task cannot train the pruned model ({_one_line(exc)}); kept round {r - 1}"
            log(f"prune: stopped at {stopped}")
            break
        if pruner is None:  # built after the first fit: the loss it saw names the heads to keep whole
            found = [*output_layers(model, example), *near_loss, *declared_ignored_layers(task, model)]
            keep = [n for n, m in model.named_modules() if any(m is f for f in found)]
            # the Task's own loss: a distillation term would only add the teacher's graph to the trace
            trace = loss_forward(task, train_data, cfg)
            try:  # trace the Task's loss; a Task whose fit cannot be traced so falls back to forward
                _dependency_graph(copy.deepcopy(model), example, trace)
            except Exception as exc:  # noqa: BLE001
                log(f"prune: tracing the Task's loss failed ({_one_line(exc)}); tracing forward only")
                trace = None
            broken += _probe(model, example, keep, trace)
            try:
                pruner = _meta_pruner(model, example, [*keep, *broken], trace, fraction, rounds)
            except Exception as exc:  # noqa: BLE001 - a graph torch-pruning cannot trace is a fact to report
                model.__dict__.update(untouched.__dict__)
                raise PruningUnsupported(f"torch-pruning cannot trace this model ({_one_line(exc)})") from None
        snapshot = copy.deepcopy(model)
        grads = {n: p.grad for n, p in model.named_parameters()}
        problem = _cut(pruner, model, example, shapes)
        if problem:  # a group the probe on the full-width model missed: find it at these widths, retry once
            _restore(model, snapshot, grads)
            more = [n for n in _probe(model, example, [*keep, *broken], trace) if n not in broken]
            if more:
                broken += more
                left = rounds - r  # the remaining cuts, as a ratio of today's widths
                ratio = 1.0 - (1.0 - fraction) / (1.0 - fraction * r / rounds)
                try:
                    pruner = _meta_pruner(model, example, [*keep, *broken], trace, ratio, left)
                    snapshot = copy.deepcopy(model)
                    problem = _cut(pruner, model, example, shapes)
                except Exception as exc:  # noqa: BLE001
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
            task.fit(model, train_data, cfg, epochs=final_epochs, context=FitContext(extra_loss=extra_loss))
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
        "ignored_layers": sorted({*keep, *broken}),
        "unsafe_groups": broken,
    }
    if stopped:
        report["stopped"] = stopped
    return report


def _probe(model: nn.Module, example: Sequence[torch.Tensor], keep: Sequence[str], trace: Callable | None) -> list[str]:
    modules = dict(model.named_modules())
    try:
        broken = breaking_groups(model, example, [modules[n] for n in keep], trace)
    except Exception as exc:  # noqa: BLE001 - then the rollback after a bad cut is the safety net
        log(f"prune: probing channel groups failed ({_one_line(exc)})")
        return []
    if broken:
        log(f"prune: leaving {len(broken)} group(s) the dependency graph gets wrong: {', '.join(broken)}")
    return broken


def _meta_pruner(
    model: nn.Module,
    example: Sequence[torch.Tensor],
    ignored: Sequence[str],
    trace: Callable | None,
    ratio: float,
    steps: int,
) -> Any:
    import torch_pruning as tp

    modules = dict(model.named_modules())
    with _traceable(model):
        return tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.GroupTaylorImportance(),
            pruning_ratio=ratio,
            iterative_steps=steps,
            ignored_layers=[modules[n] for n in ignored],
            customized_pruners=_gate_pruners(),
            forward_fn=trace,
        )


def _cut(pruner: Any, model: nn.Module, example: Sequence[torch.Tensor], shapes: list) -> str | None:
    """One pruning step; what went wrong, or None when the model still runs with the same output shapes."""
    try:
        pruner.step()
        return None if _output_shapes(model, example) == shapes else "the output shapes changed"
    except Exception as exc:  # noqa: BLE001 - the caller rolls back, whatever broke
        return _one_line(exc)


def _restore(model: nn.Module, snapshot: nn.Module, grads: dict[str, torch.Tensor | None]) -> None:
    """Put `snapshot` back into `model`, with the gradients that rank channels (deepcopy drops them)."""
    model.__dict__.update(copy.deepcopy(snapshot).__dict__)
    for name, param in model.named_parameters():
        param.grad = grads.get(name)


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
