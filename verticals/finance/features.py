"""Strictly causal, incremental features: per-account state updated chunk by chunk.

Why one incremental builder for everything: training, batch scoring and the HTTP service must see
*identical* features for a transaction, and a transaction may only use transactions processed
before it (earlier timestamp, or equal timestamp and earlier in the stream). So the state of every
account (its last `history` events and running counters) lives in `AccountState`, and `featurise`
takes a chunk of transactions in processing order, computes their features from that state plus
the chunk's earlier rows (vectorised: no Python loop per transaction), then advances the state.
A chunk of one row (serving) and a chunk of 8,192 rows (batch) give the same numbers. Labels are
never read here, so no label can leak into a feature.

Each transaction has two events: the payer's (direction out) and the payee's (direction in).
Per event we keep
- `seq` row: what the TCN reads along an account's history (amount, direction, gaps, hour,
  roundness, just-under-threshold, new counterparty, channel, then the transaction's own bank
  columns compressed to `event_dim` numbers (columns.event_matrix), then the `valid` flag);
- an aggregate snapshot A (counts, flows, account age, 1 h / 24 h velocity, fan-in / fan-out among
  recent counterparties): the *node* state of the account at that moment;
- `edge` row: the edge's own features plus the counterparty's snapshot at that moment (then the
  age of the edge, the edge's bank columns as in `seq`, and `valid`). These are the neighbours
  the GNN passes messages from, so a neighbour's own neighbourhood (its fan-in, its flows)
  reaches the centre: two hops of the multigraph, each one causal.

`F_SEQ` / `F_NBR` are the widths without bank columns; with them the rows are `event_dim`
wider and `valid` stays the last column. The per-transaction `txn` row never carries them (the
transaction's columns are appended to it whole, see data.featurise_all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_adapters.transactions import AccountIndex

CHANNELS = ("card", "transfer", "mobile", "online", "cash")  # anything else -> "other"
N_CHANNELS = len(CHANNELS) + 1
THRESHOLD = 10_000.0  # reporting threshold that "just under" amounts dodge
GAP_CAP_S = 30 * 86_400.0
FEATURE_LIMIT = 1e4  # |feature| bound: every feature is a log, ratio or flag far below it on real data
SEQ_NAMES = (
    "log_amount",
    "direction_in",
    "amount_vs_account_mean",
    "log_gap_h",
    "hour_sin",
    "hour_cos",
    "round_amount",
    "just_under_threshold",
    "new_counterparty",
    "log_age_h",
    *(f"channel_{c}" for c in (*CHANNELS, "other")),
    "valid",
)
AGG_NAMES = (
    "log_n_out",
    "log_n_in",
    "log_sum_out",
    "log_sum_in",
    "log_age_h",
    "log_count_1h",
    "log_count_24h",
    "fan_in",
    "fan_out",
    "log_in_24h",
    "log_out_24h",
    "log_gap_h",
)
EDGE_NAMES = (
    "log_amount",
    "direction_in",
    "round_amount",
    "just_under_threshold",
    *(f"channel_{c}" for c in (*CHANNELS, "other")),
    *(f"counterparty_{n}" for n in AGG_NAMES),
)
NBR_NAMES = (*EDGE_NAMES, "log_age_of_edge_h", "valid")
TXN_NAMES = (
    *(f"payer_{n}" for n in SEQ_NAMES),
    *(f"payee_{n}" for n in SEQ_NAMES),
    *(f"payer_{n}" for n in AGG_NAMES),
    *(f"payee_{n}" for n in AGG_NAMES),
)
F_SEQ, F_AGG, F_EDGE, F_NBR, F_TXN = len(SEQ_NAMES), len(AGG_NAMES), len(EDGE_NAMES), len(NBR_NAMES), len(TXN_NAMES)


class _ChannelIds(dict):
    def __missing__(self, key: str) -> int:
        return len(CHANNELS)  # "other"


_CHANNEL_ID = _ChannelIds({c: i for i, c in enumerate(CHANNELS)})


@dataclass
class FeatureBatch:
    """Model inputs for B transactions: seq (B,2,H,F_SEQ), nbr (B,2,H,F_NBR), txn (B,F_TXN)."""

    seq: np.ndarray
    nbr: np.ndarray
    txn: np.ndarray

    def __len__(self) -> int:
        return len(self.txn)

    def take(self, index: np.ndarray) -> FeatureBatch:
        return FeatureBatch(self.seq[index], self.nbr[index], self.txn[index])

    def rows(self, index: slice | np.ndarray) -> FeatureBatch:
        """The model inputs of some rows (a view for a slice): what a training step or a predict batch reads."""
        return FeatureBatch(self.seq[index], self.nbr[index], self.txn[index])

    @staticmethod
    def concat(parts: list[FeatureBatch], history: int, event_dim: int = 0) -> FeatureBatch:
        if not parts:
            return FeatureBatch(
                np.zeros((0, 2, history, F_SEQ + event_dim), np.float32),
                np.zeros((0, 2, history, F_NBR + event_dim), np.float32),
                np.zeros((0, F_TXN), np.float32),
            )
        return FeatureBatch(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("seq", "nbr", "txn")))


@dataclass
class StoredFeatures:
    """A FeatureBatch of many rows kept as event-store ids: about 1 KB a row instead of 6 KB.

    Why: a window row (B, 2, H, F_SEQ + F_NBR) repeats each event up to 2H times (once in every
    later window of both its accounts); a bank's month of 1M transactions gathered in full is 6 GB.
    Here every event's row is stored once (`store_seq`, `store_nbr`, shared by all rows), a window
    is H store ids per side plus the age of each edge, and `rows(index)` gathers the exact arrays
    `featurise` would have returned, batch by batch. `seq` / `nbr` gather everything (small data).
    """

    store_seq: np.ndarray  # (S, F_SEQ)
    store_nbr: np.ndarray  # (S, F_NBR); the age column is per window, in `age`
    eid: np.ndarray  # (B, 2, H) int32 store ids, 0 = no event
    age: np.ndarray  # (B, 2, H) float32: log1p(age of each edge in hours), 0 where no event
    txn: np.ndarray

    def __len__(self) -> int:
        return len(self.txn)

    def take(self, index: np.ndarray | slice) -> StoredFeatures:
        return StoredFeatures(self.store_seq, self.store_nbr, self.eid[index], self.age[index], self.txn[index])

    def rows(self, index: slice | np.ndarray) -> FeatureBatch:
        eid = self.eid[index]
        nbr = self.store_nbr[eid]
        nbr[..., F_EDGE] = self.age[index]
        return FeatureBatch(self.store_seq[eid], nbr, self.txn[index])

    @property
    def seq(self) -> np.ndarray:
        return self.store_seq[self.eid]

    @property
    def nbr(self) -> np.ndarray:
        return self.rows(slice(None)).nbr


class AccountState:
    """Per-account memory: the last `history` events (right-aligned, newest last) and counters.

    The wide rows of an event (its TCN row and its edge row) are written once into an append-only
    event store; an account remembers only the store ids of its last `history` events (id 0 is an
    all-zero row: "no event"). A window is then one gather from the store straight into the model
    input, instead of copying every touched account's history through a combined buffer. The store
    is compacted when dead rows (events no account remembers) outnumber the live ones, so a service
    that runs for months stays bounded by accounts x history rows.
    """

    def __init__(self, history: int, store_rows: int = 4096, event_dim: int = 0) -> None:
        self.history = history
        self.event_dim = event_dim  # bank-column components each event row carries (columns.event_matrix)
        self.accounts = AccountIndex()
        self._cap = 0
        self._alloc(1024)
        self.store_seq = np.zeros((max(store_rows, 2), F_SEQ + event_dim), np.float32)
        self.store_nbr = np.zeros((max(store_rows, 2), F_NBR + event_dim), np.float32)
        self.store_used = 1  # row 0: the empty slot

    def _alloc(self, cap: int) -> None:
        h, old = self.history, self._cap
        fields = {
            "t": ((h,), np.float64, 0.0),
            "cp": ((h,), np.int64, -1),
            "dir": ((h,), np.int8, 0),
            "amt": ((h,), np.float64, 0.0),
            "valid": ((h,), bool, False),
            "eid": ((h,), np.int64, 0),  # event-store row of each remembered event (0: none)
            "count": ((4,), np.float64, 0.0),  # n_out, n_in, sum_out, sum_in
            "first_t": ((), np.float64, np.nan),
        }
        for name, (shape, dtype, fill) in fields.items():
            array = np.full((cap, *shape), fill, dtype=dtype)
            if old:
                array[:old] = getattr(self, name)
            setattr(self, name, array)
        self._cap = cap

    def ensure(self, n_accounts: int) -> None:
        if n_accounts > self._cap:
            self._alloc(max(n_accounts, 2 * self._cap))

    def append_events(self, seq: np.ndarray, nbr: np.ndarray) -> np.ndarray:
        """Store new events' rows; returns their store ids."""
        n = len(seq)
        if self.store_used + n > len(self.store_seq):
            self._compact(n)
        ids = np.arange(self.store_used, self.store_used + n)
        self.store_seq[ids], self.store_nbr[ids] = seq, nbr
        self.store_used += n
        return ids

    def reserve(self, incoming: int) -> None:
        """Room in the store for `incoming` more events without compacting it on the way (batch
        scoring of a whole file: one allocation instead of a compaction every few chunks)."""
        if self.store_used + incoming > len(self.store_seq):
            self._grow(self.store_used + incoming)

    def _grow(self, size: int) -> None:
        for name in ("store_seq", "store_nbr"):
            old = getattr(self, name)
            grown = np.zeros((size, old.shape[1]), np.float32)
            grown[: self.store_used] = old[: self.store_used]
            setattr(self, name, grown)

    def _compact(self, incoming: int) -> None:
        """Drop store rows no account remembers (or grow), keeping room for `incoming` more rows."""
        n_acc = len(self.accounts)
        live = np.unique(np.concatenate([[0], self.eid[:n_acc].ravel()]))
        if 2 * len(live) < self.store_used:
            self.eid[:n_acc] = np.searchsorted(live, self.eid[:n_acc])
            self.store_seq[: len(live)], self.store_nbr[: len(live)] = self.store_seq[live], self.store_nbr[live]
            self.store_used = len(live)
        need = self.store_used + incoming
        if need > len(self.store_seq):
            self._grow(max(need, 2 * len(self.store_seq)))


