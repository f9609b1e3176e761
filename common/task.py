"""The Task protocol: the few verbs every vertical implements, on one base class.

The CLI, federation, compression and the contract test (tests/test_contract.py) only ever talk to a
vertical through these verbs, so they treat CT detection, fraud scoring and defect inspection alike.
A vertical's `__init__.py` exposes `TASK`, an instance of a `Task` subclass.

Conventions shared by every Task:
- A model is a plain `nn.Module`. Everything it needs at inference time (normalisation statistics,
  thresholds) lives in its buffers, so federation can exchange `state_dict()` and nothing else.
- `model(*example_input(cfg))` runs; the first output (or the only one) holds the logits, which is
  what distillation and the ONNX parity check compare.
- `len(data)` of a Task's data is its number of examples (FedAvg weights sites by it).
- Whatever a caller adds to a Task's own training comes in one `FitContext` passed to `fit`: a
  FedProx anchor, an extra loss term (distillation), the optimizer moments a federation site keeps
  from round to round, and where this fit sits in a federation's single learning-rate schedule.
  `fit` adds the loss terms through `added_loss`, builds its optimizer with `fit_optimizer` and its
  schedule with `fit_schedule`, so federation and compression never need to know the vertical's
  loss, optimizer or schedule.
- Optional hooks (`federated_moments`, `prune_ignored_layers`, `final_round_only`, `presets`) are
  declared on `Task` with their defaults; a vertical overrides the ones that apply to it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

# (model, inputs, outputs) -> scalar loss term added to the Task's own loss.
ExtraLoss = Callable[[nn.Module, Sequence[torch.Tensor], Any], torch.Tensor]


@dataclass(frozen=True)
class Proximal:
    """FedProx anchor: the global weights at the start of the round and the strength mu."""

    anchor: dict[str, torch.Tensor]
    mu: float


def proximal_term(model: nn.Module, proximal: Proximal) -> torch.Tensor:
    """(mu / 2) * ||w - w_global||^2 over the trainable parameters (Li et al., FedProx, 2020)."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, param in model.named_parameters():
        if param.requires_grad and name in proximal.anchor:
            total = total + (param - proximal.anchor[name].to(param.device)).pow(2).sum()
    return 0.5 * proximal.mu * total


def added_loss(model: nn.Module, inputs: Sequence[torch.Tensor], outputs: Any, context: FitContext | None) -> Any:
    """The terms a Task's `fit` adds to its own loss at every step (0.0 when there are none)."""
    total: torch.Tensor | float = 0.0
    if context is None:
        return total
    if context.proximal is not None and context.proximal.mu > 0:
        total = total + proximal_term(model, context.proximal)
    if context.extra_loss is not None:
        total = total + context.extra_loss(model, inputs, outputs)
    return total


class KeptOptimizer:
    """The optimizer moments a federation site carries from one round's `fit` to the next.

    `state` is an optimizer's `state_dict()["state"]` (None before the site's first fit); `last` is the
    optimizer the latest fit used, so the site can keep its moments for the next round.
    """

    def __init__(self, state: dict | None = None) -> None:
        self.state = state
        self.last: torch.optim.Optimizer | None = None


def fit_optimizer(context: FitContext | None, make: Callable[[], torch.optim.Optimizer]) -> torch.optim.Optimizer:
    """The optimizer for one `fit`: `make()`, starting from the moments a federation site kept, if any.

    Every round a site's `fit` builds a fresh optimizer, and a fresh Adam's first steps are sign-like:
    about `lr` for every weight, whatever its gradient. At a few dozen local steps per round those
    steps undo much of what averaging kept. A site that keeps its optimizer (the default of `fedsite
    federate`; `--fresh-optimizer` turns it off) passes a KeptOptimizer in the fit's context
    (`context.optimizer`); the new optimizer then starts from the last round's moments, with the
    fit's own learning-rate schedule. Without one (every non-federated fit) this is just `make()`.
    """
    optimizer = make()
    kept = context.optimizer if context is not None else None
    if kept is None:
        return optimizer
    if kept.state:
        state = optimizer.state_dict()
        state["state"] = kept.state
        optimizer.load_state_dict(state)
    kept.last = optimizer
    return optimizer


@dataclass(frozen=True)
class FitWindow:
    """Where one federated `fit` sits in the run: round `index` (0-based) of `rounds` equal rounds."""

    index: int
    rounds: int


