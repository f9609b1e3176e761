"""The bank's own columns as features: typed, encoded, and recorded so every later use matches training.

Why: a bank's export carries far more than the 8 contract columns (merchant category, card type,
device, counters, risk scores), and on real card-fraud data those columns carry most of the signal.
Types are inferred from the training rows (a column whose every value is a number is numeric; text
is categorical; text with a distinct value in most rows is an identifier or free text and is
ignored, with a note) and can be overridden (`features_numeric`, `features_categorical`,
`features_ignore`). The fitted encodings (vocabularies, frequencies) are a `ColumnSpec`, stored as
JSON in the config (`feature_spec`), so `score`, `serve`, `update` and federation apply exactly the
same ones. Missing values are a value of their own; a category never seen in training is "other".

Three encodings of the same spec:
- `nn_matrix` for the network: signed log1p of numbers (0 where missing, plus a missing flag),
  one-hot of small vocabularies, the training frequency of a value for large ones;
- `event_matrix`: the same columns compressed to a few components (a PCA of the standardised
  `nn_matrix`, fitted on the training rows by `fit_events`), carried by every event of an
  account's history (the TCN's sequences) and by every neighbour edge (the GNN's edge features).
  Why compressed: each event is stored once per account side and read in up to 2 x history
  windows, so 130 columns per event would multiply the features' memory by eight; why a PCA:
  it is label-free, needs no knowledge of the bank's columns, and keeps the directions in which
  the rows differ most (card type, device, the blocks of correlated counters);
- `tree_matrix` for the boosted-tree head: raw numbers (NaN where missing), category codes (for
  HistGradientBoosting's native categorical splits) and the value's training frequency.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import repeat

import numpy as np

from common.errors import UserError

MAX_CATEGORIES = 250  # HistGradientBoosting splits on at most 255 categories; the rest share "other"
ONE_HOT_MAX = 8
ID_SHARE = 0.5  # text with a distinct value in more than half the rows is an identifier or free text


@dataclass
class ColumnSpec:
    """Which extra columns are features, their types and fitted encodings (JSON-serialisable)."""

    numeric: list[str] = field(default_factory=list)
    missing_flags: list[str] = field(default_factory=list)  # numeric columns with missing values in training
    categorical: dict[str, list[str]] = field(default_factory=dict)  # vocabulary, most frequent first
    log_share: dict[str, list[float]] = field(default_factory=dict)  # per vocabulary entry, then "other"
    ignored: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    event_mean: list[float] = field(default_factory=list)  # per nn_matrix column (fit_events)
    event_scale: list[float] = field(default_factory=list)
    event_components: list[list[float]] = field(default_factory=list)  # (k, nn_dim): rows of the projection

    @property
    def event_dim(self) -> int:
        """Width of the columns each event of a history carries (0: events carry none)."""
        return len(self.event_components)

    @property
    def used(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def nn_dim(self) -> int:
        one_hot = sum(len(v) if len(v) <= ONE_HOT_MAX else 1 for v in self.categorical.values())
        return len(self.numeric) + len(self.missing_flags) + one_hot

    @property
    def tree_names(self) -> list[str]:
        cats = list(self.categorical)
        return [*self.numeric, *cats, *(f"{c}_frequency" for c in cats)]

    @property
    def tree_categorical(self) -> np.ndarray:
        """Boolean mask of `tree_matrix` columns that are category codes."""
        n, k = len(self.numeric), len(self.categorical)
        return np.array([False] * n + [True] * k + [False] * k, dtype=bool)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> ColumnSpec:
        return ColumnSpec(**json.loads(text)) if text else ColumnSpec()

    def require(self, available: list[str] | set[str], where: str) -> None:
        """A UserError naming every trained column that `available` lacks."""
        missing = [c for c in self.used if c not in set(available)]
        if missing:
            raise UserError(f"{where}: missing trained column(s) {', '.join(missing)}")

    def notes(self) -> list[str]:
        return [f"column '{name}' not used: {why}" for name, why in self.ignored.items()]


def as_numbers(values: np.ndarray) -> np.ndarray:
    """float64 view of a column (text that is not a number becomes NaN)."""
    if values.dtype != object:
        return values.astype(np.float64, copy=False)
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v) if v != "" else np.nan
        except ValueError:
            pass
    return out


def as_text(values: np.ndarray) -> np.ndarray:
    """object array of strings ('' where missing); numbers written as %g (1.0 -> '1')."""
    if values.dtype == object:
        return values
    return np.array(["" if math.isnan(x) else f"{x:g}" for x in values], dtype=object)


def infer_spec(
    extras: dict[str, np.ndarray],
    numeric: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
) -> ColumnSpec:
    """Fit a ColumnSpec on training rows' extra columns (input order irrelevant)."""
    return spec_from_summaries([summarise_columns(extras, numeric, categorical, ignore)], numeric, categorical, ignore)


