"""The Task protocol: the few verbs every vertical implements.

The CLI, federation, compression and the contract test (tests/test_contract.py) only ever talk to a
vertical through these verbs, so they treat CT detection, fraud scoring and defect inspection alike.
A vertical's `__init__.py` exposes `TASK`, an object satisfying this protocol.

Conventions shared by every Task:
- A model is a plain `nn.Module`. Everything it needs at inference time (normalisation statistics,
  thresholds) lives in its buffers, so federation can exchange `state_dict()` and nothing else.
- `model(*example_input(cfg))` runs; the first output (or the only one) holds the logits, which is
  what distillation and the ONNX parity check compare.
- `fit` adds `extra_loss(model, inputs, outputs)` terms (FedProx, distillation) to its own loss
  through `added_loss`, so federation and compression never need to know the vertical's loss.
- `fit` builds its optimizer with `fit_optimizer` and its learning-rate schedule with `fit_schedule`,
  so a federation site can carry the optimizer's moments from round to round and run one schedule
  over all rounds without knowing the vertical's optimizer or schedule.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


def added_loss(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    outputs: Any,
    proximal: Proximal | None = None,
    extra_loss: ExtraLoss | None = None,
) -> torch.Tensor | float:
    """The terms a Task's `fit` adds to its own loss at every step (0.0 when there are none)."""
    total: torch.Tensor | float = 0.0
    if proximal is not None and proximal.mu > 0:
        total = total + proximal_term(model, proximal)
    if extra_loss is not None:
        total = total + extra_loss(model, inputs, outputs)
    return total


class KeptOptimizer:
    """The optimizer moments a federation site carries from one round's `fit` to the next.

    `state` is an optimizer's `state_dict()["state"]` (None before the site's first fit); `last` is the
    optimizer the latest fit used, so the site can keep its moments for the next round.
    """

    def __init__(self, state: dict | None = None) -> None:
        self.state = state
        self.last: torch.optim.Optimizer | None = None


def fit_optimizer(model: nn.Module, make: Callable[[], torch.optim.Optimizer]) -> torch.optim.Optimizer:
    """The optimizer for one `fit`: `make()`, starting from the moments a federation site kept, if any.

    Every round a site's `fit` builds a fresh optimizer, and a fresh Adam's first steps are sign-like:
    about `lr` for every weight, whatever its gradient. At a few dozen local steps per round those
    steps undo much of what averaging kept. A site that keeps its optimizer (the default of `fedsite
    federate`; `--fresh-optimizer` turns it off) hangs a KeptOptimizer on the model
    (`model.kept_optimizer`); the new optimizer
    then starts from the last round's moments, with the fit's own learning-rate schedule. Without one
    (every non-federated fit) this is just `make()`.
    """
    optimizer = make()
    kept = getattr(model, "kept_optimizer", None)
    if not isinstance(kept, KeptOptimizer):
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
    model: nn.Module, make: Callable[[int], torch.optim.lr_scheduler.LRScheduler], steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of one `fit` of `steps` optimizer steps: `make(steps)`.

    At a federation site that runs one schedule over the whole federation (`model.fit_window`, a
    FitWindow; `fedsite federate --one-schedule`), it is `make(steps * rounds)` advanced to this
    round's first step, so round after round the sites take the learning rates a centralized run's
    single schedule takes. Without it every round's fit replays the whole warm-up and decay over its
    few local steps: a third of them at a near-zero rate, and never the long low-rate tail.
    """
    window = getattr(model, "fit_window", None)
    if not isinstance(window, FitWindow):
        return make(steps)
    schedule = make(steps * window.rounds)
    with warnings.catch_warnings():  # stepping a schedule before its optimizer: intended, it only sets rates
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(steps * window.index):
            schedule.step()
    return schedule


def first_output(outputs: Any) -> torch.Tensor:
    """The logits tensor of a model's output (the first element of a tuple/list/dict output)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    return outputs[0]


@runtime_checkable
class Task(Protocol):
    """What a vertical provides. See the module docstring for the shared conventions."""

    name: str
    config_cls: type
    headline_metric: str
    higher_is_better: bool

    def build_model(self, cfg: Any) -> nn.Module:
        """A fresh, randomly initialised model for `cfg` (seeded by the caller)."""

    def load_data(self, cfg: Any, source: str | Path, split: str) -> Any:
        """A site's local data from `source` (a directory or file); `split` in train/val/test."""

    def fit(
        self,
        model: nn.Module,
        data: Any,
        cfg: Any,
        *,
        epochs: int | None = None,
        proximal: Proximal | None = None,
        extra_loss: ExtraLoss | None = None,
    ) -> dict[str, float]:
        """Train `model` in place on `data`; return training metrics (at least `loss`)."""

    def evaluate(self, model: nn.Module, data: Any, cfg: Any) -> dict[str, float]:
        """The vertical's metrics on `data`, headline metric first."""

    def example_input(self, cfg: Any) -> tuple[torch.Tensor, ...]:
        """A representative input (batch of 1 or 2) for export, profiling and latency."""

    def calibration_batches(self, data: Any, cfg: Any) -> Iterable[tuple[torch.Tensor, ...]]:
        """A few real input batches for static INT8 calibration."""

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        """Write synthetic data for one site (heterogeneous across `site`); return the `source` path.

        `scale` is "tiny" (tests, seconds), "small" (demo) or "full" (benchmarks).
        """

    def tiny_config(self) -> Any:
        """A config small enough for the contract test and the demo to train in seconds."""
