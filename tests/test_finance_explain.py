"""Finance outputs for people: held-out metrics at training, PR curve + threshold table, score reasons."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from finance_tiny import TINY

from common.cli import main
from data_adapters.transactions import read_transactions
from verticals.finance.columns import ColumnSpec
from verticals.finance.explain import group_names, reasons
from verticals.finance.features import F_NBR, F_SEQ, F_TXN, SEQ_NAMES, FeatureBatch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("finance_explain")
    synth = ["finance", "synth", "--out", str(root / "data"), "--accounts", "200", "--days", "12"]
    assert main([*synth, "--fraud-rate", "0.05"]) == 0
    data = root / "data" / "transactions.csv"
    return root, data


def test_train_reports_metrics_on_the_latest_period(trained, tmp_path, capsys):
    root, data = trained
    capsys.readouterr()
    assert main(["finance", "train", "--data", str(data), "--out", str(root / "model"), *TINY]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"holdout_auprc", "holdout_roc_auc", "holdout_recall_at_1pct_fpr"} <= set(metrics)
    txns, _ = read_transactions(data, require_label=True)
    cut = txns.ts.min() + 0.8 * (txns.ts.max() - txns.ts.min())
    assert metrics["holdout_n"] == float((txns.ts >= cut).sum())  # the latest 20 % by time, not by row
    meta = json.loads((root / "model" / "metadata.json").read_text())
    assert meta["rows_trained"] == int((txns.ts < cut).sum())


def test_evaluate_writes_pr_curve_and_threshold_table(trained, tmp_path, capsys):
    root, data = trained
    if not (root / "model").exists():
        assert main(["finance", "train", "--data", str(data), "--out", str(root / "model"), *TINY]) == 0
    scores = tmp_path / "scores.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(root / "model"), "--out", str(scores)]) == 0
    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["finance", "evaluate", "--data", str(data), "--scores", str(scores), "--out", str(report)]) == 0
    printed = capsys.readouterr()
    json.loads(printed.out)  # stdout stays JSON; the table is printed on stderr
    assert "alerts/day" in printed.err
    assert (report / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((report / "thresholds.csv").open()))
    assert list(rows[0]) == ["threshold", "alerts_per_day", "precision", "recall"] and len(rows) >= 3
    # recompute one row from the files themselves
    txns, _ = read_transactions(data, require_label=True)
    p = {r["txn_id"]: float(r["fraud_probability"]) for r in csv.DictReader(scores.open())}
    probs = np.array([p[t] for t in txns.txn_id])
    thr = float(rows[-1]["threshold"])
    flagged = probs >= thr
    days = (txns.ts.max() - txns.ts.min()) / 86400
    assert float(rows[-1]["alerts_per_day"]) == pytest.approx(flagged.sum() / days, rel=1e-4)
    assert float(rows[-1]["recall"]) == pytest.approx((flagged & (txns.label == 1)).sum() / txns.label.sum(), rel=1e-4)
    per_day = [float(r["alerts_per_day"]) for r in rows]
    assert per_day == sorted(per_day)  # larger budgets, lower thresholds, more alerts


def _batch(n: int) -> FeatureBatch:
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(n, 2, 4, F_SEQ)).astype(np.float32)
    nbr = rng.normal(size=(n, 2, 4, F_NBR)).astype(np.float32)
    seq[..., -1] = nbr[..., -1] = 1.0
    return FeatureBatch(seq, nbr, rng.normal(size=(n, F_TXN)).astype(np.float32))


def test_occlusion_names_the_group_the_score_depends_on():
    amount = SEQ_NAMES.index("log_amount")
    batch = _batch(5)
    batch.txn[:, amount] = [2.0, 0.0, 1.0, 3.0, 4.0]  # row 0 sits at the mean

    def predict(features, tree):  # depends on the payer's amount and, weakly, on payee neighbours
        return 0.3 * features.txn[:, amount] + 0.01 * features.nbr[:, 1, :, -1].sum(1)

    scores, why = reasons(predict, batch, np.zeros((5, 0), np.float32), ColumnSpec())
    assert [w[0][0] for w in why[1:]] == ["amount"] * 4
    assert why[4][0][1] == pytest.approx(0.6, rel=1e-5)  # 0.3 * (4 - mean 2)
    assert why[0][0] == ("payee neighbours", pytest.approx(0.04, rel=1e-5))  # amount at the mean: no effect
    assert np.allclose(scores, predict(batch, None)) and len(group_names(ColumnSpec())) == 4 + 6


def test_score_explain_reasons_follow_the_row(trained, tmp_path):
    root, data = trained
    if not (root / "model").exists():
        assert main(["finance", "train", "--data", str(data), "--out", str(root / "model"), *TINY]) == 0
    lines = data.read_text().splitlines()
    header = lines[0].split(",")
    row = len(lines) - 5  # late in the file: the accounts have history
    changed = dict(zip(header, lines[row].split(",")))
    changed["amount"] = str(round(float(changed["amount"]) * 500, 2))
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join([*lines[:row], ",".join(changed[h] for h in header), *lines[row + 1 :]]) + "\n")
    outs = []
    for name, source in (("a", data), ("b", edited)):
        out = tmp_path / name / "scores.csv"
        cmd = ["finance", "score", "--data", str(source), "--model", str(root / "model"), "--out", str(out)]
        assert main([*cmd, "--explain"]) == 0
        outs.append({r["txn_id"]: r for r in csv.DictReader(out.open())})
    plain = tmp_path / "plain.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(root / "model"), "--out", str(plain)]) == 0
    for r in csv.DictReader(plain.open()):  # --explain does not change the scores
        assert float(outs[0][r["txn_id"]]["fraud_probability"]) == pytest.approx(float(r["fraud_probability"]))
    txn = changed["txn_id"]
    before = [outs[0][txn][f"reason_{i}"] for i in (1, 2, 3)]
    after = [outs[1][txn][f"reason_{i}"] for i in (1, 2, 3)]
    assert all(before) and all(after)
    assert before != after
    assert any(r.startswith("amount ") for r in after)  # a 500x amount is among its top reasons


def test_one_spelling_sites_and_data_folder(tmp_path, capsys):
    """--sites as in every vertical (old --n-sites still accepted, with a warning); --data may be the folder."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main(["finance", "synth", "--out", str(a), "--accounts", "40", "--days", "4", "--site", "1", "--sites", "3"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(["finance", "synth", "--out", str(b), "--accounts", "40", "--days", "4", "--site", "1", "--n-sites", "3"])
        == 0
    )
    assert "deprecated" in capsys.readouterr().err
    assert (a / "transactions.csv").read_bytes() == (b / "transactions.csv").read_bytes()
    from verticals.finance.cli import _csv

    assert _csv(a) == a / "transactions.csv" and _csv(a / "transactions.csv") == a / "transactions.csv"
