"""`manufacturing evaluate --out DIR`: the pictures and counts a quality engineer acts on.

- roc.png: the image-level ROC (good vs defective parts) of the model, and of the golden-template
  baseline when the model directory has one, with the model's operating point marked.
- confusion.json: at the model's own threshold (the one the line runs), escapes (defective parts
  passed as OK: the costly error), false rejects (good parts scrapped or re-inspected), and the
  correct decisions, with the rates an engineer quotes.
- annotated/<test image>.png: the original test image beside the annotated one (heat map, defect
  boxes, OK/NG banner), so a reviewer sees what the model saw and what it said side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from common.atomic import atomic_path, write_bytes, write_text

from .annotate import annotate
from .config import InspectConfig
from .data import InspectionData
from .postprocess import decide


def confusion(labels: np.ndarray, defective: np.ndarray, threshold: float) -> dict[str, float]:
    """Counts at the decision threshold: escapes, false rejects, true rejects, true accepts, rates."""
    labels, defective = np.asarray(labels).astype(bool), np.asarray(defective).astype(bool)
    escapes = int((labels & ~defective).sum())
    false_rejects = int((~labels & defective).sum())
    return {
        "threshold": float(threshold),
        "escapes": escapes,
        "false_rejects": false_rejects,
        "true_rejects": int((labels & defective).sum()),
        "true_accepts": int((~labels & ~defective).sum()),
        "n_defective": int(labels.sum()),
        "n_good": int((~labels).sum()),
        "escape_rate": escapes / max(int(labels.sum()), 1),
        "false_reject_rate": false_rejects / max(int((~labels).sum()), 1),
    }


def plot_roc(path: Path, labels: np.ndarray, curves: dict[str, np.ndarray], point: tuple[float, float]) -> None:
    """roc.png: one ROC per inspector (name -> image scores), the model's operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 4.2))
    for name, scores in curves.items():
        if 0 < labels.sum() < len(labels):
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(labels, scores):.3f})")
    ax.plot(*point, "o", color="tab:red", label="model threshold")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false reject rate (good parts flagged)", ylabel="detection rate (defects caught)")
    ax.set(title="image-level ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def write_report(
    out_dir: str | Path,
    data: InspectionData,
    scores: np.ndarray,
    logits: np.ndarray,
    thresholds: tuple[float, float],
    cfg: InspectConfig,
    baseline_scores: np.ndarray | None = None,
) -> dict[str, float]:
    """DIR/roc.png, DIR/confusion.json, DIR/annotated/*.png; returns the confusion counts."""
    out_dir = Path(out_dir)
    (out_dir / "annotated").mkdir(parents=True, exist_ok=True)
    verdicts = [decide(lg, float(s), thresholds, cfg) for s, lg in zip(scores, logits)]
    defective = np.array([v.is_defective for v in verdicts], dtype=bool)
    counts = confusion(data.labels, defective, thresholds[0])
    write_text(out_dir / "confusion.json", json.dumps(counts, indent=2) + "\n")
    curves = {"model": scores} | ({"golden template": baseline_scores} if baseline_scores is not None else {})
    plot_roc(out_dir / "roc.png", data.labels, curves, (counts["false_reject_rate"], 1 - counts["escape_rate"]))
    for i, verdict in enumerate(verdicts):
        original = cv2.cvtColor(data.images[i], cv2.COLOR_RGB2BGR)
        pair = np.hstack(
            [
                original,
                np.full((original.shape[0], 4, 3), 255, np.uint8),
                annotate(data.images[i], verdict, thresholds[0]),
            ]
        )
        name = (data.names[i] if i < len(data.names) else f"{i:04d}").rsplit(".", 1)[0].replace("/", "_")
        ok, png = cv2.imencode(".png", pair)
        write_bytes(out_dir / "annotated" / f"{name}.png", png.tobytes())
    return counts
