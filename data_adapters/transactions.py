"""The transactions CSV of docs/contracts.md (Finance) -> validated columns, rejects, time order, graph.

Why this module exists apart from the model: a bank's export is never clean. Every row is checked
(missing field, unparseable or zone-less timestamp, amount <= 0, duplicate txn_id, bad label or
currency) and a bad row is *quarantined* with its line number and reason, never dropped silently,
so `rows read = rows kept + rows rejected` always holds and the caller can prove it.

The file is parsed in chunks of `chunk_rows` lines, so parsing memory stays bounded; what is kept is
compact numpy columns (about 100 bytes per row), which the causal scorer needs in time order anyway.
Timestamps become float Unix seconds in UTC (ISO 8601 with an offset or `Z`, or Unix seconds).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from common.atomic import write_csv
from common.errors import UserError
from data_adapters import arrow_csv, transaction_checks
from data_adapters.column_mapping import ColumnMapping
from data_adapters.csv_chunks import CsvChunks, record_chunks

REQUIRED = ("txn_id", "timestamp", "src_account", "dst_account", "amount")
OPTIONAL = ("currency", "channel", "is_fraud", "typology")


@dataclass
class Rejection:
    """One quarantined row: its id (may be empty), its line in the file (header = line 1), why."""

    txn_id: str
    line: int
    reason: str


@dataclass
class Transactions:
    """Valid rows as columns, in input order. `label` is -1 where the file has no is_fraud."""

    txn_id: np.ndarray
    line: np.ndarray
    ts: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    amount: np.ndarray
    currency: np.ndarray
    channel: np.ndarray
    label: np.ndarray
    typology: np.ndarray
    rows_read: int = 0
    source: str = ""
    extra_columns: list[str] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # the bank's own columns (see extra_column)

    def __len__(self) -> int:
        return len(self.txn_id)

    @property
    def has_labels(self) -> bool:
        return len(self) > 0 and bool((self.label >= 0).all())

    def reorder(self, index: np.ndarray) -> None:
        """Put the rows in `index` order in place, one column at a time (a bank's month: `take` would
        hold every column twice at once, ~1 GB more at the peak)."""
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name)[index])
        for name in list(self.extras):
            self.extras[name] = self.extras[name][index]

    def take(self, index: np.ndarray) -> Transactions:
        """A row subset (boolean mask or integer index), same columns."""
        cols = {name: getattr(self, name)[index] for name in _COLUMNS}
        extras = {name: values[index] for name, values in self.extras.items()}
        return Transactions(
            **cols, rows_read=self.rows_read, source=self.source, extra_columns=self.extra_columns, extras=extras
        )


_COLUMNS = ("txn_id", "line", "ts", "src", "dst", "amount", "currency", "channel", "label", "typology")


def parse_timestamp(text: str) -> float:
    """Unix seconds (UTC) from ISO 8601 with a zone, or from Unix seconds; ValueError otherwise."""
    text = text.strip()
    if not text:
        raise ValueError("missing timestamp")
    value = None
    if "-" not in text[1:] and ":" not in text:  # not ISO 8601: Unix seconds (exceptions are slow)
        try:
            value = float(text)
        except ValueError:
            value = None
    if value is not None:
        if not math.isfinite(value):
            raise ValueError(f"bad timestamp '{text}'")
        return value
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad timestamp '{text}'") from None
    if when.tzinfo is None:
        raise ValueError(f"timestamp '{text}' has no timezone")
    return when.timestamp()


def iso_utc(ts: float) -> str:
    """Seconds -> `YYYY-MM-DDTHH:MM:SSZ` (the format the generator writes)."""
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_row(values: dict[str, str], require_label: bool) -> tuple[float, float, int] | str:
    """(ts, amount, label) for a valid row, else the reason it is rejected."""
    for name in REQUIRED:
        if not values.get(name, "").strip():
            return f"missing {name}"
    try:
        ts = parse_timestamp(values["timestamp"])
    except ValueError as exc:
        return str(exc)
    raw_amount = values["amount"].strip()
    try:
        amount = float(raw_amount)
    except ValueError:
        return f"amount '{raw_amount}' is not a number"
    if not math.isfinite(amount):
        return f"amount '{raw_amount}' is not finite"
    if amount <= 0:
        return f"amount {raw_amount} is not > 0"
    implausible = transaction_checks.row_problem(ts, amount, values.get("currency", "").strip())
    if implausible is not None:
        return implausible
    raw_label = values.get("is_fraud", "").strip()
    if raw_label in ("0", "1", "0.0", "1.0"):
        label = int(float(raw_label))
    elif raw_label:
        return f"is_fraud '{raw_label}' is not 0 or 1"
    elif require_label:
        return "missing is_fraud"
    else:
        label = -1
    return ts, amount, label


def iter_chunks(
    path: str | os.PathLike[str],
    *,
    require_label: bool = False,
    chunk_rows: int = 100_000,
    mapping: ColumnMapping | None = None,
    extras: Collection[str] | None = None,
) -> Iterator[tuple[Transactions, list[Rejection]]]:
    """Parse `path` `chunk_rows` data lines at a time (fewer when a row has many fields: CHUNK_CELLS
    bounds the parsed strings held at once); yields (valid rows, rejections) per chunk.

    Duplicate ids are detected across the whole file (the first occurrence wins). `mapping`
    (data_adapters.column_mapping) names the contract columns in a file that uses other names;
    every column that is not a contract column comes back in `Transactions.extras`, or only those
    named in `extras` (scoring: the model's columns; the others are still listed in
    `extra_columns`, never converted: a bank's identifiers and free text were a fifth of reading
    200,000 rows). The fields come from Arrow where it reads them exactly as csv.reader would
    (csv_chunks), else csv.reader.
    """
    path = Path(path)
    if mapping is not None and mapping.source is not None:
        source_header, records = mapping.source(path)
        source = None
    else:
        source = CsvChunks(path)
        source_header, records = source.header, None
    with contextlib.closing(records if records is not None else source):
        bound = mapping.bind(source_header, str(path)) if mapping is not None else None
        header = bound.header if bound is not None else [h.strip() for h in source_header]
        transaction_checks.check_header(header, path)  # after mapping: an importer may rename repeats
        missing = [c for c in REQUIRED if c not in header]
        if require_label and "is_fraud" not in header:
            missing.append("is_fraud")
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} in the header")
        extra = [h for h in header if h not in REQUIRED + OPTIONAL]
        convert = extra if extras is None else [h for h in extra if h in set(extras)]
        seen: dict[str, int] = {}
        n_fields, id_at = len(source_header), (header.index("txn_id") if bound is None else -1)
        chunk_rows = max(1, min(chunk_rows, CHUNK_CELLS // max(n_fields, 1)))  # wide exports: fewer rows a chunk
        chunks = source.chunks(chunk_rows) if source is not None else record_chunks(records, n_fields, chunk_rows)
        for piece in chunks:
            rejects = [_fault(line, raw, n_fields, id_at) for line, raw in piece.faults]
            columns, lines = piece.columns, piece.lines
            if bound is not None:
                columns = bound.apply_columns(columns, lines)
            parts = []
            for i in range(0, len(lines), _BLOCK):
                block, block_lines = [c[i : i + _BLOCK] for c in columns], lines[i : i + _BLOCK]
                fast = _clean_block(block, block_lines, header, require_label, seen, convert)
                if fast is None:
                    rows = list(zip(*map(arrow_csv.as_list, block)))
                    fast = _checked_rows(rows, block_lines, header, require_label, seen, rejects, convert)
                parts.append(fast)
            rejects.sort(key=lambda r: r.line)
            chunk = concat(parts) if parts else _columns([], 0, str(path), extra, convert)
            chunk.rows_read, chunk.source, chunk.extra_columns = piece.records, str(path), extra
            yield chunk, rejects


def _fault(line: int, raw: list[str] | transaction_checks.RowFault, n_fields: int, id_at: int) -> Rejection:
    """The rejection of a record that is not a row of the header's fields."""
    if isinstance(raw, transaction_checks.RowFault):
        return Rejection("", line, str(raw))
    if not raw or (len(raw) == 1 and not raw[0].strip()):
        return Rejection("", line, "empty row")
    txn = raw[id_at].strip() if 0 <= id_at < len(raw) else ""
    return Rejection(txn, line, f"expected {n_fields} fields, found {len(raw)}")