def fit_schedule(
    context: FitContext | None, make: Callable[[int], torch.optim.lr_scheduler.LRScheduler], steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of one `fit` of `steps` optimizer steps: `make(steps)`.

    At a federation site that runs one schedule over the whole federation (`context.window`, a
    FitWindow; `fedsite federate --one-schedule`), it is `make(steps * rounds)` advanced to this
    round's first step, so round after round the sites take the learning rates a centralized run's
    single schedule takes. Without it every round's fit replays the whole warm-up and decay over its
    few local steps: a third of them at a near-zero rate, and never the long low-rate tail.
    """
    window = context.window if context is not None else None
    if window is None:
        return make(steps)
    schedule = make(steps * window.rounds)
    with warnings.catch_warnings():  # stepping a schedule before its optimizer: intended, it only sets rates
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps * window.index):
            schedule.step()
    return schedule


@dataclass(frozen=True)
class FitContext:
    """What a caller adds to one `fit` beyond the Task's own training (all optional).

    proximal: FedProx anchor and strength; extra_loss: a term added at every step (distillation);
    optimizer: the moments a federation site keeps between rounds (fit sets `optimizer.last`);
    window: this fit's place in a federation's single learning-rate schedule.
    """

    proximal: Proximal | None = None
    extra_loss: ExtraLoss | None = None
    optimizer: KeptOptimizer | None = None
    window: FitWindow | None = None


def first_output(outputs: Any) -> torch.Tensor:
    """The logits tensor of a model's output (the first element of a tuple/list/dict output)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    return outputs[0]


def batchnorm_moments(model: nn.Module) -> list[tuple[str, str, str]]:
    """(running_mean, running_var, "var") of every BatchNorm that tracks running statistics."""
    pairs = []
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            dot = f"{prefix}." if prefix else ""
            pairs.append((f"{dot}running_mean", f"{dot}running_var", "var"))
    return pairs


class Task:
    """What a vertical provides; every vertical's Task subclasses this. See the module docstring.

    The verbs without a body must be implemented; the hooks after them have working defaults.
    """

    name: str = ""
    config_cls: type = object
    headline_metric: str = ""
    higher_is_better: bool = True
    # the named configs every vertical offers: "tiny" (tests, seconds per fit), "small" (`--quick`),
    # "default" (the config class's defaults)
    presets: Mapping[str, Any] = MappingProxyType({})
    # named federated recipes (federation/recipes.py): preset, data scale, config changes and
    # FederationSettings knobs, what `fedsite federate --recipe NAME`, the demo and the benchmark use
    recipes: Mapping[str, Mapping[str, Any]] = MappingProxyType({})
    # boolean config keys of post-fit stages that a federation fits in its last round only (a later
    # round's training would make them stale): what `fedsite federate --final-round-only` names
    final_round_only: tuple[str, ...] = ()
    # True: before a federation's first round the hub asks every site to `describe_data` and agrees
    # on one config from the descriptions (`agree_config`): finance's extra columns
    agrees_on_data: bool = False

    def build_model(self, cfg: Any) -> nn.Module:
        """A fresh, randomly initialised model for `cfg` (seeded by the caller)."""
        raise NotImplementedError

    def load_data(self, cfg: Any, source: str | Path, split: str) -> Any:
        """A site's local data from `source` (a directory or file); `split` in train/val/test.

        `len(data)` is its number of examples."""
        raise NotImplementedError

    def fit(
        self, model: nn.Module, data: Any, cfg: Any, *, epochs: int | None = None, context: FitContext | None = None
    ) -> dict[str, float]:
        """Train `model` in place on `data`; return training metrics (at least `loss`)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data: Any, cfg: Any) -> dict[str, float]:
        """The vertical's metrics on `data`, headline metric first."""
        raise NotImplementedError

    def example_input(self, cfg: Any) -> tuple[torch.Tensor, ...]:
        """A representative input (batch of 1 or 2) for export, profiling and latency."""
        raise NotImplementedError

    def calibration_batches(self, data: Any, cfg: Any) -> Iterable[tuple[torch.Tensor, ...]]:
        """A few real input batches for static INT8 calibration."""
        raise NotImplementedError

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        """Write synthetic data for one site (heterogeneous across `site`); return the `source` path.

        `scale` is "tiny" (tests, seconds), "small" (`--quick`, the demo) or "full" (benchmarks).
        """
        raise NotImplementedError

    # ---- hooks with defaults ----

    def preset(self, name: str) -> Any:
        """The named config ("tiny", "small" or "default"); a one-line UserError for another name."""
        if name not in self.presets:
            from common.errors import UserError

            raise UserError(f"{self.name}: unknown preset '{name}' (known: {', '.join(self.presets)})")
        return self.presets[name]

    def tiny_config(self) -> Any:
        """A config small enough for the contract test to train in seconds."""
        return self.preset("tiny")

    def describe_data(self, cfg: Any, source: Path) -> dict[str, Any]:
        """At a site, before a federation's first round (only when `agrees_on_data`): what the other
        sites must know of this site's data to agree on one config, as JSON-safe values. It crosses
        the wire to the hub, so it holds names, types and counts, never a row. Default: nothing."""
        return {}

    def agree_config(self, cfg: Any, descriptions: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
        """At the hub, before the first round: the config every site will use, given each site's
        `describe_data` (site name -> description), and a report for the run directory. Default:
        `cfg` unchanged. Finance agrees on the extra columns the banks share (or refuses,
        verticals/finance/federated_columns.py)."""
        return cfg, {}

    def federated_moments(self, model: nn.Module) -> list[tuple[str, str, str]]:
        """(mean, spread, "var" | "std") state_dict entries holding statistics of a site's data.

        Federation pools them as the pooled data's statistics would be (federation/moments.py) and,
        under FedBN, keeps them at the site. Default: BatchNorm running statistics; a Task whose model
        carries fitted input statistics adds those.
        """
        return batchnorm_moments(model)

    def prune_ignored_layers(self, model: nn.Module) -> list[nn.Module | str]:
        """Layers (modules or names) structural pruning must leave whole; default: none."""
        return []
