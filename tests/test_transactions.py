"""The transactions adapter and generator: validation with line numbers, UTC, chunking, typologies."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from common.errors import UserError
from data_adapters.synth.transactions import TYPOLOGIES, write
from data_adapters.transactions import (
    account_sequences,
    build_multigraph,
    parse_timestamp,
    read_transactions,
    time_order,
)

HEADER = "txn_id,timestamp,src_account,dst_account,amount,currency,channel,is_fraud,note\n"
ROWS = [
    "t1,2026-03-01T09:30:00Z,a,b,10.5,EUR,card,0,x",  # line 2 ok
    "t2,2026-03-01T10:30:00+01:00,b,c,20,EUR,transfer,1,y",  # line 3 ok: same instant as t1
    "t3,not-a-time,a,c,5,EUR,card,0,",  # line 4 bad timestamp
    "t4,2026-03-01T09:30:00,a,c,5,EUR,card,0,",  # line 5 no timezone
    "t5,1772357400,a,c,-3,EUR,card,0,",  # line 6 amount <= 0
    "t1,1772357400,a,c,3,EUR,card,0,",  # line 7 duplicate id
    "t7,1772357400,,c,3,EUR,card,0,",  # line 8 missing payer
    "t8,1772357400,a,c,abc,EUR,card,0,",  # line 9 amount not a number
    "t9,1772357400,a,c,3,EURO,card,0,",  # line 10 bad currency
    "t10,1772357400,a,c,3,EUR,card,2,",  # line 11 bad label
    "t11,1772357400,a,c,3",  # line 12 wrong field count
    "t12,1772357400.5,c,a,7,,,0,z",  # line 13 ok: unix seconds, optional fields empty
]


@pytest.fixture
def messy_csv(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n", encoding="utf-8")
    return path


def test_every_row_is_kept_or_rejected_with_line_and_reason(messy_csv):
    txns, rejects = read_transactions(messy_csv)
    assert list(txns.txn_id) == ["t1", "t2", "t12"]
    assert len(txns) + len(rejects) == txns.rows_read == len(ROWS)
    by_line = {r.line: r.reason for r in rejects}
    assert set(by_line) == set(range(4, 13))
    assert "bad timestamp" in by_line[4] and "no timezone" in by_line[5]
    assert "not > 0" in by_line[6] and "duplicate txn_id (first at line 2)" in by_line[7]
    assert "missing src_account" in by_line[8] and "not a number" in by_line[9]
    assert "ISO 4217" in by_line[10] and "is_fraud" in by_line[11] and "fields" in by_line[12]
    assert [r.txn_id for r in rejects if r.line == 7] == ["t1"]
    # timestamps normalised to UTC: 10:30+01:00 is the same instant as 09:30Z
    assert txns.ts[0] == txns.ts[1] == parse_timestamp("1772357400")
    assert list(txns.label) == [0, 1, 0]


def test_chunked_reading_matches_one_pass(messy_csv):
    whole, rejects_whole = read_transactions(messy_csv)
    small, rejects_small = read_transactions(messy_csv, chunk_rows=2)
    assert list(whole.txn_id) == list(small.txn_id)
    assert [(r.line, r.reason) for r in rejects_whole] == [(r.line, r.reason) for r in rejects_small]


def test_labels_required_for_training(messy_csv, tmp_path):
    txns, rejects = read_transactions(messy_csv, require_label=True)
    assert len(txns) == 3
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("txn_id,timestamp,src_account,dst_account,amount\nx,1,a,b,1\n")
    with pytest.raises(UserError, match="is_fraud"):
        read_transactions(nolabel, require_label=True)


@pytest.mark.parametrize(
    "text, match",
    [("", "empty file"), ("txn_id,timestamp,amount\n", "missing column"), (HEADER + "t3,bad,a,c,5,,,0,\n", "no valid")],
)
def test_file_level_problems_are_one_line_user_errors(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        read_transactions(path)


def test_generator_records_typologies_and_differs_by_site(tmp_path):
    path = write(tmp_path / "s0", 400, 20, seed=3)
    txns, rejects = read_transactions(path, require_label=True)
    assert not rejects
    fraud = txns.label == 1
    assert 0.01 < fraud.mean() < 0.04
    assert set(txns.typology[fraud]) == set(TYPOLOGIES)
    assert set(txns.typology[~fraud]) == {"none"}
    assert np.all(np.diff(txns.ts) >= 0)
    again, _ = read_transactions(write(tmp_path / "again", 400, 20, seed=3))
    assert np.array_equal(again.amount, txns.amount)
    other, _ = read_transactions(write(tmp_path / "s2", 400, 20, seed=3, site=2, n_sites=3))
    mix = collections.Counter(txns.channel)
    mix_other = collections.Counter(other.channel)
    assert mix_other["mobile"] / len(other) > mix["mobile"] / len(txns)  # a different customer mix


def test_multigraph_keeps_parallel_edges_in_time_order(messy_csv):
    txns, _ = read_transactions(messy_csv)
    graph = build_multigraph(txns)
    assert graph.edge_index.shape == (2, 3) and graph.n_nodes == 3
    assert np.all(np.diff(graph.edge_time) >= 0)
    assert list(time_order(txns)) == [0, 1, 2]
    indptr, positions = account_sequences(graph)
    assert indptr[-1] == 6  # every edge appears under its payer and its payee


def test_reading_only_some_extra_columns(tmp_path):
    """Scoring converts only the model's columns; the others stay named, on both parsing paths."""
    header = "txn_id,timestamp,src_account,dst_account,amount,score,device,note\n"
    rows = [f"t{i},{1772357400 + i},a{i % 3},b{i % 5},{i + 1},{i * 0.5},d{i % 4},free text {i}" for i in range(40)]
    clean = tmp_path / "clean.csv"
    clean.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    quoted = tmp_path / "quoted.csv"  # a quote sends the file to the csv-module path
    quoted.write_text(header + "\n".join(rows[:-1] + [rows[-1] + ' "x"']) + "\n", encoding="utf-8")
    for path in (clean, quoted):
        every, _ = read_transactions(path)
        some, _ = read_transactions(path, extras=["device", "score"])
        assert some.extra_columns == every.extra_columns == ["score", "device", "note"]
        assert set(some.extras) == {"score", "device"}
        assert np.array_equal(some.extras["score"], every.extras["score"])
        assert list(some.extras["device"]) == list(every.extras["device"])
        assert list(some.txn_id) == list(every.txn_id)
