"""A site's transactions in memory: read, validated, time-ordered and featurised (what fit consumes).

`load_split` featurises the *whole* file causally and then splits by time, so the test period's
features use the training period's history exactly as live scoring would (train = first
`train_fraction` of the time span; val and test = the rest: nothing is tuned on val).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from data_adapters.transactions import Rejection, Transactions, read_transactions, time_order
from verticals.finance.config import FinanceConfig
from verticals.finance.features import AccountState, FeatureBatch, featurise, raw_features


@dataclass
class FinanceData:
    """Featurised transactions in time order (what fit/evaluate/baselines consume)."""

    features: FeatureBatch
    label: np.ndarray
    typology: np.ndarray
    txn_id: np.ndarray
    ts: np.ndarray
    raw: np.ndarray
    rejects: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray) -> FinanceData:
        return FinanceData(
            self.features.take(index),
            self.label[index],
            self.typology[index],
            self.txn_id[index],
            self.ts[index],
            self.raw[index],
        )

    def tensors(self, index: slice | np.ndarray = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features
        return torch.from_numpy(f.seq[index]), torch.from_numpy(f.nbr[index]), torch.from_numpy(f.txn[index])


def featurise_all(txns: Transactions, cfg: FinanceConfig, state: AccountState | None = None) -> FeatureBatch:
    """Features of time-ordered `txns` in chunks of `cfg.chunk_rows` (same result as one by one)."""
    state = state or AccountState(cfg.history)
    parts = []
    for i in range(0, len(txns), cfg.chunk_rows):
        s = slice(i, i + cfg.chunk_rows)
        parts.append(featurise(state, txns.ts[s], txns.src[s], txns.dst[s], txns.amount[s], txns.channel[s]))
    return FeatureBatch.concat(parts, cfg.history)


def load_dataset(path: str | Path, cfg: FinanceConfig, *, require_label: bool = True) -> FinanceData:
    """Read, validate and featurise a transactions CSV; rows come back in time order."""
    txns, rejects = read_transactions(path, require_label=require_label)
    txns = txns.take(time_order(txns))
    data = FinanceData(
        featurise_all(txns, cfg),
        txns.label.astype(np.int64),
        np.where(txns.typology == "", "none", txns.typology),
        txns.txn_id,
        txns.ts,
        raw_features(txns.ts, txns.amount, txns.channel),
    )
    data.rejects = rejects
    return data


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


def load_split(cfg: FinanceConfig, source: str | Path, split: str) -> FinanceData:
    """A site's `split` of `source` (a CSV, or a directory holding transactions.csv)."""
    return split_by_time(load_dataset(csv_path(source), cfg), split, cfg.train_fraction)
