"""`label_history`: the known-fraud history the head reads, causal in training, frozen when scoring.

The table's counts are checked against a brute-force count; a trained model scores a file without
ever reading its is_fraud column, alike in batch and one row at a time; `update` refreshes the
table; federation trains without it.
"""

from __future__ import annotations

import csv

import numpy as np
from finance_tiny import TINY, batch_scores

from common.cli import main
from verticals.finance.label_history import LabelTable, training_features


def _rows(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.random(n) * 10 * 86_400.0) + 1e9
    src, dst = rng.integers(0, 30, n).astype(str), rng.integers(0, 4, n).astype(str)
    return ts, src, dst, (rng.random(n) < 0.2).astype(np.int8)


def test_counts_are_those_of_earlier_labels_and_never_a_row_own_or_later_label():
    ts, src, dst, label = _rows()
    table = LabelTable.of(ts, src, dst, label)
    cutoff = ts - 86_400.0
    got = table.query(ts, cutoff, src, dst)
    for i in (17, 200, 399):
        for c, same in ((0, src == src[i]), (4, dst == dst[i]), (8, (src == src[i]) & (dst == dst[i]))):
            seen = same & (np.floor(ts - table.origin) < np.floor(cutoff[i] - table.origin))
            assert (
                round(float(np.expm1(got[i, c]))) == seen.sum()
                and round(float(np.expm1(got[i, c + 1]))) == label[seen].sum()
            )
            frauds = ts[seen & (label == 1)]
            since = np.log1p(ts[i] - frauds.max()) if len(frauds) else -1.0
            np.testing.assert_allclose(got[i, c + 3], since, rtol=1e-5)
    # causal: flipping the labels of the later half changes no count of the earlier half
    flipped = label.copy()
    flipped[200:] = 1 - flipped[200:]
    a, b = training_features(ts, src, dst, label, 2.0, 0), training_features(ts, src, dst, flipped, 2.0, 0)
    counts = [c for c in range(a.shape[1]) if c % 4 != 2]  # the rate's prior is one constant: the table's rate
    np.testing.assert_array_equal(a[:200, counts], b[:200, counts])
    assert not np.array_equal(a[200:], b[200:])


def test_accounts_are_matched_whole_unknown_ones_count_zero_and_old_tables_load_alike(tmp_path):
    """The table numbers accounts by binary search over their names: a scored account whose name
    starts with a known one ("card12" vs "card1") is not that account, an account never labelled
    counts nothing, and a table saved one string per row (before the numbering) reads the same."""
    ts, src, dst, label = _rows()
    src = np.char.add("card", src)  # card0 .. card29
    table = LabelTable.of(ts, src, dst, label)
    probe = np.array(["card1", "card1x", "card100", "nobody"])
    got = table.scoring(np.full(4, ts[-1] + 1), probe, np.array(["0", "0", "0", "9"]))
    assert np.expm1(got[0, 0]) == (src == "card1").sum() > 0
    assert (got[1:, 0] == 0).all() and (got[1:, 3] == -1.0).all() and (got[3, 4] == 0)
    np.testing.assert_allclose(got[1:, 2], table.rate)  # no label known: the table's rate, the prior
    assert round(float(np.expm1(got[0, 8]))) == ((src == "card1") & (dst == "0")).sum() > 0  # the pair
    np.savez_compressed(tmp_path / "label_history.npz", ts=ts, src=src, dst=dst, label=label)
    np.testing.assert_array_equal(LabelTable.load(tmp_path).scoring(ts, src, dst), table.scoring(ts, src, dst))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "label_history.npz").write_bytes(table.to_bytes())
    np.testing.assert_array_equal(LabelTable.load(tmp_path / "new").query(ts, ts - 3600, src, dst),
                                  table.query(ts, ts - 3600, src, dst))  # fmt: skip


def test_a_model_scores_without_the_file_labels_alike_in_batch_and_online_and_update_refreshes(
    tmp_path, capsys, monkeypatch
):
    from verticals.finance import api
    from verticals.finance.data import load_split
    from verticals.finance.head import load_head
    from verticals.finance.serve import load_service
    from verticals.finance.task import FinanceTask

    synth = ["finance", "synth", "--out", str(tmp_path / "data"), "--accounts", "30", "--days", "3"]
    assert main(synth) == 0
    data, model = tmp_path / "data" / "transactions.csv", tmp_path / "model"
    train = ["finance", "train", "--data", str(data), "--out", str(model), *TINY, "--set", "label_history=true"]
    assert main(train) == 0
    assert load_head(model).labels and len(LabelTable.load(model).ts) > 0
    rows = list(csv.DictReader(data.open()))
    flipped = [{**r, "is_fraud": str(1 - int(r["is_fraud"]))} for r in rows]  # a scored file's labels: never read
    batch = batch_scores(flipped, model, tmp_path)
    service = load_service(model)
    got = [service.score(r)["fraud_probability"] for r in rows[:40]]  # one request a row, the true labels
    np.testing.assert_allclose(got, [batch[r["txn_id"]] for r in rows[:40]], atol=1e-5)
    # update: the new model's table holds the old labels and the newly labelled rows it tuned on
    monkeypatch.setattr(api, "export_bytes", lambda *a: {})  # the ONNX export (tested elsewhere) is half the time
    updated = tmp_path / "updated"
    api.update_model(model, data, updated, force=True)
    assert len(LabelTable.load(updated).ts) > len(LabelTable.load(model).ts)
    # federation: the Task trains the network alone; the table is never read, a note says so
    from common.config import resolve
    from verticals.finance import task as finance_task
    from verticals.finance.config import FinanceConfig

    monkeypatch.setattr(finance_task, "_LABEL_NOTE_LOGGED", False)  # said once per process: maybe already said

    site = FinanceTask().load_data(
        resolve(FinanceConfig, None, ["label_history=true"], section="finance"), data, "train"
    )
    assert "label_history is off here" in capsys.readouterr().err
    assert site.tree.shape[1] == load_split(FinanceConfig(), data, "train").tree.shape[1]