CHUNK_CELLS = 3_000_000  # fields parsed per chunk (~0.2 GB of Python strings): 27k rows of a 110-column export
_BLOCK = 16_384  # rows validated column-wise at once; a block with any bad row is re-checked row by row
_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


def _checked_rows(
    raws: list[list[str]],
    lines: list[int],
    header: list[str],
    require_label: bool,
    seen: dict[str, int],
    rejects: list,
    convert: list[str],
) -> Transactions:
    """Row by row (`check_row`): the reference rules, and the reasons for every rejected row."""
    rows = []
    for raw, line in zip(raws, lines):
        values = dict(zip(header, raw))
        txn = values["txn_id"].strip()
        checked = check_row(values, require_label)
        if isinstance(checked, str):
            rejects.append(Rejection(txn, line, checked))
        elif txn in seen:
            rejects.append(Rejection(txn, line, f"duplicate txn_id (first at line {seen[txn]})"))
        else:
            seen[txn] = line
            rows.append((txn, line, *checked, values))
    return _columns(rows, 0, "", [h for h in header if h not in REQUIRED + OPTIONAL], convert)


def _clean_block(
    columns: list, lines: list[int], header: list[str], require_label: bool, seen: dict[str, int], convert: list[str]
) -> Transactions | None:
    """Columns of a block in which every row passes `check_row` and no id repeats, else None.

    Why: checking 140k rows one dict at a time cost more than featurising them. Column-wise, each
    rule is one C-level pass (map, set, numpy); the rules are exactly `check_row`'s, and any block
    that breaks one goes back to `_checked_rows`, which finds the reasons. `columns`: one per
    header field, Python strings or Arrow string arrays (csv_chunks); `convert`: the extra
    columns to keep (iter_chunks).
    """
    where = {name: i for i, name in enumerate(header)}  # a repeated name: the last wins, as in dict(zip())
    n = len(lines)

    def text(name: str) -> list[str]:
        return arrow_csv.text(columns[where[name]]) if name in where else [""] * n

    txn, stamp, src, dst, amount_text = (text(name) for name in REQUIRED)
    if "" in txn or "" in stamp or "" in src or "" in dst or "" in amount_text:
        return None
    try:
        if not any(":" in t or "-" in t[1:] for t in stamp):  # Unix seconds (parse_timestamp's rule)
            ts = np.array(list(map(float, stamp)), dtype=np.float64)
            if not np.isfinite(ts).all():
                return None
        elif all(":" in t for t in stamp):  # ISO 8601
            when = list(map(_dt.datetime.fromisoformat, stamp))
            if any(w.tzinfo is None for w in when):
                return None
            ts = np.fromiter(map(_dt.datetime.timestamp, when), dtype=np.float64, count=len(when))
        else:
            return None
        amount = np.array(list(map(float, amount_text)), dtype=np.float64)
    except ValueError:
        return None
    if not (np.isfinite(amount).all() and (amount > 0).all()):
        return None
    currency = text("currency")
    if not transaction_checks.block_ok(ts, amount, set(currency)):
        return None
    label_text = text("is_fraud")
    allowed = set(_LABELS) if require_label else {*_LABELS, ""}
    if not set(label_text) <= allowed:
        return None
    ids = set(txn)
    if len(ids) != len(txn) or not seen.keys().isdisjoint(ids):
        return None
    seen.update(zip(txn, lines))
    extra = [name for name in header if name not in REQUIRED + OPTIONAL]
    return Transactions(
        txn_id=np.array(txn, dtype=object),
        line=np.array(lines, dtype=np.int64),
        ts=ts,
        src=np.array(list(map(sys.intern, src)), dtype=object),  # one string per account, not per row
        dst=np.array(list(map(sys.intern, dst)), dtype=object),
        amount=amount,
        currency=np.array(list(map(sys.intern, currency)), dtype=object),
        channel=np.array([sys.intern(c.lower()) for c in text("channel")], dtype=object),
        label=np.array([_LABELS.get(v, -1) for v in label_text], dtype=np.int8),
        typology=np.array(list(map(sys.intern, text("typology"))), dtype=object),
        extra_columns=extra,
        extras={name: _extra(columns[where[name]]) for name in convert},
    )