def summarise_columns(
    extras: dict[str, np.ndarray],
    numeric: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    top: int | None = None,
) -> dict[str, dict]:
    """Per extra column, what typing and encoding it needs: counts and a range, never a row.

    Why a summary and not the values: in a federation each bank summarises its own training
    period and only the summaries travel (federated_columns.py), and one bank's training derives
    its spec from its own summary, so both go through `spec_from_summaries`. A numeric column gives
    its row count, values present, min and max; a text column its distinct count and the counts of
    its `top` most frequent values (all with None), or, when it looks like an identifier or free
    text, no value at all.
    """
    out: dict[str, dict] = {}
    for name, values in extras.items():
        n = len(values)
        kind = "numeric" if name in numeric else "categorical" if name in categorical else None
        if name in ignore:
            out[name] = {"kind": "ignored", "n": n}
        elif kind == "numeric" or (kind is None and values.dtype != object):
            numbers = as_numbers(values)
            present = numbers[~np.isnan(numbers)]
            low, high = (float(present.min()), float(present.max())) if len(present) else (None, None)
            out[name] = {"kind": "numeric", "n": n, "present": int(len(present)), "min": low, "max": high}
        else:
            counted = Counter(map(str, as_text(values)))  # a C-level count: np.unique sorted 1M strings per column
            entry: dict = {"kind": "text", "n": n, "distinct": len(counted)}
            if name not in categorical and n > 50 and len(counted) > ID_SHARE * n:
                entry["identifier"] = True
            else:
                ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))  # ties: by value
                entry["counts"] = dict(ranked[:top] if top is not None else ranked)
            out[name] = entry
    return out


def spec_from_summaries(
    summaries: list[dict[str, dict]],
    numeric: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
) -> ColumnSpec:
    """The ColumnSpec of the columns every summary has (one summary: one bank's own training).

    Several summaries are pooled as their rows would be: counts and ranges add up, and a
    column numeric at one bank and text at another is not used (with the reason). The identifier
    test adds the banks' distinct counts, an upper bound of the pooled count (exact for one bank).
    """
    every = [name for summary in summaries for name in summary]
    for name in (*numeric, *categorical, *ignore):
        if name not in every:
            raise UserError(
                f"features: column '{name}' is not in the data (extra columns: {', '.join(dict.fromkeys(every))})"
            )
    spec = ColumnSpec()
    for name in summaries[0] if summaries else []:
        if any(name not in summary for summary in summaries[1:]):
            continue
        entries = [summary[name] for summary in summaries]
        kinds = {entry["kind"] for entry in entries}
        n = sum(entry["n"] for entry in entries)
        if "ignored" in kinds:
            spec.ignored[name] = "listed in features.ignore"
        elif len(kinds) > 1:
            spec.ignored[name] = "numeric at some sites, text at others"
        elif kinds == {"numeric"}:
            present = sum(entry["present"] for entry in entries)
            lows = [entry["min"] for entry in entries if entry["present"]]
            highs = [entry["max"] for entry in entries if entry["present"]]
            if present == 0:
                spec.ignored[name] = "no numeric value"
            elif min(lows) == max(highs) and present == n:
                spec.ignored[name] = "constant"
            else:
                spec.numeric.append(name)
                if present < n:
                    spec.missing_flags.append(name)
        else:
            _add_categorical(spec, name, entries, n, name in categorical)
    return spec


