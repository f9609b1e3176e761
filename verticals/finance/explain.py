"""Top reasons per scored transaction (`finance score --explain`): occlusion of feature groups.

Method: for each group of model inputs (the payer's recent transactions, the payee's, each side's
graph neighbours, the amount features, timing, channel, each side's activity aggregates, each extra
column) the group is replaced by a neutral value and the transaction is scored again; the reason's
weight is `score - score_without_group`. Positive: the group pushed the score up.

Why occlusion of groups and not per-feature gradients: it needs only forward passes, so it works on
the ONNX Runtime session that scores in production (no torch, no gradients) and on the blended
boosted-tree head (trees have no gradient); with ~12 groups it costs ~12 extra forward passes, and a
group ("payee neighbours") is something an analyst can act on, where one of 300 sequence cells is not.

Neutral values: a history or neighbour group is masked (its `valid` flags set to 0, which the model
reads as "no such history": its normalised inputs become 0, the training mean); a per-transaction
feature is replaced by its training mean (`explain_baseline.npy`, written by `finance train`; an older
model directory without it uses the mean of the rows being scored); the tree head's copies of the
same quantities (the analyst's aggregates, aggregates.py) and the bank's columns become missing
(NaN), which the trees read as "unknown".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from verticals.finance.aggregates import NAMES as ANALYST_NAMES
from verticals.finance.columns import ONE_HOT_MAX, ColumnSpec
from verticals.finance.features import AGG_NAMES, F_AGG, F_SEQ, SEQ_NAMES, FeatureBatch
from verticals.finance.label_history import NAMES as LABEL_NAMES

BASELINE_FILE = "explain_baseline.npy"
TOP = 3


def _txn_groups() -> dict[str, list[int]]:
    """Groups of the fixed per-transaction columns (payer block, payee block, then aggregates)."""
    kinds = {
        "amount": ("log_amount", "amount_vs_account_mean", "round_amount", "just_under_threshold"),
        "timing": ("log_gap_h", "hour_sin", "hour_cos", "log_age_h"),
        "channel": tuple(n for n in SEQ_NAMES if n.startswith("channel_")),
        "new counterparty": ("new_counterparty",),
    }
    groups: dict[str, list[int]] = {}
    for label, names in kinds.items():
        groups[label] = [side * F_SEQ + SEQ_NAMES.index(n) for side in (0, 1) for n in names]
    for side, who in enumerate(("payer", "payee")):
        groups[f"{who} activity"] = [2 * F_SEQ + side * F_AGG + i for i in range(len(AGG_NAMES))]
    return groups


def _analyst_groups(offset: int) -> dict[str, list[int]]:
    """Columns of the analyst's aggregates (after the bank's columns in the trees' matrix) per group.

    Why: the tree head reads the amount, timing and activity twice (fedsite's state and the
    analyst's aggregates); occluding only the network's copy would hide what the trees saw.
    """
    kinds = {
        "amount": ("amount_z", "log_amount_ratio"),
        "timing": ("log_gap_s", "log_age_s"),
        "new counterparty": ("new_counterparty",),
    }
    activity = ("count_1h", "count_1d", "count_7d", "n_before", "log_distinct_counterparties")
    groups = {
        g: [ANALYST_NAMES.index(f"{w}_{n}") for w in ("payer", "payee") for n in names] for g, names in kinds.items()
    }
    groups["amount"].append(ANALYST_NAMES.index("log_amount"))
    groups["timing"].append(ANALYST_NAMES.index("hour"))
    for who in ("payer", "payee"):
        groups[f"{who} activity"] = [ANALYST_NAMES.index(f"{who}_{n}") for n in activity]
    return {g: [offset + i for i in cols] for g, cols in groups.items()}


def _extra_groups(spec: ColumnSpec) -> list[tuple[str, list[int], list[int]]]:
    """(name, offsets in the network's extra block, columns of the tree matrix) per extra column."""
    out: list[tuple[str, list[int], list[int]]] = []
    flags = {name: len(spec.numeric) + i for i, name in enumerate(spec.missing_flags)}
    for i, name in enumerate(spec.numeric):
        out.append((name, [i] + ([flags[name]] if name in flags else []), [i]))
    nn_at = len(spec.numeric) + len(spec.missing_flags)
    k = len(spec.categorical)
    for j, (name, vocab) in enumerate(spec.categorical.items()):
        width = len(vocab) if len(vocab) <= ONE_HOT_MAX else 1
        out.append((name, list(range(nn_at, nn_at + width)), [len(spec.numeric) + j, len(spec.numeric) + k + j]))
        nn_at += width
    return out


def group_names(spec: ColumnSpec) -> list[str]:
    """Names of the groups `reasons` uses, in order (history and neighbour groups first)."""
    sides = [f"{who} {what}" for what in ("recent transactions", "neighbours") for who in ("payer", "payee")]
    return sides + list(_txn_groups()) + [f"column {name}" for name, _, _ in _extra_groups(spec)]


def _occluded(
    features: FeatureBatch, tree: np.ndarray, group: int, groups: list[tuple[list[int], list[int]]], baseline
) -> tuple[FeatureBatch, np.ndarray]:
    seq, nbr, txn = features.seq, features.nbr, features.txn
    if group < 4:
        kind, side = divmod(group, 2)
        if kind == 0:
            seq = seq.copy()
            seq[:, side, :, -1] = 0.0
        else:
            nbr = nbr.copy()
            nbr[:, side, :, -1] = 0.0
        return FeatureBatch(seq, nbr, txn), tree
    cols, tree_cols = groups[group - 4]
    txn = txn.copy()
    txn[:, cols] = baseline[cols]
    if tree_cols:
        tree = tree.copy()
        tree[:, tree_cols] = np.nan  # the boosted trees read NaN as "missing"
    return FeatureBatch(seq, nbr, txn), tree


def reasons(
    predict: Callable[[FeatureBatch, np.ndarray], np.ndarray],
    features: FeatureBatch,
    tree: np.ndarray,
    spec: ColumnSpec,
    baseline: np.ndarray | None = None,
    top: int = TOP,
) -> tuple[np.ndarray, list[list[tuple[str, float]]]]:
    """Scores and, per row, the `top` (group name, score - occluded score) pairs of largest |change|.

    `predict(features, tree)` is the scorer's own prediction (network, or network blended with trees);
    `tree` is the boosted trees' matrix of extra columns (width 0 without a head).
    """
    base = predict(features, tree)
    if len(features) == 0:
        return base, []
    if baseline is None or len(baseline) != features.txn.shape[1]:
        baseline = features.txn.mean(0)
    extra_start = 2 * F_SEQ + 2 * F_AGG
    # after the columns: the analyst's aggregates and/or the known-fraud history (not occluded: no group)
    with_aggregates = tree.shape[1] - len(spec.tree_names) in (
        len(ANALYST_NAMES),
        len(ANALYST_NAMES) + len(LABEL_NAMES),
    )
    analyst = _analyst_groups(len(spec.tree_names)) if with_aggregates else {}
    groups = [(cols, analyst.get(name, [])) for name, cols in _txn_groups().items()]
    groups += [([extra_start + i for i in nn], tc if tree.shape[1] else []) for _, nn, tc in _extra_groups(spec)]
    names = group_names(spec)
    delta = np.empty((len(features), len(names)), np.float64)
    for g in range(len(names)):
        delta[:, g] = base - predict(*_occluded(features, tree, g, groups, baseline))
    order = np.argsort(-np.abs(delta), axis=1, kind="stable")[:, :top]
    return base, [[(names[g], float(delta[r, g])) for g in order[r]] for r in range(len(features))]


def format_reason(name: str, change: float) -> str:
    """'payee neighbours +0.412': the group and how much it moved the score."""
    return f"{name} {change:+.3f}"


def baseline_bytes(features: FeatureBatch) -> bytes:
    """The training mean of each per-transaction feature, as the bytes of explain_baseline.npy."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, features.txn.mean(0).astype(np.float32))
    return buffer.getvalue()


def load_baseline(model_dir: str | Path) -> np.ndarray | None:
    """explain_baseline.npy of a model directory, or None (older models)."""
    path = Path(model_dir) / BASELINE_FILE
    return np.load(path) if path.is_file() else None