def channel_ids(channel: np.ndarray) -> np.ndarray:
    return np.fromiter(map(_CHANNEL_ID.__getitem__, channel), dtype=np.int64, count=len(channel))


def _amount_flags(amount: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hundreds = np.round(amount / 100.0)
    round_ = (np.abs(amount - hundreds * 100.0) < 0.005) & (amount >= 100)
    under = (amount >= 0.85 * THRESHOLD) & (amount < THRESHOLD)
    return round_.astype(np.float32), under.astype(np.float32)


def _group_cumsum(values: np.ndarray, first: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each group (rows sorted by group)."""
    total = np.cumsum(values)
    return total - (total[first] - values[first])[group]


def with_events(rows: np.ndarray, events: np.ndarray | None) -> np.ndarray:
    """`rows` (E, F) with (E, k) bank-column components inserted before the last (`valid`) column."""
    if events is None or not events.shape[1]:
        return rows
    return np.concatenate([rows[:, :-1], events.astype(np.float32), rows[:, -1:]], 1)


def featurise(
    state: AccountState,
    ts: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    amount: np.ndarray,
    channel: np.ndarray,
    events: np.ndarray | None = None,
    *,
    gather: bool = True,
) -> FeatureBatch | StoredFeatures:
    """Features of a chunk of transactions given in processing order; advances `state` past them.

    `events` (n, state.event_dim): each transaction's bank columns as columns.event_matrix encodes
    them; both of its events (payer's and payee's) carry them in `seq` and `nbr` rows.
    `gather=False` returns StoredFeatures whose store is `state`'s (valid while the store is neither
    compacted nor grown: data.featurise_all sizes it for the whole file).
    """
    n, h = len(ts), state.history
    if state.event_dim and (events is None or events.shape != (n, state.event_dim)):
        got = None if events is None else events.shape
        raise ValueError(f"featurise: the state carries {state.event_dim} event columns per row; got {got}")
    a_src, a_dst = state.accounts.lookup(src), state.accounts.lookup(dst)
    state.ensure(len(state.accounts))
    ch = channel_ids(channel)
    # events 2i (payer, out) and 2i+1 (payee, in), sorted by account then stream order
    acc = np.stack([a_src, a_dst], 1).ravel()
    cp_e = np.stack([a_dst, a_src], 1).ravel()
    dir_e = np.tile(np.array([0, 1], np.int8), n)
    t_e, amt_e, ch_e = np.repeat(ts, 2), np.repeat(amount, 2), np.repeat(ch, 2)
    order = np.argsort(acc, kind="stable")
    uniq, first, counts = np.unique(acc[order], return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(uniq)), counts)
    rank = np.arange(2 * n) - first[group]
    starts = np.concatenate([[0], np.cumsum(h + counts)[:-1]])
    total = int((h + counts).sum())
    pos = starts[group] + h + rank  # where each sorted event sits in the combined layout
    prior = (starts[:, None] + np.arange(h)).ravel()  # each account's remembered events come first

    def combined(name: str, new: np.ndarray) -> np.ndarray:
        old = getattr(state, name)[uniq]
        out = np.empty((total, *old.shape[2:]), dtype=old.dtype)
        out[prior] = old.reshape(-1, *old.shape[2:])
        out[pos] = new
        return out

    c_t, c_cp = combined("t", t_e[order]), combined("cp", cp_e[order])
    c_dir, c_amt = combined("dir", dir_e[order]), combined("amt", amt_e[order])
    c_valid = combined("valid", np.ones(2 * n, bool))
    win = pos[:, None] - (h - 1) + np.arange(h)  # (E, H): the event's window, itself last
    w_valid, w_t, w_cp, w_dir, w_amt = c_valid[win], c_t[win], c_cp[win], c_dir[win], c_amt[win]
    t_self, amt_s, dir_s = w_t[:, -1], w_amt[:, -1], w_dir[:, -1]
    gap = np.where(w_valid[:, -2], np.clip(t_self - w_t[:, -2], 0, GAP_CAP_S), GAP_CAP_S) if h > 1 else t_self * 0
    age_dt = np.clip(t_self[:, None] - w_t, 0, None)
    in1h, in24 = w_valid & (age_dt <= 3600), w_valid & (age_dt <= 86_400)
    # first sighting of a (counterparty, direction) pair in the window: one key compare instead of
    # three; empty slots get distinct negative keys so they never match anything
    key = np.where(w_valid, w_cp * 2 + w_dir, -1 - np.arange(h))
    dup = np.zeros_like(w_valid)
    for d in range(1, h):  # slot i seen d slots earlier (H-1 strided compares: no (E,H,H) temporary)
        dup[:, d:] |= key[:, d:] == key[:, :-d]
    first_seen = w_valid & ~dup
    new_cp = ~((w_cp[:, :-1] == w_cp[:, -1:]) & w_valid[:, :-1]).any(1)
    # running counters: remembered totals + this chunk's inclusive cumulative sums
    is_out, is_in = (dir_s == 0).astype(np.float64), (dir_s == 1).astype(np.float64)
    prior_count = state.count[acc[order]]
    n_out = prior_count[:, 0] + _group_cumsum(is_out, first, group)
    n_in = prior_count[:, 1] + _group_cumsum(is_in, first, group)
    sum_out = prior_count[:, 2] + _group_cumsum(amt_s * is_out, first, group)
    sum_in = prior_count[:, 3] + _group_cumsum(amt_s * is_in, first, group)
    n_before = n_out + n_in - 1
    mean_before = np.where(n_before > 0, (sum_out + sum_in - amt_s) / np.maximum(n_before, 1), amt_s)
    first_t = state.first_t[acc[order]]
    first_t = np.where(np.isnan(first_t), t_self[first][group], first_t)
    age_h = np.clip(t_self - first_t, 0, None) / 3600.0
    log_amt = np.log1p(amt_s)
    agg = np.stack(
        [
            np.log1p(n_out),
            np.log1p(n_in),
            np.log1p(sum_out),
            np.log1p(sum_in),
            np.log1p(age_h),
            np.log1p(in1h.sum(1)),
            np.log1p(in24.sum(1)),
            (first_seen & (w_dir == 1)).sum(1) / h,
            (first_seen & (w_dir == 0)).sum(1) / h,
            np.log1p((w_amt * (in24 & (w_dir == 1))).sum(1)),
            np.log1p((w_amt * (in24 & (w_dir == 0))).sum(1)),
            np.log1p(gap / 3600.0),
        ],
        1,
    ).astype(np.float32)
    hour = (t_self % 86_400.0) / 86_400.0 * 2 * np.pi
    round_, under = _amount_flags(amt_s)
    onehot = np.eye(N_CHANNELS, dtype=np.float32)[ch_e[order]]
    seqf = np.concatenate(
        [
            np.stack(
                [
                    log_amt,
                    dir_s,
                    log_amt - np.log1p(mean_before),
                    np.log1p(gap / 3600.0),
                    np.sin(hour),
                    np.cos(hour),
                    round_,
                    under,
                    new_cp,
                    np.log1p(age_h),
                ],
                1,
            ).astype(np.float32),
            onehot,
            np.ones((2 * n, 1), np.float32),
        ],
        1,
    )
    agg, seqf = _finite(agg), _finite(seqf)  # the boundary: no value the model reads can be NaN/inf
    # back to event order; an edge row carries the counterparty's snapshot (the paired event)
    agg_ev, seq_ev = np.empty_like(agg), np.empty_like(seqf)
    agg_ev[order], seq_ev[order] = agg, seqf
    paired = np.arange(2 * n) ^ 1
    edge_ev = np.concatenate([seq_ev[:, [0, 1, 6, 7]], seq_ev[:, 10 : 10 + N_CHANNELS], agg_ev[paired]], 1)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(2 * n)
    # wide rows go to the event store once; each window is one gather from it, in event order
    nbr_rows = np.zeros((2 * n, F_NBR), np.float32)
    nbr_rows[:, :F_EDGE], nbr_rows[:, F_NBR - 1] = edge_ev[order], 1.0
    ev = None if not state.event_dim else np.repeat(events, 2, axis=0)[order]  # event order -> sorted
    new_ids = state.append_events(with_events(seqf, ev), with_events(nbr_rows, ev))  # may compact the store
    c_eid = combined("eid", new_ids)
    w_eid = c_eid[win][inverse]
    age = _finite(np.log1p(age_dt / 3600.0).astype(np.float32) * w_valid)
    k = state.event_dim
    txn = np.concatenate([seq_ev.reshape(n, 2 * F_SEQ), agg_ev.reshape(n, 2 * F_AGG)], 1)
    if gather:
        nbr = state.store_nbr[w_eid]
        nbr[..., F_EDGE] = age[inverse]
        batch = FeatureBatch(
            seq=state.store_seq[w_eid].reshape(n, 2, h, F_SEQ + k), nbr=nbr.reshape(n, 2, h, F_NBR + k), txn=txn
        )
    else:
        eid, age_w = w_eid.astype(np.int32).reshape(n, 2, h), age[inverse].reshape(n, 2, h)
        batch = StoredFeatures(state.store_seq, state.store_nbr, eid, age_w, txn)
    # advance the state: each account keeps the last H rows of its combined group
    keep = (starts + counts)[:, None] + np.arange(h)
    for name, source in (("t", c_t), ("cp", c_cp), ("dir", c_dir), ("amt", c_amt), ("valid", c_valid), ("eid", c_eid)):
        getattr(state, name)[uniq] = source[keep]
    last = first + counts - 1
    state.count[uniq] = np.stack([n_out[last], n_in[last], sum_out[last], sum_in[last]], 1)
    state.first_t[uniq] = first_t[last]
    return batch


def _finite(values: np.ndarray) -> np.ndarray:
    """`values` with NaN -> 0 and everything clipped to +-FEATURE_LIMIT (in place; returned).

    Why: the reader rejects implausible amounts and timestamps, but the network must never see a
    non-finite number whatever reaches it: one NaN feature spreads through the GNN's message passing
    to every transaction that shares an account. Applied to the per-event rows (O(rows), not to the
    gathered windows), which every window, edge and transaction row is built from.
    """
    np.nan_to_num(values, copy=False, nan=0.0, posinf=FEATURE_LIMIT, neginf=-FEATURE_LIMIT)
    return np.clip(values, -FEATURE_LIMIT, FEATURE_LIMIT, out=values)


def raw_features(ts: np.ndarray, amount: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """The transaction alone, no history or graph: the 'raw' baseline's view."""
    hour = (ts % 86_400.0) / 86_400.0 * 2 * np.pi
    round_, under = _amount_flags(amount)
    onehot = np.eye(N_CHANNELS, dtype=np.float32)[channel_ids(channel)]
    cols = [np.log1p(amount), np.sin(hour), np.cos(hour), round_, under]
    return np.concatenate([_finite(np.stack(cols, 1).astype(np.float32)), onehot], 1)
