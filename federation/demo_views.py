"""What each user of the demo's models looks at, made from a held-out synthetic site (demo.py).

- Banks: the federated fraud model scores the held-out transactions; `finance evaluate --out` gives
  the PR curve and the threshold table (alerts per day, precision, recall) an analyst team picks from.
- Factories: the federated defect model inspects the held-out test parts; `manufacturing evaluate
  --out` gives escapes / false rejects and annotated images, shown as one contact sheet.
Each view returns {"figures": [...], ...report fields} for demo_report.py.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any


def finance_view(heldout: Path, model: Path, out: Path) -> dict[str, Any]:
    """PR curve + threshold table of the federated fraud model on a held-out bank."""
    from verticals.finance.api import score_csv
    from verticals.finance.evaluate import evaluate_scores

    data = heldout / "transactions.csv"
    scores = out / "scores.csv"
    score_csv(data, model, scores)
    metrics = evaluate_scores(data, scores, out_dir=out)
    with open(out / "thresholds.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    return {"figures": [out / "pr_curve.png"], "thresholds": table, "heldout_auprc": metrics["auprc"]}


def manufacturing_view(heldout: Path, model: Path, out: Path) -> dict[str, Any]:
    """Contact sheet of the federated defect model's annotated held-out test parts."""
    import cv2

    from common.atomic import write_bytes
    from verticals.manufacturing.annotate import contact_sheet, legend, thumbnail
    from verticals.manufacturing.api import evaluate_model

    metrics = evaluate_model(heldout, model, backend="torch", baseline=False, out_dir=out)
    tiles = []
    for path in sorted((out / "annotated").glob("*.png")):
        pair = cv2.imread(str(path))
        annotated = pair[:, (pair.shape[1] + 4) // 2 :]  # right half: the annotated image (left: original)
        tiles.append((path.stem, thumbnail(annotated, 128)))
    ok, png = cv2.imencode(
        ".png", contact_sheet(tiles, columns=8, size=128, key=legend(metrics["confusion"]["threshold"]))
    )
    sheet = write_bytes(out / "contact_sheet.png", png.tobytes())
    return {"figures": [sheet, out / "roc.png"], "confusion": metrics["confusion"]}


VIEWS: dict[str, Callable[[Path, Path, Path], dict[str, Any]]] = {
    "finance": finance_view,
    "manufacturing": manufacturing_view,
}
