"""The finance Task: fraud scoring wired into the common Task protocol (common/task.py).

Data for a site is a transactions CSV (or a directory holding `transactions.csv`); `load_data`
featurises the *whole* file causally and then splits by time, so the test period's features use
the training period's history exactly as live scoring would (train = first `train_fraction` of the
time span; val and test = the rest: nothing is tuned on val).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from verticals.finance import evaluate as metrics
from verticals.finance import train as training
from verticals.finance.config import FinanceConfig
from verticals.finance.features import F_NBR, F_SEQ, F_TXN
from verticals.finance.infer import FinanceData, load_dataset, predict
from verticals.finance.model import FraudNet, txn_extra_dim

SCALES = {"tiny": (150, 10), "small": (400, 20), "full": (3000, 30)}


def csv_path(source: str | Path) -> Path:
    """A CSV path from a file or a directory holding transactions.csv."""
    path = Path(source)
    return path / "transactions.csv" if path.is_dir() else path


def split_by_time(data: FinanceData, split: str, train_fraction: float) -> FinanceData:
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split '{split}' (train, val, test)")
    if len(data) == 0:
        return data
    lo, hi = float(data.ts.min()), float(data.ts.max())
    cut = lo + train_fraction * (hi - lo)
    mask = data.ts < cut if split == "train" else data.ts >= cut
    return data.take(np.flatnonzero(mask))


class FinanceTask:
    name = "finance"
    config_cls = FinanceConfig
    headline_metric = "auprc"
    higher_is_better = True

    def build_model(self, cfg: FinanceConfig) -> nn.Module:
        return FraudNet(cfg)

    def load_data(self, cfg: FinanceConfig, source: str | Path, split: str) -> FinanceData:
        return split_by_time(load_dataset(csv_path(source), cfg), split, cfg.train_fraction)

    def fit(self, model, data, cfg, *, epochs=None, proximal=None, extra_loss=None) -> dict[str, float]:
        return training.fit(model, data, cfg, epochs=epochs, proximal=proximal, extra_loss=extra_loss)

    def evaluate(self, model: nn.Module, data: FinanceData, cfg: FinanceConfig) -> dict[str, float]:
        model.eval()
        return metrics.fraud_metrics(data.label, predict(model, data.features), data.typology)

    def example_input(self, cfg: FinanceConfig) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(0)
        seq = torch.randn(2, 2, cfg.history, F_SEQ, generator=g)
        nbr = torch.randn(2, 2, cfg.history, F_NBR, generator=g)
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

    def tiny_config(self) -> FinanceConfig:
        return FinanceConfig(
            history=8, tcn_channels=8, tcn_levels=2, gnn_hidden=16, head_hidden=32, epochs=2, batch_size=128
        )
