"""Fraud metrics: AUPRC first (the headline: it is what matters at a 1-2 % base rate), ROC AUC,
recall at 1 % false-positive rate (what an alert budget allows), best F1, and recall per typology.

Recall per typology is measured at the 1 % FPR operating point, the threshold an analyst team would
run, so it answers "which schemes get through at our alert budget".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def threshold_at_fpr(y: np.ndarray, p: np.ndarray, fpr_max: float = 0.01) -> float:
    """The lowest score threshold whose false-positive rate is <= fpr_max (flag when p >= thr)."""
    negatives = np.sort(p[y == 0])[::-1]
    if len(negatives) == 0:
        return float(p.min()) if len(p) else 0.5
    allowed = int(math.floor(fpr_max * len(negatives)))
    # flag p > the (allowed+1)-th highest negative score
    return float(np.nextafter(negatives[allowed], np.inf)) if allowed < len(negatives) else float(negatives[-1])


def fraud_metrics(y: np.ndarray, p: np.ndarray, typology: np.ndarray | None = None) -> dict[str, float]:
    """{"auprc", "roc_auc", "recall_at_1pct_fpr", "f1_best", "threshold_1pct_fpr", "recall_<typology>"...}."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    both = 0 < y.sum() < len(y)
    out: dict[str, float] = {}
    out["auprc"] = float(average_precision_score(y, p)) if both else float(y.mean() if len(y) else 0.0)
    out["roc_auc"] = float(roc_auc_score(y, p)) if both else 0.5
    thr = threshold_at_fpr(y, p, 0.01)
    flagged = p >= thr
    out["recall_at_1pct_fpr"] = float(flagged[y == 1].mean()) if y.sum() else 0.0
    if both:
        precision, recall, _ = precision_recall_curve(y, p)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        out["f1_best"] = float(f1.max())
    else:
        out["f1_best"] = 0.0
    out["threshold_1pct_fpr"] = thr
    out["fraud_rate"] = float(y.mean()) if len(y) else 0.0
    out["n"] = float(len(y))
    if typology is not None:
        for name in sorted(set(typology[y == 1].tolist()) - {"none", ""}):
            mask = (typology == name) & (y == 1)
            out[f"recall_{name}"] = float(flagged[mask].mean())
    return out


def read_scores(path: str | Path) -> dict[str, float]:
    """txn_id -> fraud_probability from a scores CSV; a one-line UserError naming a bad line."""
    import csv

    from common.csv_cells import plain
    from common.errors import UserError

    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: scores file not found") from None
    scores: dict[str, float] = {}
    with handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"txn_id", "fraud_probability"} <= set(reader.fieldnames):
            raise UserError(f"{path}: expected columns txn_id,fraud_probability")
        for row in reader:
            try:
                value = float(row["fraud_probability"])
            except (TypeError, ValueError):
                raise UserError(f"{path}: line {reader.line_num}: bad fraud_probability") from None
            if not math.isfinite(value):
                raise UserError(f"{path}: line {reader.line_num}: fraud_probability is not finite")
            scores[plain(row["txn_id"])] = value  # scores.csv escapes formula-like ids
    return scores


def evaluate_scores(
    data: str | Path, scores_path: str | Path, mapping=None, out_dir: str | Path | None = None
) -> dict[str, float]:
    """`fedsite finance evaluate`: metrics of a scores CSV against the labelled transactions CSV
    (`mapping`: a data_adapters.column_mapping.ColumnMapping for an export with other names).
    `out_dir`: also write pr_curve.png and thresholds.csv there (threshold_report.py) and print the table."""
    from common.errors import UserError
    from data_adapters.transactions import read_transactions

    txns, rejects = read_transactions(data, require_label=True, mapping=mapping)
    scores = read_scores(scores_path)
    have = np.array([t in scores for t in txns.txn_id], dtype=bool)
    if not have.any():
        raise UserError(f"{scores_path}: no txn_id matches a row of {data}")
    p = np.array([scores[t] for t in txns.txn_id[have]])
    typ = np.where(txns.typology[have] == "", "none", txns.typology[have])
    out = fraud_metrics(txns.label[have], p, typ if (typ != "none").any() else None)
    out["rows_unscored"] = float((~have).sum())
    out["rows_rejected"] = float(len(rejects))
    if out_dir is not None:
        from common.progress import log
        from verticals.finance.threshold_report import format_table, write_report

        log(format_table(write_report(out_dir, txns.label[have], p, txns.ts[have])))
    return out
