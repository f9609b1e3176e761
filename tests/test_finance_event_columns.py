"""The bank's columns inside the TCN's event sequences and the GNN's edges (event_columns > 0)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from finance_tiny import batch_scores

from common.cli import main
from common.config import resolve
from data_adapters.synth.transactions import write
from verticals.finance.columns import ColumnSpec, event_matrix, fit_events, infer_spec, nn_matrix
from verticals.finance.config import FinanceConfig
from verticals.finance.features import F_NBR, F_SEQ, AccountState, featurise
from verticals.finance.serve import load_service
from verticals.finance.task import model_from_config

TINY = ["--set", "history=8", "--set", "tcn_channels=8", "--set", "gnn_hidden=16", "--set", "head_hidden=32"]
TINY += ["--set", "epochs=2", "--set", "threads=1"]


def _extras(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "risk": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        "count": rng.poisson(3.0, n).astype(np.float64),
        "device": rng.choice(np.array(["ios", "android", "web"], dtype=object), n),
    }


def _stream(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, 86_400 * 3, n))
    src = np.array([f"a{i}" for i in rng.integers(0, 6, n)], dtype=object)
    dst = np.array([f"m{i}" for i in rng.integers(0, 4, n)], dtype=object)
    return ts, src, dst, rng.lognormal(3.0, 1.0, n), np.array(["card"] * n, dtype=object)


def test_projection_is_fitted_once_and_applied_alike():
    extras = _extras(300)
    spec = infer_spec(extras)
    nn = nn_matrix(spec, extras, 300)
    fitted = fit_events(spec, nn, 2)
    again = fit_events(infer_spec(extras), nn, 2)
    assert fitted.event_dim == 2 and np.allclose(fitted.event_components, again.event_components)
    restored = ColumnSpec.from_json(fitted.to_json())
    ev = event_matrix(restored, nn)
    assert ev.shape == (300, 2) and np.isfinite(ev).all()
    # the first component carries the most variance of the standardised columns
    assert ev[:, 0].var() >= ev[:, 1].var() > 0
    assert event_matrix(infer_spec(extras), nn) is None  # no projection fitted: events carry nothing


def test_events_carry_their_columns_causally_and_chunking_changes_nothing():
    n, k = 80, 2
    ts, src, dst, amount, channel = _stream(n)
    extras = _extras(n, seed=1)
    spec = fit_events(infer_spec(extras), nn_matrix(infer_spec(extras), extras, n), k)
    ev = event_matrix(spec, nn_matrix(spec, extras, n))
    whole = featurise(AccountState(8, event_dim=k), ts, src, dst, amount, channel, ev)
    assert whole.seq.shape == (n, 2, 8, F_SEQ + k) and whole.nbr.shape == (n, 2, 8, F_NBR + k)
    # the newest slot of the payer's history is this transaction's event: it carries its columns,
    # and the slot before it carries the columns of the payer's previous transaction
    assert np.allclose(whole.seq[:, 0, -1, F_SEQ - 1 : F_SEQ - 1 + k], ev)
    assert np.allclose(whole.nbr[:, 0, -1, F_NBR - 1 : F_NBR - 1 + k], ev)
    assert (whole.seq[..., -1] <= 1).all() and (whole.nbr[..., -1] <= 1).all()  # `valid` is still last
    last = {}
    for i in range(n):
        if src[i] in last and (dst[last[src[i]]] != src[i]):
            assert np.allclose(whole.seq[i, 0, -2, F_SEQ - 1 : F_SEQ - 1 + k], ev[last[src[i]]])
        last[src[i]] = i
    one_by_one = AccountState(8, event_dim=k)
    parts = [featurise(one_by_one, ts[i : i + 1], src[i : i + 1], dst[i : i + 1], amount[i : i + 1],
                       channel[i : i + 1], ev[i : i + 1]) for i in range(n)]  # fmt: skip
    assert np.array_equal(np.concatenate([p.seq for p in parts]), whole.seq)
    assert np.array_equal(np.concatenate([p.nbr for p in parts]), whole.nbr)
    changed = ev.copy()
    changed[n // 2 :] += 5.0  # later rows' columns change no earlier row's features
    later = featurise(AccountState(8, event_dim=k), ts, src, dst, amount, channel, changed)
    assert np.array_equal(later.seq[: n // 2], whole.seq[: n // 2])
    with pytest.raises(ValueError, match="carries 2 event columns"):
        featurise(AccountState(8, event_dim=k), ts, src, dst, amount, channel, None)


def test_the_network_reads_event_columns(tmp_path):
    extras = _extras(200)
    spec = fit_events(infer_spec(extras), nn_matrix(infer_spec(extras), extras, 200), 3)
    cfg = FinanceConfig(history=8, tcn_channels=8, gnn_hidden=8, head_hidden=16, feature_spec=spec.to_json())
    model = model_from_config(cfg).eval()
    ts, src, dst, amount, channel = _stream(200)
    nn = nn_matrix(spec, extras, 200)
    f = featurise(AccountState(8, event_dim=3), ts, src, dst, amount, channel, event_matrix(spec, nn))
    txn = np.concatenate([f.txn, nn], 1)
    inputs = [torch.from_numpy(a) for a in (f.seq, f.nbr, txn)]
    with torch.no_grad():
        base = model(*inputs)
        moved = [t.clone() for t in inputs]
        moved[0][..., :-1, F_SEQ - 1 : F_SEQ + 2] += 3.0  # earlier events' columns only (TCN)
        assert not torch.allclose(model(*moved), base)
        moved = [t.clone() for t in inputs]
        moved[1][..., F_NBR - 1 : F_NBR + 2] += 3.0  # neighbour edges' columns only (GNN)
        assert not torch.allclose(model(*moved), base)


def test_trained_with_event_columns_batch_and_service_agree(tmp_path):
    from tests.test_finance_columns import _with_extras

    data = tmp_path / "bank.csv"
    _with_extras(write(tmp_path / "synth", 80, 6, seed=2), data)
    model = tmp_path / "model"
    cmd = ["finance", "train", "--data", str(data), "--out", str(model), *TINY, "--set", "event_columns=3"]
    assert main([*cmd, "--set", "features.categorical=mcc"]) == 0
    spec = ColumnSpec.from_json(resolve(FinanceConfig, model / "config.toml", section="finance").feature_spec)
    assert spec.event_dim == 3 and (model / "model.onnx").is_file()
    rows = list(csv.DictReader(open(data)))[:30]
    expected = batch_scores(rows, model, tmp_path)
    service = load_service(model)
    got = [service.score({**r, "risk_score": r["risk_score"] or None}) for r in rows]
    assert np.allclose([g["fraud_probability"] for g in got], [expected[r["txn_id"]] for r in rows], atol=1e-5)
