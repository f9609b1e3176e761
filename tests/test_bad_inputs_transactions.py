"""Bad transactions CSVs (issue 18, Transactions): each class rejected per row or refused with one line.

Data is built by code: a small synthetic bank (`finance synth`), then copies with one bad row, byte or
header. The 1e20-amount case runs the real `finance score` twice and compares every other score.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.cli import main
from data_adapters import transaction_checks
from data_adapters.transactions import read_transactions, time_order
from verticals.finance.features import AccountState, featurise

HEADER = "txn_id,timestamp,src_account,dst_account,amount,currency,channel\n"


@pytest.fixture(scope="module")
def trained(tiny_finance):
    return tiny_finance


def _score(data, model, out) -> tuple[int, dict[str, str], list[dict[str, str]]]:
    code = main(["finance", "score", "--data", str(data), "--model", str(model), "--out", str(out)])
    scores = {r["txn_id"]: r["fraud_probability"] for r in csv.DictReader(out.open())}
    rejected = list(csv.DictReader((out.parent / "rejected.csv").open()))
    return code, scores, rejected


def _lines(data, n=150) -> list[str]:
    return data.read_text().splitlines(keepends=True)[: n + 1]


def test_an_amount_of_1e20_is_rejected_and_every_other_score_is_unchanged(trained, tmp_path):
    data, model = trained
    lines = _lines(data)
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "t.csv").write_text("".join(lines))
    fields = lines[40].rstrip("\n").split(",")
    fields[0], fields[4] = "huge-1", "1e20"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "t.csv").write_text("".join(lines[:41] + [",".join(fields) + "\n"] + lines[41:]))
    code0, clean, _ = _score(tmp_path / "clean" / "t.csv", model, tmp_path / "clean" / "s.csv")
    code1, scored, rejected = _score(tmp_path / "bad" / "t.csv", model, tmp_path / "bad" / "s.csv")
    assert code0 == 0 and code1 == 3
    assert [(r["txn_id"], r["line"]) for r in rejected] == [("huge-1", "42")]
    assert "above the plausible maximum" in rejected[0]["reason"]
    assert scored == clean  # bit-identical text: the row never reached the account state
    assert all(math.isfinite(float(v)) for v in scored.values())


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("timestamp", "1e300", "outside 1970-2100"),
        ("timestamp", "-99999999999", "outside 1970-2100"),
        ("timestamp", "2150-01-01T00:00:00Z", "outside 1970-2100"),
        ("timestamp", "1969-12-31T23:59:59Z", "outside 1970-2100"),
        ("amount", "inf", "not finite"),
        ("amount", "nan", "not finite"),
        ("amount", "1e13", "above the plausible maximum"),
        ("currency", "XYZ", "not an ISO 4217 code"),
        ("currency", "usd", "not an ISO 4217 code"),
    ],
)
def test_implausible_values_are_rejected_per_row(tmp_path, column, value, reason):
    rows = [["t1", "1700000000", "a", "b", "10.00", "EUR", "card"], ["t2", "1700000100", "b", "c", "5", "USD", "card"]]
    rows[1][HEADER.strip().split(",").index(column)] = value
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "".join(",".join(r) + "\n" for r in rows))
    txns, rejects = read_transactions(path)
    assert list(txns.txn_id) == ["t1"]
    assert [(r.txn_id, r.line) for r in rejects] == [("t2", 3)] and reason in rejects[0].reason


def test_a_sites_own_currency_list_and_amount_limit(tmp_path, monkeypatch):
    codes = tmp_path / "codes.txt"
    codes.write_text("EUR, PTS\n")
    path = tmp_path / "t.csv"
    path.write_text(
        HEADER + "t1,1700000000,a,b,10,PTS,card\nt2,1700000001,a,b,10,USD,card\nt3,1700000002,a,b,900,EUR,\n"
    )
    monkeypatch.setenv("FEDSITE_CURRENCIES", str(codes))
    monkeypatch.setenv("FEDSITE_MAX_AMOUNT", "500")
    txns, rejects = read_transactions(path)
    assert list(txns.txn_id) == ["t1"]
    assert ["not an FEDSITE_CURRENCIES code" in rejects[0].reason, "plausible maximum 500" in rejects[1].reason] == [
        True,
        True,
    ]
    codes.write_text("EURO\n")
    transaction_checks._limits.cache_clear()
    with pytest.raises(Exception, match="not a 3-letter code"):
        read_transactions(path)


def test_a_duplicated_header_is_refused_with_exit_2(tmp_path, trained, capsys):
    _, model = trained
    path = tmp_path / "t.csv"
    path.write_text("txn_id,timestamp,src_account,dst_account,amount,amount\nt1,1700000000,a,b,10,20\n")
    assert main(["finance", "score", "--data", str(path), "--model", str(model), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'amount' appears twice" in err[0] and "columns 5 and 6" in err[0]
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("fault", ["latin1", "oversized", "oversized_quoted"])
def test_one_unreadable_record_costs_one_row_not_the_file(trained, tmp_path, fault):
    data, model = trained
    lines = _lines(data, 60)
    clean = tmp_path / "clean.csv"
    clean.write_text("".join(lines))
    fields = lines[10].rstrip("\n").split(",")
    if fault == "latin1":
        bad_line = ",".join(fields).encode().replace(b"-a", b"-\xe9a", 1) + b"\n"
        reason = "not UTF-8 (byte 0xe9"
    else:
        fields[6] = ("x" * 140_000) if fault == "oversized" else '"' + "y" * 140_000 + '"'
        bad_line = (",".join(fields) + "\n").encode()
        reason = "field larger than field limit"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"".join(x.encode() for x in lines[:10]) + bad_line + b"".join(x.encode() for x in lines[11:]))
    _, clean_scores, _ = _score(clean, model, tmp_path / "c" / "s.csv")
    code, scores, rejected = _score(bad, model, tmp_path / "b" / "s.csv")
    assert code == 3
    assert [(r["line"], reason in r["reason"]) for r in rejected] == [("11", True)]
    assert len(scores) == len(clean_scores) - 1 and fields[0] not in scores


_amounts = st.one_of(
    st.floats(min_value=0.01, max_value=1e6).map(lambda x: f"{x:.2f}"),
    st.sampled_from(["1e20", "-5", "0", "inf", "-inf", "nan", "1e12", "1.000001e12", "abc", ""]),
)
_stamps = st.one_of(
    st.integers(1_600_000_000, 1_800_000_000).map(str),
    st.sampled_from(["1e300", "-99999999999", "4102444800", "0", "2020-01-01T00:00:00", "2020-01-01T00:00:00Z"]),
)
_currencies = st.sampled_from(["EUR", "USD", "JPY", "XYZ", "eur", "", "E U", "XXX"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_stamps, st.integers(0, 5), st.integers(0, 5), _amounts, _currencies), max_size=30))
def test_any_rows_are_kept_or_rejected_and_features_stay_finite(tmp_path, rows):
    path = tmp_path / "t.csv"
    body = "".join(f"t{i},{ts},a{s},a{d},{amt},{cur},card\n" for i, (ts, s, d, amt, cur) in enumerate(rows))
    path.write_text(HEADER + body)
    try:
        txns, rejects = read_transactions(path)
    except Exception as exc:  # only "no valid rows" may end the read
        assert "no valid transaction rows" in str(exc)
        return
    assert len(txns) + len(rejects) == len(rows) == txns.rows_read
    assert ((txns.amount > 0) & (txns.amount <= 1e12)).all()
    assert ((txns.ts >= 0) & (txns.ts < 4_102_444_800)).all()
    assert set(txns.currency) <= transaction_checks.ISO_4217 | {""}
    txns = txns.take(time_order(txns))
    batch = featurise(AccountState(8), txns.ts, txns.src, txns.dst, txns.amount, txns.channel)
    assert all(np.isfinite(getattr(batch, k)).all() for k in ("seq", "nbr", "txn"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_features_stay_finite_even_when_the_reader_is_bypassed():
    """The boundary guard: values no reader would pass still give finite, bounded features."""
    ts = np.array([1e9, 1e9 + 1, np.inf, 1e9 + 3])
    amount = np.array([1e300, np.inf, 5.0, np.nan])
    acc = np.array(["a", "a", "b", "a"], dtype=object)
    batch = featurise(AccountState(4), ts, acc, acc[::-1].copy(), amount, np.array(["card"] * 4, dtype=object))
    for name in ("seq", "nbr", "txn"):
        values = getattr(batch, name)
        assert np.isfinite(values).all() and np.abs(values).max() <= 1e4, name
