"""The analyst's aggregates as a stream (aggregates.py): one pass == row by row == a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from finance_tiny import TINY

from verticals.finance.aggregates import NAMES, AnalystState, SortedKeys, aggregates


def _stream(n: int = 700, seed: int = 0):
    """A time-ordered stream over 20 days: a few busy payees (merchants), many cards, repeated pairs."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, 20 * 86_400, n)).round() + 1.7e9
    ts[n // 2 : n // 2 + 4] = ts[n // 2]  # equal timestamps: input order decides
    src = np.array([f"c{i}" for i in rng.zipf(1.6, n) % 60], dtype=object)
    dst = np.array([f"m{i}" for i in rng.integers(0, 4, n)], dtype=object)
    amount = np.exp(rng.normal(3, 1.2, n)).round(2) + 0.01
    return ts, src, dst, amount


def _reference(ts, src, dst, amount) -> np.ndarray:
    """Each row from the earlier rows alone, by a plain loop (the definitions in aggregates.py's docstring)."""
    out = np.full((len(ts), len(NAMES)), np.nan)
    for i in range(len(ts)):
        row = []
        for mine, other in ((src, dst), (dst, src)):
            past = [j for j in range(i) if mine[j] == mine[i]]
            t = ts[past]
            la = np.log1p(amount[past])
            row += [np.sum(t >= ts[i] - w) for w in (3600.0, 86_400.0, 604_800.0)]
            row.append(len(past))
            row.append(np.log1p(ts[i] - t[-1]) if past else np.nan)
            mean, std = (la.mean(), la.std()) if past else (np.nan, np.nan)
            x = np.log1p(amount[i])
            row.append((x - mean) / max(std, 0.1) if len(past) > 1 else np.nan)
            row.append(x - mean if past else np.nan)
            row.append(float(all(other[j] != other[i] for j in past)))
            row.append(np.log1p(len({other[j] for j in past})))
            row.append(np.log1p(ts[i] - t[0]) if past else 0.0)
        out[i] = row + [np.log1p(amount[i]), (ts[i] % 86_400) / 3600]
    return out


def test_one_pass_matches_a_brute_force_reference():
    ts, src, dst, amount = _stream(400)
    np.testing.assert_allclose(aggregates(ts, src, dst, amount), _reference(ts, src, dst, amount), rtol=1e-5, atol=1e-5)


def test_row_by_row_and_chunks_equal_one_pass(monkeypatch):
    """The HTTP service (one row a call) and `score` (chunks) compute what training computed."""
    monkeypatch.setattr(SortedKeys, "MERGE_MIN", 8)  # the levels merge and old events are dropped often
    ts, src, dst, amount = _stream(700)
    whole = aggregates(ts, src, dst, amount, chunk=10**9)
    state = AnalystState()
    single = np.concatenate(
        [state.advance(ts[i : i + 1], src[i : i + 1], dst[i : i + 1], amount[i : i + 1]) for i in range(300)]
    )
    restored = AnalystState.from_arrays(state.arrays())  # the service's snapshot, restarted
    rest = aggregates(ts[300:], src[300:], dst[300:], amount[300:], state=restored, chunk=7)
    np.testing.assert_allclose(np.concatenate([single, rest]), whole, rtol=1e-6, atol=1e-6)
    assert len(state.roles[1].window) < 300  # the payees' window forgot events older than 7 days


def test_a_row_never_sees_later_rows():
    ts, src, dst, amount = _stream(500)
    cut = 250
    prefix = aggregates(ts[:cut], src[:cut], dst[:cut], amount[:cut])
    changed_src, changed_amount = src.copy(), amount.copy()
    changed_src[cut:] = dst[cut:]  # rewire every later row ...
    changed_amount[cut:] *= 9.0  # ... and change its amount
    full = aggregates(ts, changed_src, dst, changed_amount, chunk=64)
    np.testing.assert_array_equal(full[:cut], prefix)
    assert full[cut:, NAMES.index("payee_count_7d")].max() > 0  # and the past is used


@pytest.mark.parametrize("rows", [0, 1])
def test_empty_and_single_chunks(rows):
    ts, src, dst, amount = _stream(rows + 1)
    out = aggregates(ts[:rows], src[:rows], dst[:rows], amount[:rows])
    assert out.shape == (rows, len(NAMES)) and out.dtype == np.float32


def test_a_head_that_reads_them_scores_alike_in_batch_and_row_by_row(tmp_path):
    """`--set head_aggregates=true`: `score` == one row a call (with a snapshot restart) == `--explain`."""
    import csv

    from common.cli import main
    from data_adapters.transactions import time_order
    from verticals.finance.data import read_for
    from verticals.finance.head import load_head
    from verticals.finance.infer import load_scorer

    synth = ["finance", "synth", "--out", str(tmp_path / "data"), "--accounts", "40", "--days", "3"]
    assert main(synth) == 0
    data, model = tmp_path / "data" / "transactions.csv", tmp_path / "model"
    assert (
        main(["finance", "train", "--data", str(data), "--out", str(model), *TINY, "--set", "head_aggregates=true"])
        == 0
    )
    assert load_head(model).aggregates
    out = tmp_path / "scores.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(model), "--out", str(out)]) == 0
    batch = {r["txn_id"]: float(r["fraud_probability"]) for r in csv.DictReader(out.open())}
    scorer = load_scorer(model)
    txns, _ = read_for(scorer.cfg, data)
    txns = txns.take(time_order(txns)[:100])
    cols = (txns.ts, txns.src, txns.dst, txns.amount, txns.channel)
    got = [scorer.score(*(c[i : i + 1] for c in cols))[0] for i in range(40)]
    scorer.analyst = AnalystState.from_arrays(scorer.analyst.arrays())  # the service restarted from its snapshot
    probs, why = scorer.score_explained(*(c[40:] for c in cols))
    got += list(probs)
    assert len(why) == 60 and all(len(r) == 3 for r in why)
    np.testing.assert_allclose(got, [batch[t] for t in txns.txn_id], atol=1e-5)
