"""The finance Task: fraud scoring wired into the common Task protocol (common/task.py).

Data for a site is a transactions CSV (or a directory holding `transactions.csv`), split by time
(data.load_split).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.errors import UserError
from common.task import FitContext, Task
from verticals.finance import evaluate as metrics
from verticals.finance import train as training
from verticals.finance.config import PRESETS, RECIPES, FinanceConfig
from verticals.finance.data import FinanceData, load_split
from verticals.finance.features import F_NBR, F_SEQ, F_TXN
from verticals.finance.infer import predict
from verticals.finance.model import FraudNet

SCALES = {"tiny": (150, 10), "small": (400, 20), "full": (3000, 30)}
_LABEL_NOTE_LOGGED = False  # the label_history note of `FinanceTask.load_data`: once per process


class FinanceTask(Task):
    name = "finance"
    config_cls = FinanceConfig
    headline_metric = "auprc"
    higher_is_better = True
    presets = PRESETS
    recipes = RECIPES
    agrees_on_data = True  # the banks agree on their shared extra columns before round 1

    def build_model(self, cfg: FinanceConfig) -> nn.Module:
        return model_from_config(cfg)

    def describe_data(self, cfg: FinanceConfig, source: Path) -> dict:
        from verticals.finance.data import csv_path
        from verticals.finance.federated_columns import describe_columns

        return describe_columns(cfg, csv_path(source))

    def agree_config(self, cfg: FinanceConfig, descriptions: dict[str, dict]) -> tuple[FinanceConfig, dict]:
        from verticals.finance.federated_columns import agree_columns

        return agree_columns(cfg, descriptions, cfg.federation_columns)

    def load_data(self, cfg: FinanceConfig, source: str | Path, split: str) -> FinanceData:
        global _LABEL_NOTE_LOGGED
        if cfg.label_history and not _LABEL_NOTE_LOGGED:  # the Task's users (federation, compression):
            from common.progress import log  # the network alone; said once per process, not per site or split

            _LABEL_NOTE_LOGGED = True
            log(
                "finance: label_history is off here: the known-fraud table is per-account site data that stays in "
                "a site's model directory; federation and compression work on the network alone, without it"
            )
        return load_split(cfg, source, split)

    def fit(self, model, data, cfg, *, epochs=None, context: FitContext | None = None) -> dict[str, float]:
        return training.fit(model, data, cfg, epochs=epochs, context=context)

    def evaluate(self, model: nn.Module, data: FinanceData, cfg: FinanceConfig) -> dict[str, float]:
        model.eval()
        return metrics.fraud_metrics(data.label, predict(model, data.features), data.typology)

    def example_input(self, cfg: FinanceConfig) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        k = event_dim(cfg)
        seq = torch.randn(2, 2, cfg.history, F_SEQ + k, generator=g)
        nbr = torch.randn(2, 2, cfg.history, F_NBR + k, generator=g)
        seq[..., -1] = 1.0
        nbr[..., -1] = 1.0
        nbr[..., 1] = (nbr[..., 1] > 0).float()
        return seq, nbr, torch.randn(2, F_TXN + txn_extra_dim(cfg), generator=g)

    def calibration_batches(self, data: FinanceData, cfg: FinanceConfig) -> list[tuple[torch.Tensor, ...]]:
        size = 64
        return [data.tensors(slice(i, i + size)) for i in range(0, min(len(data), 8 * size), size)]

    def synthesize(self, out: Path, *, seed: int, site: int = 0, n_sites: int = 1, scale: str = "small") -> Path:
        from data_adapters.synth.transactions import write

        if scale not in SCALES:
            raise UserError(f"unknown scale '{scale}' ({', '.join(SCALES)})")
        accounts, days = SCALES[scale]
        write(out, accounts, days, seed=seed, site=site, n_sites=n_sites)
        return Path(out)

    def federated_moments(self, model: nn.Module) -> list[tuple[str, str, str]]:
        """The input statistics FraudNet fits on its first data (set_stats), per input tensor."""
        return [*super().federated_moments(model), *((f"{n}_mean", f"{n}_std", "std") for n in ("seq", "nbr", "txn"))]


def model_from_config(cfg: FinanceConfig) -> FraudNet:
    """The FraudNet a config describes (model.py takes explicit arguments, not the config)."""
    return FraudNet(
        arch=cfg.arch,
        history=cfg.history,
        tcn_channels=cfg.tcn_channels,
        tcn_levels=cfg.tcn_levels,
        tcn_kernel=cfg.tcn_kernel,
        attention_kind=cfg.attention,
        gnn_hidden=cfg.gnn_hidden,
        head_hidden=cfg.head_hidden,
        dropout=cfg.dropout,
        extra_dim=txn_extra_dim(cfg),
        event_dim=event_dim(cfg),
    )


def txn_extra_dim(cfg: FinanceConfig) -> int:
    """Width of the extra columns' block appended to each transaction row (0 without extra columns)."""
    from verticals.finance.columns import ColumnSpec

    return ColumnSpec.from_json(cfg.feature_spec).nn_dim


def event_dim(cfg: FinanceConfig) -> int:
    """Width of the bank-column components each history event and neighbour edge carries (0: none)."""
    from verticals.finance.columns import ColumnSpec

    return ColumnSpec.from_json(cfg.feature_spec).event_dim
