"""Known-fraud history: per payer, payee and pair, what the labels of earlier transactions say.

Why: every production fraud system keeps lists of known-compromised cards and merchants; a card
with a confirmed fraud last week is far more likely to carry another. fedsite's other features
never read a label (features.py, aggregates.py), so they cannot know this. With `label_history`
the tree head also reads, for the payer, the payee and the (payer, payee) pair of each row: how
many of its earlier transactions are labelled, how many of them were fraud, a smoothed fraud rate
and the time since its last known fraud (-1: none known).

Why a frozen table and a delay: at scoring time the only labels a site has are those it trained on
(`label_history.npz` in the model directory: the training rows' payer, payee, time and label;
`update` adds its newly labelled rows). A scored file's own `is_fraud` column is never read. The
scored rows run for weeks after the last training label, so a training row must not see the labels
of the rows just before it either: in training, row i sees only the labels of rows earlier than
`t_i - delay_i`, with `delay_i` drawn uniformly in [0, `label_delay_days`] (seeded), the gap a row
of the scored period has between it and the end of training, at every length up to that horizon.

Privacy: the table is per-account site data. It stays in the site's model directory; federation
trains without it (federation/ switches the option off with a logged note: only model updates
cross the wire).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TABLE_FILE = "label_history.npz"
ROLES = ("payer", "payee", "pair")
_ROLE_NAMES = ("log_labelled", "log_frauds", "fraud_rate", "log_since_fraud_s")
NAMES = tuple(f"{role}_known_{name}" for role in ROLES for name in _ROLE_NAMES)
# the smoothed rate: (frauds + 5 x the table's rate) / (labelled + 5); the table's rate is one constant
# for every row of a fit and of its scoring (the training labels' mean), not a per-row signal
PRIOR_WEIGHT = 5.0
# "no known fraud" as a number below every log1p(seconds), not NaN: a column that is NaN on every
# row of a small fit (no fraud known yet) breaks scikit-learn's binning
NO_FRAUD = -1.0
_TIME_BITS = 34  # keys: account id << 34 | whole seconds after the table's origin (544 years)


def _as_text(values: np.ndarray) -> np.ndarray:
    """Account names as a numpy unicode array (the reader's object arrays of interned strings)."""
    values = np.asarray(values)
    return values if values.dtype.kind == "U" else values.astype(str)


def _lookup(names: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each key's position in the sorted unique `names`, -1 where it is not there.

    A vectorised binary search over the names instead of a Python dict: one C call for a file's
    200,000 rows (a dict lookup per row per role was half of `score`'s time with the history on).
    Text on both sides is cast to one width first: numpy would otherwise cut a longer key to the
    names' width, and "card12345" could match "card1234".
    """
    if len(names) == 0 or len(keys) == 0:
        return np.full(len(keys), -1, np.int64)
    if names.dtype.kind == "U":
        width = max(names.dtype.itemsize, keys.dtype.itemsize) // 4
        names, keys = names.astype(f"U{width}", copy=False), keys.astype(f"U{width}", copy=False)
    at = np.minimum(np.searchsorted(names, keys), len(names) - 1)
    return np.where(names[at] == keys, at, -1).astype(np.int64)


class LabelTable:
    """The labelled rows a model knows, indexed per role for "how many labelled before time c" queries.

    Stored as integers: the sorted unique payer and payee names once, and per row their positions,
    its time and its label (`label_history.npz`). A (payer, payee) pair is the integer
    payer * n_payees + payee, so no string is ever joined. The per-role indexes are integer sorts,
    rebuilt in a fraction of a second at load (a 787k-row table: 0.2 s, where indexing the names
    as strings took 2.4 s). A query is a few binary searches per row, the same for one row (the
    HTTP service) as for a file (`score`): the table never changes while scoring.
    """

    def __init__(
        self,
        ts: np.ndarray,
        src_names: np.ndarray,
        src_id: np.ndarray,
        dst_names: np.ndarray,
        dst_id: np.ndarray,
        label: np.ndarray,
    ) -> None:
        self.ts = np.asarray(ts, np.float64)
        self.src_names, self.dst_names = _as_text(src_names), _as_text(dst_names)
        self.src_id, self.dst_id = np.asarray(src_id, np.int64), np.asarray(dst_id, np.int64)
        self.label = np.asarray(label, np.int8)
        self.origin = float(np.floor(self.ts.min())) - 1.0 if len(self.ts) else 0.0
        self.rate = float(self.label.mean()) if len(self.label) else 0.0
        self.pair_names, self.pair_id = np.unique(self._pair(self.src_id, self.dst_id), return_inverse=True)
        self._roles = [self._index(ids) for ids in (self.src_id, self.dst_id, self.pair_id)]

    @classmethod
    def of(cls, ts: np.ndarray, src: np.ndarray, dst: np.ndarray, label: np.ndarray) -> LabelTable:
        """The table of these labelled rows (account names as read)."""
        src_names, src_id = np.unique(_as_text(src), return_inverse=True)
        dst_names, dst_id = np.unique(_as_text(dst), return_inverse=True)
        return cls(ts, src_names, src_id, dst_names, dst_id, label)

    @property
    def src(self) -> np.ndarray:
        return self.src_names[self.src_id]

    @property
    def dst(self) -> np.ndarray:
        return self.dst_names[self.dst_id]

    def _pair(self, src_id: np.ndarray, dst_id: np.ndarray) -> np.ndarray:
        return src_id * max(len(self.dst_names), 1) + dst_id

    def _seconds(self, ts: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(np.asarray(ts, np.float64) - self.origin), 0, (1 << _TIME_BITS) - 1).astype(np.int64)

    def _index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(sorted keys, cumulative frauds, last fraud's row at or before each, its time)."""
        key = (ids.astype(np.int64) << _TIME_BITS) | self._seconds(self.ts)
        order = np.argsort(key, kind="stable")
        key, fraud = key[order], self.label[order].astype(np.int64)
        last = np.maximum.accumulate(np.where(fraud > 0, np.arange(len(key)), -1)) if len(key) else np.zeros(0, int)
        return key, np.cumsum(fraud), last, self.ts[order]

    def account_ids(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's payer, payee and pair as the table numbers them (-1: not in the table)."""
        src_id, dst_id = _lookup(self.src_names, _as_text(src)), _lookup(self.dst_names, _as_text(dst))
        pair = np.full(len(src_id), -1, np.int64)
        both = (src_id >= 0) & (dst_id >= 0)
        pair[both] = _lookup(self.pair_names, self._pair(src_id[both], dst_id[both]))
        return src_id, dst_id, pair

    def query(self, ts: np.ndarray, cutoff: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """(n, len(NAMES)) float32: each row's roles as the labels of rows before `cutoff` say
        (times in seconds; the time since the last known fraud is counted from the row's `ts`)."""
        return self.query_ids(ts, cutoff, self.account_ids(src, dst))

    def query_ids(
        self, ts: np.ndarray, cutoff: np.ndarray, ids: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """`query` with the rows' accounts already numbered (`account_ids`)."""
        n = len(cutoff)
        out = np.empty((n, len(NAMES)), np.float32)
        cut = self._seconds(cutoff)
        for r, acc in enumerate(ids):
            key, cum, last, t_sorted = self._roles[r]
            known = acc >= 0
            base = np.where(known, acc, 0) << _TIME_BITS
            start = np.searchsorted(key, base, side="left")
            end = np.where(known, np.searchsorted(key, base | cut, side="left"), start)  # rows before the cutoff
            before = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0) if len(cum) else np.zeros(n, np.int64)
            frauds = np.where(end > start, cum[np.maximum(end - 1, 0)] - before, 0) if len(cum) else before
            labelled = end - start
            prev = last[np.maximum(end - 1, 0)] if len(last) else np.full(n, -1)
            has = (end > start) & (prev >= start)
            since = np.where(has, np.asarray(ts, np.float64) - t_sorted[np.maximum(prev, 0)], np.nan)
            c = 4 * r
            out[:, c] = np.log1p(labelled)
            out[:, c + 1] = np.log1p(frauds)
            out[:, c + 2] = (frauds + PRIOR_WEIGHT * self.rate) / (labelled + PRIOR_WEIGHT)
            out[:, c + 3] = np.where(has, np.log1p(np.clip(since, 0, None)), NO_FRAUD)
        return out

    def scoring(self, ts: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Features of rows being scored: every label of the table (all earlier than the rows in use)."""
        return self.query(ts, ts, src, dst)

    def extended(self, ts: np.ndarray, src: np.ndarray, dst: np.ndarray, label: np.ndarray) -> LabelTable:
        """This table with newly labelled rows added (`update`)."""
        return LabelTable.of(np.r_[self.ts, ts], np.r_[self.src, _as_text(src)],
                             np.r_[self.dst, _as_text(dst)], np.r_[self.label, label])  # fmt: skip

    def to_bytes(self) -> bytes:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, ts=self.ts, label=self.label, src_names=self.src_names,
                            src_id=self.src_id.astype(np.int32), dst_names=self.dst_names,
                            dst_id=self.dst_id.astype(np.int32))  # fmt: skip
        return buffer.getvalue()

    @classmethod
    def load(cls, directory: str | Path) -> LabelTable:
        from common.errors import UserError

        path = Path(directory) / TABLE_FILE
        if not path.is_file():
            raise UserError(f"{directory}: label_history is on but {TABLE_FILE} is missing; retrain the model")
        with np.load(path, allow_pickle=False) as data:
            if "src_names" not in data:  # saved before the names were numbered: one string per row
                return cls.of(data["ts"], data["src"], data["dst"], data["label"])
            return cls(data["ts"], data["src_names"], data["src_id"], data["dst_names"], data["dst_id"], data["label"])


def training_features(
    ts: np.ndarray, src: np.ndarray, dst: np.ndarray, label: np.ndarray, delay_days: float, seed: int
) -> np.ndarray:
    """(n, len(NAMES)) for training rows: row i sees the labels of rows before t_i - delay_i.

    `delay_i` ~ U[0, delay_days] (seeded): the gap between a scored row and the last training label
    runs from 0 (the day after training) to the length of the scored period.
    """
    return _own_rows(LabelTable.of(ts, src, dst, label), ts, delay_days, seed)


def _cutoffs(ts: np.ndarray, delay_days: float, seed: int) -> np.ndarray:
    """t_i - delay_i, delay_i ~ U[0, delay_days] drawn with `seed`."""
    return np.asarray(ts, np.float64) - np.random.default_rng(seed).random(len(ts)) * delay_days * 86_400.0


def _own_rows(table: LabelTable, ts: np.ndarray, delay_days: float, seed: int) -> np.ndarray:
    """`training_features` of the rows the table was built from (their accounts already numbered)."""
    return table.query_ids(ts, _cutoffs(ts, delay_days, seed), (table.src_id, table.dst_id, table.pair_id))


def delayed_features(
    table: LabelTable, ts: np.ndarray, src: np.ndarray, dst: np.ndarray, delay_days: float, seed: int
) -> np.ndarray:
    """Rows whose labels are in `table` as training sees them: each before its own random delay."""
    return table.query(ts, _cutoffs(ts, delay_days, seed), src, dst)


def append_for_training(data, txns, fit: np.ndarray, delay_days: float, seed: int):
    """(`data` with the known-fraud history appended to its trees' matrix, the table of the `fit` rows).

    `txns`: the rows of `data` (same order) with their accounts and labels. The `fit` rows (the
    rows a model is fitted on) get `training_features` over their own labels; the others (a holdout
    period after them) are scored from the table of the `fit` rows, as `score` would score them.
    """
    import dataclasses

    table = LabelTable.of(txns.ts[fit], txns.src[fit], txns.dst[fit], txns.label[fit])
    history = np.empty((len(data), len(NAMES)), np.float32)
    history[fit] = _own_rows(table, txns.ts[fit], delay_days, seed)
    rest = ~fit
    if rest.any():
        history[rest] = table.scoring(txns.ts[rest], txns.src[rest], txns.dst[rest])
    return dataclasses.replace(data, tree=np.concatenate([data.tree, history], 1)), table
