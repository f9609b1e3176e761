"""Training at scale (issue 15 item 4): stored windows equal gathered ones; the row caps apply and say so."""

from __future__ import annotations

import numpy as np
import pytest

from common.progress import set_quiet
from data_adapters.synth.transactions import write
from data_adapters.transactions import read_transactions, time_order
from verticals.finance.config import FinanceConfig
from verticals.finance.data import featurise_all, load_dataset
from verticals.finance.features import AccountState, StoredFeatures
from verticals.finance.head import fit_head
from verticals.finance.model import FraudNet
from verticals.finance.train import fit

CFG = FinanceConfig(history=8, tcn_channels=8, gnn_hidden=16, head_hidden=32, epochs=2, chunk_rows=97)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return write(tmp_path_factory.mktemp("scale"), 120, 8, seed=3)


def test_stored_windows_equal_gathered_windows(csv_path):
    """featurise_all's StoredFeatures give, for any rows, exactly the arrays a gathering state gives."""
    txns, _ = read_transactions(csv_path)
    order = time_order(txns)[::-1].copy()
    copied = txns.take(order)
    txns.reorder(order)  # in place, one column at a time: the same rows as take
    for name in ("txn_id", "ts", "src", "dst", "amount", "channel", "label"):
        np.testing.assert_array_equal(getattr(txns, name), getattr(copied, name))
    txns.reorder(np.argsort(txns.ts, kind="stable"))
    stored = featurise_all(txns, CFG)
    gathered = featurise_all(txns, CFG, state=AccountState(CFG.history, store_rows=64))  # compacts as it goes
    assert isinstance(stored, StoredFeatures) and len(stored) == len(txns) > 500
    rows = np.random.default_rng(0).choice(len(txns), 300, replace=False)
    for index in (rows, slice(100, 400)):
        a, b = stored.rows(index), gathered.rows(index)
        for name in ("seq", "nbr", "txn"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(stored.take(rows).rows(slice(None)).nbr, gathered.nbr[rows])


def test_row_caps_apply_and_are_logged(csv_path, capsys):
    """network_rows_per_epoch and head_max_rows sample when the data is larger, and log that they do."""
    set_quiet(False)
    data = load_dataset(csv_path, CFG)
    n = len(data)
    capped = FinanceConfig(**{**CFG.__dict__, "network_rows_per_epoch": 200})
    metrics = fit(FraudNet(history=8, tcn_channels=8, gnn_hidden=16, head_hidden=32), data, capped)
    assert metrics["rows_seen"] == 2 * 200
    assert f"network_rows_per_epoch = 200: each of the 2 epochs trains on a fresh random 200 of the {n}" in (
        capsys.readouterr().err
    )
    uncapped = fit(FraudNet(history=8, tcn_channels=8, gnn_hidden=16, head_hidden=32), data, CFG)
    assert uncapped["rows_seen"] == 2 * n
    fraud = int(data.label.sum())
    assert fraud > 0
    head = fit_head(data.features, data.tree, data.label, data.spec, None, max_rows=fraud + 300)
    err = capsys.readouterr().err
    assert f"head_max_rows = {fraud + 300}: the tree head fits all {fraud} fraud rows" in err
    assert head.model.n_features_in_ > 0
    fitted_rows = int(err.split("fitting the boosted-tree head on ")[1].split(" rows")[0])
    assert fraud + 200 < fitted_rows < fraud + 400  # every fraud row, about 300 legitimate ones
    probs = head.predict(data.features, data.tree, None, chunk=123)  # chunked prediction covers every row
    assert probs.shape == (n,) and np.isfinite(probs).all()
