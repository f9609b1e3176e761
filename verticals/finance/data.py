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
from verticals.finance.aggregates import NAMES as ANALYST_NAMES
from verticals.finance.aggregates import aggregates
from verticals.finance.columns import ColumnSpec, event_matrix, fit_events, infer_spec, nn_matrix, tree_matrix
from verticals.finance.config import FinanceConfig
from verticals.finance.features import F_TXN, AccountState, FeatureBatch, StoredFeatures, featurise, raw_features


@dataclass
class FinanceData:
    """Featurised transactions in time order (what fit/evaluate/baselines consume)."""

    features: FeatureBatch | StoredFeatures
    label: np.ndarray
    typology: np.ndarray
    txn_id: np.ndarray
    ts: np.ndarray
    raw: np.ndarray
    tree: np.ndarray | None = None  # what the trees read besides fedsite's state: the columns, then the aggregates
    rejects: list[Rejection] = field(default_factory=list)
    spec: ColumnSpec = field(default_factory=ColumnSpec)

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: np.ndarray | slice) -> FinanceData:
        """These rows; a slice gives views (no copy of a million rows' features)."""
        return FinanceData(
            self.features.take(index),
            self.label[index],
            self.typology[index],
            self.txn_id[index],
            self.ts[index],
            self.raw[index],
            None if self.tree is None else self.tree[index],
            spec=self.spec,
        )

    def where(self, mask: np.ndarray) -> FinanceData:
        """The rows where `mask` holds: views when they are one run of rows (a period of time-ordered data)."""
        index = np.flatnonzero(mask)
        if len(index) and index[-1] - index[0] + 1 == len(index):
            return self.take(slice(int(index[0]), int(index[-1]) + 1))
        return self.take(index)

    def tensors(self, index: slice | np.ndarray = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features.rows(index)
        return torch.from_numpy(f.seq), torch.from_numpy(f.nbr), torch.from_numpy(f.txn)


def featurise_all(
    txns: Transactions,
    cfg: FinanceConfig,
    state: AccountState | None = None,
    extra: np.ndarray | None = None,
    events: np.ndarray | None = None,
    txn_out: np.ndarray | None = None,
) -> FeatureBatch | StoredFeatures:
    """Features of time-ordered `txns` in chunks of `cfg.chunk_rows` (same result as one by one).

    `extra` (n, k): the extra columns encoded for the network, appended to each transaction's row.
    `events` (n, e): the same columns as each event of a history carries them (columns.event_matrix).
    Without a `state` the result is StoredFeatures over a store sized for the whole file (about
    1 KB a row instead of 6 KB gathered: what lets a bank's month fit in memory); with one, a
    gathered FeatureBatch (the caller's state may compact its store). `txn_out` (n, F_TXN + k):
    where to write the rows when `extra` is already its last k columns (dataset_from: no copy).
    """
    from common.progress import track

    lazy = state is None
    event_dim = 0 if events is None else events.shape[1]
    state = state or AccountState(cfg.history, store_rows=2 * len(txns) + 2, event_dim=event_dim)
    n, k = len(txns), 0 if extra is None else extra.shape[1]
    if lazy:  # written in place chunk by chunk: no list of parts, no concatenated copies at the end
        txn = txn_out
        if txn is None:
            txn = np.empty((n, F_TXN + k), np.float32)
            if k:
                txn[:, F_TXN:] = extra
        eid, age = np.empty((n, 2, cfg.history), np.int32), np.empty((n, 2, cfg.history), np.float32)
    parts = []
    starts = range(0, n, cfg.chunk_rows)
    for i in track(starts, f"finance: featurising {n} transactions", total=len(starts)):
        s = slice(i, i + cfg.chunk_rows)
        ev = None if events is None else events[s]
        part = featurise(
            state, txns.ts[s], txns.src[s], txns.dst[s], txns.amount[s], txns.channel[s], ev, gather=not lazy
        )
        if lazy:
            txn[s, :F_TXN], eid[s], age[s] = part.txn, part.eid, part.age
        else:
            parts.append(part)
    if lazy:
        return StoredFeatures(state.store_seq[: state.store_used], state.store_nbr[: state.store_used], eid, age, txn)
    if not parts:
        batch = FeatureBatch.concat([], cfg.history, state.event_dim)
        batch.txn = np.zeros((0, batch.txn.shape[1] + k), np.float32)
        return batch
    txn = np.concatenate([p.txn for p in parts])
    if k:
        txn = np.concatenate([txn, extra], 1)
    return FeatureBatch(np.concatenate([p.seq for p in parts]), np.concatenate([p.nbr for p in parts]), txn)


def column_spec(cfg: FinanceConfig) -> ColumnSpec:
    """The extra columns a model was trained with (empty before training infers them)."""
    return ColumnSpec.from_json(cfg.feature_spec)


def read_for(
    cfg: FinanceConfig, path: str | Path, *, require_label: bool = False, trained_only: bool = False
) -> tuple[Transactions, list]:
    """read_transactions with the model's column mapping (cfg.format, cfg.columns); checks trained columns.

    `trained_only`: convert only the extra columns the model reads (scoring; the others stay
    listed in `extra_columns`)."""
    from data_adapters.importers import mapping_for

    spec = column_spec(cfg)
    mapping = mapping_for(cfg.format, cfg.columns)
    extras = spec.used if trained_only else None
    txns, rejects = read_transactions(path, require_label=require_label, mapping=mapping, extras=extras)
    spec.require(txns.extra_columns, str(path))
    return txns, rejects


def load_dataset(
    path: str | Path,
    cfg: FinanceConfig,
    *,
    require_label: bool = True,
    spec: ColumnSpec | None = None,
    analyst: bool | None = None,
) -> FinanceData:
    """Read, validate and featurise a transactions CSV; rows come back in time order.

    The extra columns are encoded with `spec`, else with the config's `feature_spec`, else with a
    spec inferred from these rows (training); `data.spec` says which.
    """
    txns, rejects = read_for(cfg, path, require_label=require_label)
    return dataset_from(txns.take(time_order(txns)), cfg, spec, rejects, analyst=analyst)


def dataset_from(
    txns: Transactions,
    cfg: FinanceConfig,
    spec: ColumnSpec | None = None,
    rejects: list | None = None,
    *,
    consume: bool = False,
    analyst: bool | None = None,
) -> FinanceData:
    """FinanceData of time-ordered `txns` (see load_dataset for `spec`).

    `consume`: `txns.extras` is emptied once encoded (training a bank's month: the raw columns,
    identifiers included, would otherwise sit beside their encodings while featurising).
    `analyst`: append the analyst's aggregates (aggregates.py) to `tree`, after the columns, as
    the head reads them; default: when the config trains a head that reads them.
    """
    n = len(txns)
    fitting = spec is None and not cfg.feature_spec
    if spec is None and cfg.feature_spec:
        spec = column_spec(cfg)
    elif spec is None:
        spec = infer_spec(txns.extras, cfg.features_numeric, cfg.features_categorical, cfg.features_ignore)
    if consume:  # identifiers and free text are typed now: their strings (~0.4 GB at 1M rows) can go
        for name in [c for c in txns.extras if c not in spec.used]:
            del txns.extras[name]
    if analyst is None:
        analyst = cfg.head == "gbdt" and cfg.head_aggregates
    k = len(spec.tree_names)
    tree = np.empty((n, k + (len(ANALYST_NAMES) if analyst else 0)), np.float32)  # filled in place: no copies
    tree_matrix(spec, txns.extras, n, out=tree[:, :k])
    if analyst:
        aggregates(txns.ts, txns.src, txns.dst, txns.amount, out=tree[:, k:])
    rows = np.empty((n, F_TXN + spec.nn_dim), np.float32)  # the network's per-transaction rows
    nn = nn_matrix(spec, txns.extras, n, out=rows[:, F_TXN:])  # written in place: no second copy
    if fitting:
        spec = fit_events(spec, nn, cfg.event_columns, cfg.seed)
    if consume:
        txns.extras.clear()
    data = FinanceData(
        featurise_all(txns, cfg, extra=nn, events=event_matrix(spec, nn), txn_out=rows),
        txns.label.astype(np.int64),
        np.where(txns.typology == "", "none", txns.typology),
        txns.txn_id,
        txns.ts,
        raw_features(txns.ts, txns.amount, txns.channel),
        tree,
        spec=spec,
    )
    data.rejects = rejects or []
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
    # the Task's users (federation, compression) train the network alone: no head, no aggregates
    return split_by_time(load_dataset(csv_path(source), cfg, analyst=False), split, cfg.train_fraction)
