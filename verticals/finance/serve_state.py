"""The scoring service's memory on disk: account state and remembered txn_ids, saved atomically.

Why: a service that forgets its accounts on restart scores every later transaction as if it were an
account's first one, so live scores drift from the batch scores of the same stream. The snapshot
holds every array of `features.AccountState` as it is (no re-computation, so a restored service
continues bit for bit) plus the recent txn_ids, in one `.npz` without pickles (np.load with
allow_pickle=False: a snapshot file cannot run code). It records the model it belongs to (SHA-256
of config.toml, which fixes the features); a snapshot of another model is refused.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path

import numpy as np

from common import atomic
from common.errors import UserError
from verticals.finance.aggregates import AnalystState
from verticals.finance.features import F_SEQ, AccountState

_ARRAYS = ("t", "cp", "dir", "amt", "valid", "eid", "count", "first_t", "store_seq", "store_nbr")
FORMAT = 1


class RecentIds:
    """The last `limit` txn_ids seen (insertion order), for duplicate detection in bounded memory."""

    def __init__(self, limit: int) -> None:
        self.limit = max(int(limit), 1)
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, txn: str) -> bool:
        return txn in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, txn: str) -> None:
        self._ids[txn] = None
        self._ids.move_to_end(txn)
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def items(self) -> list[str]:
        return list(self._ids)


def model_key(model_dir: str | Path) -> str:
    """What a snapshot must match: the digest of the model's config.toml (history, features, spec)."""
    return hashlib.sha256((Path(model_dir) / "config.toml").read_bytes()).hexdigest()


def save(
    path: str | Path, state: AccountState, seen: RecentIds, key: str, scored: int, analyst: AnalystState | None = None
) -> Path:
    """Write the snapshot atomically (temp + fsync + rename): a crash leaves the previous one whole.

    `analyst`: the scorer's aggregates state when its head reads them (saved as `analyst_*` arrays).
    """
    arrays = {name: getattr(state, name) for name in _ARRAYS}
    if analyst is not None:
        arrays |= {f"analyst_{k}": v for k, v in analyst.arrays().items()}
    names = list(state.accounts.ids)  # dict order == id order (ids are given out densely)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **arrays,
        accounts=np.array(names, dtype=str) if names else np.zeros(0, dtype="<U1"),
        seen=np.array(seen.items(), dtype=str) if len(seen) else np.zeros(0, dtype="<U1"),
        meta=np.array([FORMAT, state.history, state._cap, state.store_used, scored], dtype=np.int64),
        key=np.array(key),
    )
    return atomic.write_bytes(path, buffer.getvalue())


def load(
    path: str | Path, history: int, key: str, seen: RecentIds, analyst: bool = False
) -> tuple[AccountState, int] | tuple[AccountState, int, AnalystState]:
    """(state, transactions scored so far) from a snapshot; `seen` is filled with its txn_ids.

    `analyst`: the scorer also keeps the analyst's aggregates; their state is returned third.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            fmt, hist, cap, used, scored = (int(x) for x in data["meta"])
            if str(data["key"]) != key:
                raise UserError(
                    f"{path}: service state of another model (config.toml differs); move it away to start fresh"
                )
            if fmt != FORMAT or hist != history:
                raise UserError(
                    f"{path}: service state in format {fmt} / history {hist}, expected {FORMAT} / {history}"
                )
            state = AccountState(history)
            for name in _ARRAYS:
                setattr(state, name, np.array(data[name]))
            state._cap, state.store_used = cap, used
            state.event_dim = state.store_seq.shape[1] - F_SEQ  # the bank-column components its events carry
            state.accounts.ids = {str(name): i for i, name in enumerate(data["accounts"])}
            for txn in data["seen"]:
                seen.add(str(txn))
            if analyst:
                if "analyst_origin" not in data.files:
                    raise UserError(f"{path}: service state without the aggregates' state; move it away to start fresh")
                n = len("analyst_")
                aggregates = AnalystState.from_arrays({k[n:]: data[k] for k in data.files if k.startswith("analyst_")})
    except UserError:
        raise
    except Exception as exc:  # zip, npy, key or value errors of a damaged file all mean one thing
        raise UserError(
            f"{path}: unreadable service state ({type(exc).__name__}); move it away to start fresh"
        ) from None
    return (state, scored, aggregates) if analyst else (state, scored)