def _add_categorical(spec: ColumnSpec, name: str, entries: list[dict], n: int, forced: bool) -> None:
    """Type one text column from its summaries: constant, identifier, or a vocabulary with shares."""
    counted: Counter = Counter()
    for entry in entries:
        counted.update(entry.get("counts", {}))
    distinct = sum(entry["distinct"] for entry in entries)
    identifier = any(entry.get("identifier") for entry in entries)  # a site sent no values of it
    if not identifier and len(counted) <= 1:
        spec.ignored[name] = "constant"
        return
    if identifier or (not forced and n > 50 and distinct > ID_SHARE * n):
        spec.ignored[name] = f"identifier or free text ({distinct} distinct values in {n} rows)"
        return
    ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]  # ties: by value
    vocab = [value for value, _ in ranked]
    kept = np.array([count for _, count in ranked])
    other = n - kept.sum()
    spec.categorical[name] = vocab
    spec.log_share[name] = [float(np.log((c + 1) / (n + 1))) for c in [*kept, other]]


def _lookups(spec: ColumnSpec) -> dict[str, dict[str, int]]:
    """Per categorical column, value -> vocabulary index."""
    return {name: {v: i for i, v in enumerate(vocab)} for name, vocab in spec.categorical.items()}


def _codes(lookup: dict[str, int], values: np.ndarray) -> np.ndarray:
    """Vocabulary index of each value; len(vocab) for a value outside it (rare or unseen)."""
    found = map(lookup.get, as_text(values), repeat(len(lookup)))  # C-level: a generator was half the scoring time
    return np.fromiter(found, dtype=np.int64, count=len(values))


