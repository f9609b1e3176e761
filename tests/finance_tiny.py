"""The tiny finance network the tests train (seconds, not minutes) and the one shared model of it.

Several test files only read a trained model (score, serve, reject bad rows); they share one model
trained once per session (conftest.tiny_finance) instead of each training its own.
"""

from __future__ import annotations

import csv
from pathlib import Path

TINY = ["--set", "history=8", "--set", "tcn_channels=8", "--set", "tcn_levels=2", "--set", "gnn_hidden=16"]
TINY += ["--set", "head_hidden=32", "--set", "epochs=1", "--set", "threads=1"]


def train_tiny(root: Path, accounts: int = 80, days: int = 5) -> tuple[Path, Path]:
    """Synthesize `accounts` x `days` under ROOT/data and train the tiny model into ROOT/model."""
    from common.cli import main

    synth = ["finance", "synth", "--out", str(root / "data"), "--accounts", str(accounts), "--days", str(days)]
    assert main(synth) == 0
    data = root / "data" / "transactions.csv"
    assert main(["finance", "train", "--data", str(data), "--out", str(root / "model"), *TINY]) == 0
    return data, root / "model"


def batch_scores(rows: list[dict[str, str]], model: Path, folder: Path) -> dict[str, float]:
    """`finance score` on these CSV rows (written to FOLDER/head.csv): {txn_id: probability}."""
    from common.cli import main

    batch, out = folder / "head.csv", folder / "scores.csv"
    with open(batch, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["finance", "score", "--data", str(batch), "--model", str(model), "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        return {r["txn_id"]: float(r["fraud_probability"]) for r in csv.DictReader(handle)}
