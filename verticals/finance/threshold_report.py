"""`finance evaluate --out DIR`: what an analyst team needs to pick its operating point.

A single AUPRC does not tell a team where to set the alert threshold. The threshold table does: for
thresholds at a range of alert budgets (the top 0.1 % ... 20 % of scores) it gives alerts per day
(what the team must review), precision (the share of alerts that are fraud) and recall (the share of
fraud caught). pr_curve.png draws the whole precision-recall curve with those points marked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from common.atomic import atomic_path, write_csv

ALERT_SHARES = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
COLUMNS = ["threshold", "alerts_per_day", "precision", "recall"]


def threshold_table(y: np.ndarray, p: np.ndarray, ts: np.ndarray) -> list[dict[str, float]]:
    """One row per distinct threshold at the ALERT_SHARES budgets (flag when p >= threshold)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    if len(p) == 0:
        return []
    days = max((float(np.max(ts)) - float(np.min(ts))) / 86_400.0, 1.0)
    ranked = np.sort(p)[::-1]
    rows, seen = [], set()
    for share in ALERT_SHARES:
        threshold = float(ranked[min(max(math.ceil(share * len(p)) - 1, 0), len(p) - 1)])
        if threshold in seen:
            continue
        seen.add(threshold)
        flagged = p >= threshold
        caught = int((flagged & (y == 1)).sum())
        rows.append(
            {
                "threshold": threshold,
                "alerts_per_day": float(flagged.sum()) / days,
                "precision": caught / max(int(flagged.sum()), 1),
                "recall": caught / y.sum() if y.sum() else 0.0,
            }
        )
    return rows


def format_table(rows: list[dict[str, float]]) -> str:
    """The table as aligned text (printed by `finance evaluate --out`)."""
    lines = [f"{'threshold':>10} {'alerts/day':>10} {'precision':>9} {'recall':>7}"]
    for r in rows:
        lines.append(f"{r['threshold']:>10.4g} {r['alerts_per_day']:>10.1f} {r['precision']:>9.3f} {r['recall']:>7.3f}")
    return "\n".join(lines)


def plot_pr(path: str | Path, y: np.ndarray, p: np.ndarray, rows: list[dict[str, float]]) -> Path:
    """pr_curve.png: precision against recall, the table's thresholds marked with alerts/day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if 0 < int(np.sum(y)) < len(y):
        precision, recall, _ = precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", color="k", label=f"AUPRC {average_precision_score(y, p):.3f}")
    for r in rows:
        ax.plot(r["recall"], r["precision"], "o", color="tab:red", ms=4)
        ax.annotate(
            f"{r['alerts_per_day']:.0f}/day",
            (r["recall"], r["precision"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set(
        xlabel="recall (share of fraud caught)",
        ylabel="precision (share of alerts that are fraud)",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
        title="precision-recall (points: alert budgets)",
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, y: np.ndarray, p: np.ndarray, ts: np.ndarray) -> list[dict[str, float]]:
    """DIR/pr_curve.png and DIR/thresholds.csv; returns the table's rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = threshold_table(y, p, ts)
    write_csv(out_dir / "thresholds.csv", COLUMNS, ([f"{r[c]:.6g}" for c in COLUMNS] for r in rows))
    plot_pr(out_dir / "pr_curve.png", y, p, rows)
    return rows