def _extra(column: Sequence[str] | pa.ChunkedArray) -> np.ndarray:
    return arrow_csv.extra_column(column) if isinstance(column, arrow_csv.ARROW) else extra_column(column)


def extra_column(values: Sequence[str]) -> np.ndarray:
    """A feature column kept compact: float64 (NaN where empty) when every value is a number, else
    an object array whose equal strings share one object (8 bytes a cell, not a string each).

    Why map(float) and a dict: a bank's month is 100 columns x 1M cells; a fixed-width unicode
    array per column (then astype / np.unique) read at under 4,000 rows/s, C-level map passes at
    several times that. Cells are stripped of surrounding spaces either way.
    """
    try:
        return np.array(list(map(float, values)), dtype=np.float64)  # every cell a number: one C pass
    except ValueError:
        pass
    text = list(map(str.strip, values))
    try:
        return np.array([float(v) if v else math.nan for v in text], dtype=np.float64)  # numbers and blanks
    except ValueError:
        shared: dict[str, str] = {}
        return np.array(list(map(shared.setdefault, text, text)), dtype=object)


def _columns(rows: list, read: int, source: str, extra: list[str], convert: list[str]) -> Transactions:
    def text(name: str) -> np.ndarray:
        return np.array([r[5].get(name, "").strip() for r in rows], dtype=object)

    return Transactions(
        txn_id=np.array([r[0] for r in rows], dtype=object),
        line=np.array([r[1] for r in rows], dtype=np.int64),
        ts=np.array([r[2] for r in rows], dtype=np.float64),
        amount=np.array([r[3] for r in rows], dtype=np.float64),
        label=np.array([r[4] for r in rows], dtype=np.int8),
        src=text("src_account"),
        dst=text("dst_account"),
        currency=text("currency"),
        channel=np.array([c.lower() for c in text("channel")], dtype=object),
        typology=text("typology"),
        rows_read=read,
        source=source,
        extra_columns=extra,
        extras={name: extra_column(list(text(name))) for name in convert},
    )