def category_codes(spec: ColumnSpec, extras: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each categorical column's vocabulary indices (len(vocab): rare or unseen), for `nn_matrix` and
    `tree_matrix` to share (the batch scorer: looked up once instead of once per matrix)."""
    lookups = _lookups(spec)
    return {name: _codes(lookups[name], extras[name]) for name in spec.categorical}


def _code_lookup(spec: ColumnSpec, extras: dict[str, np.ndarray], codes: dict[str, np.ndarray] | None):
    """`(name, rows) -> vocabulary indices` from the caller's `codes`, else looked up block by block."""
    if codes is not None:
        return lambda name, rows: codes[name][rows]
    lookups = _lookups(spec)
    return lambda name, rows: _codes(lookups[name], extras[name][rows])


ROW_BLOCK = 2048  # rows encoded at a time (see _by_blocks)


def _by_blocks(out: np.ndarray, n: int, fill) -> np.ndarray:
    """Fill `out` (n, width) a block of rows at a time: `fill(rows, part)` writes each column's values
    into a row of `part` (width, block), which is then copied into `out[rows]` transposed.

    Why: writing a column straight into a row-major matrix touches one cache line per cell, and
    did so for 100 columns x 1M rows: 3 of the 4 seconds of encoding 200,000 rows for scoring.
    """
    part = np.empty((out.shape[1], min(ROW_BLOCK, max(n, 1))), np.float32)
    for lo in range(0, n, ROW_BLOCK):
        rows = slice(lo, min(lo + ROW_BLOCK, n))
        block = part[:, : rows.stop - lo]
        fill(rows, block)
        out[rows] = block.T
    return out


def nn_matrix(
    spec: ColumnSpec,
    extras: dict[str, np.ndarray],
    n: int,
    out: np.ndarray | None = None,
    codes: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, spec.nn_dim) float32 inputs for the network (normalised later by the model's buffers).

    Written into one float32 array (`out`, e.g. the columns of a larger array the caller keeps):
    stacking float64 columns first doubled the peak memory of a million-row export. `codes`:
    `category_codes` of these rows, when the caller has them.
    """
    spec.require(list(extras), "data")
    out = np.empty((n, spec.nn_dim), np.float32) if out is None else out
    lookup = _code_lookup(spec, extras, codes)
    shares = {name: np.asarray(spec.log_share[name]) for name in spec.categorical}

    def fill(rows: slice, part: np.ndarray) -> None:
        at = 0
        for name in spec.numeric:
            x = as_numbers(extras[name][rows])
            part[at] = np.nan_to_num(np.sign(x) * np.log1p(np.abs(x)), nan=0.0, posinf=710.0, neginf=-710.0)
            at += 1
        for name in spec.missing_flags:
            part[at] = np.isnan(as_numbers(extras[name][rows]))
            at += 1
        for name, vocab in spec.categorical.items():
            index = lookup(name, rows)
            if len(vocab) <= ONE_HOT_MAX:
                for i in range(len(vocab)):
                    part[at] = index == i
                    at += 1
            else:
                part[at] = shares[name][index]
                at += 1

    return _by_blocks(out, n, fill)


EVENT_FIT_ROWS = 50_000  # rows the projection is fitted on (a seeded sample beyond that)


def fit_events(spec: ColumnSpec, nn: np.ndarray, k: int, seed: int = 0) -> ColumnSpec:
    """`spec` with an event projection: the top `k` principal components of standardised `nn` rows.

    `nn`: nn_matrix of the training rows. Components are signed so their largest entry is positive
    (the same rows give the same projection on any machine). k = 0 or no extra column: no projection.
    """
    k = min(k, nn.shape[1], len(nn))
    if k <= 0:
        return spec
    rows = nn
    if len(nn) > EVENT_FIT_ROWS:
        rows = nn[np.sort(np.random.default_rng(seed).choice(len(nn), EVENT_FIT_ROWS, replace=False))]
    x = rows.astype(np.float64)
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-3)
    _, _, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    comps = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(1)])[:, None]
    spec.event_mean, spec.event_scale = mean.tolist(), scale.tolist()
    spec.event_components = comps.tolist()
    return spec


def event_matrix(spec: ColumnSpec, nn: np.ndarray) -> np.ndarray | None:
    """(n, spec.event_dim) float32 from nn_matrix rows, or None when events carry no columns."""
    if not spec.event_dim:
        return None
    z = (nn - np.asarray(spec.event_mean, np.float32)) / np.asarray(spec.event_scale, np.float32)
    return np.clip(z @ np.asarray(spec.event_components, np.float32).T, -50.0, 50.0).astype(np.float32)


def tree_matrix(
    spec: ColumnSpec,
    extras: dict[str, np.ndarray],
    n: int,
    out: np.ndarray | None = None,
    codes: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, len(spec.tree_names)) float32: numbers with NaN, category codes, value frequencies (into
    `out`; `codes` as in nn_matrix)."""
    spec.require(list(extras), "data")
    out = np.empty((n, len(spec.tree_names)), np.float32) if out is None else out
    lookup = _code_lookup(spec, extras, codes)
    shares = {name: np.asarray(spec.log_share[name]) for name in spec.categorical}
    k, m = len(spec.numeric), len(spec.categorical)

    def fill(rows: slice, part: np.ndarray) -> None:
        for at, name in enumerate(spec.numeric):
            part[at] = as_numbers(extras[name][rows])
        for j, name in enumerate(spec.categorical):
            index = lookup(name, rows)
            part[k + j] = index
            part[k + m + j] = shares[name][index]

    return _by_blocks(out, n, fill)