def concat(parts: list[Transactions], *, consume: bool = False) -> Transactions:
    """Join chunks (in order) into one set of columns.

    `consume`: each chunk's extra column is dropped once joined, so a wide export is held about
    once, not twice, at the end of reading (a bank's month: 100 columns x 1M rows = 0.8 GB).
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    cols = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS}
    extras = {}
    for name in parts[0].extra_columns:
        pieces = [(p.extras.pop(name) if consume else p.extras[name]) for p in parts if name in p.extras]
        if not pieces:  # a column the reader was told not to convert (iter_chunks' `extras`)
            continue
        if any(piece.dtype == object for piece in pieces):  # a chunk with text: the column is text
            pieces = [piece if piece.dtype == object else _as_text(piece) for piece in pieces]
        extras[name] = np.concatenate(pieces)
    return Transactions(
        **cols,
        rows_read=sum(p.rows_read for p in parts),
        source=parts[0].source,
        extra_columns=parts[0].extra_columns,
        extras=extras,
    )


def _as_text(numbers: np.ndarray) -> np.ndarray:
    return np.array(["" if np.isnan(x) else f"{x:g}" for x in numbers], dtype=object)


def read_transactions(
    path: str | os.PathLike[str],
    *,
    require_label: bool = False,
    chunk_rows: int = 100_000,
    mapping: ColumnMapping | None = None,
    extras: Collection[str] | None = None,
) -> tuple[Transactions, list[Rejection]]:
    """Every valid row of `path` (input order) and every rejection; a UserError if none is valid.
    `extras`: the extra columns to convert (None: all; see iter_chunks)."""
    parts, rejects = [], []
    chunks = iter_chunks(path, require_label=require_label, chunk_rows=chunk_rows, mapping=mapping, extras=extras)
    for chunk, rejected in chunks:
        parts.append(chunk)
        rejects.extend(rejected)
    if not parts or sum(len(p) for p in parts) == 0:
        first = f" (line {rejects[0].line}: {rejects[0].reason})" if rejects else ""
        raise UserError(f"{path}: no valid transaction rows{first}")
    return concat(parts, consume=True), rejects


def write_rejected(path: str | os.PathLike[str], rejects: list[Rejection]) -> Path:
    """`rejected.csv`: txn_id,line,reason (written even when empty, so its absence means nothing)."""
    return write_csv(path, ["txn_id", "line", "reason"], ((r.txn_id, r.line, r.reason) for r in rejects))


def time_order(txns: Transactions) -> np.ndarray:
    """Indices sorting rows by timestamp, ties kept in input order (the causal processing order)."""
    return np.lexsort((txns.line, txns.ts))


class AccountIndex:
    """account string -> dense int id, growing as new accounts appear (serving sees new ones)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, names: np.ndarray) -> np.ndarray:
        ids = self.ids
        found = list(map(ids.get, names))  # C-speed for the common case: every account is known
        if None in found:
            for i, value in enumerate(found):
                if value is None:
                    found[i] = ids.setdefault(names[i], len(ids))
        return np.fromiter(found, dtype=np.int64, count=len(found))


@dataclass
class Multigraph:
    """The directed multigraph: one edge per transaction (parallel edges kept), in time order."""

    edge_index: np.ndarray  # (2, E) payer id -> payee id
    edge_time: np.ndarray
    edge_amount: np.ndarray
    edge_row: np.ndarray  # index of the transaction each edge came from
    n_nodes: int


def build_multigraph(txns: Transactions, accounts: AccountIndex | None = None) -> Multigraph:
    """Edges in time order; `torch_geometric.data.Data(edge_index=...)` accepts `edge_index` as is."""
    accounts = accounts or AccountIndex()
    order = time_order(txns)
    src = accounts.lookup(txns.src[order])
    dst = accounts.lookup(txns.dst[order])
    return Multigraph(np.stack([src, dst]), txns.ts[order], txns.amount[order], order, len(accounts))


def account_sequences(graph: Multigraph) -> tuple[np.ndarray, np.ndarray]:
    """CSR of each account's events (sent and received) in time order: (indptr, edge positions).

    Events of account a are `positions[indptr[a]:indptr[a+1]]`; a self-transfer appears twice.
    """
    n_edges = graph.edge_index.shape[1]
    accounts = np.concatenate([graph.edge_index[0], graph.edge_index[1]])
    positions = np.concatenate([np.arange(n_edges), np.arange(n_edges)])
    order = np.lexsort((positions, accounts))
    counts = np.bincount(accounts, minlength=graph.n_nodes)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return indptr, positions[order]
