"""The Arrow reading of a transactions CSV (issue 15 item 4) gives exactly what csv.reader gives.

Reference: the same file read with every run sent to csv.reader (`arrow_csv.trouble` patched to
say "quote", which is what the reader does for a file full of quotes). Files are written by the
tests with the cases where the two parsers could differ: padded cells, blank cells, numbers only
Python reads ('1_000', Arabic-Indic digits) or only Arrow reads ('nan(1)'), non-breaking spaces,
CRLF, blank and whitespace-only lines, wrong field counts, duplicate ids, bad amounts, a bad byte,
a quoted field holding a newline; chunks are made small so every case meets a run boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_adapters import arrow_csv, csv_chunks, transactions
from data_adapters.column_mapping import ColumnMapping
from data_adapters.transactions import read_transactions

HEADER = "txn_id,timestamp,src_account,dst_account,amount,currency,channel,is_fraud,score,kind,mixed,blanks\n"
ODD_CELLS = [" 7 ", "1_000", "\u0661\u0662", "nan(1)", "\u00a0x\u00a0", "inf", "-0", "1e5", "caf\u00e9", ""]


def _rows(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts = f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z" if i % 3 else str(1_767_225_600 + 60 * i)
        cells = [
            f"t{i}",
            ts,
            f"a{rng.integers(40)}",
            f" b{rng.integers(40)} ",
            f"{rng.uniform(1, 900):.2f}",
            "EUR" if i % 5 else "",
            ["card", "Mobile", " online"][i % 3],
            str(int(rng.random() < 0.1)),
            f"{rng.normal():.3f}" if i % 7 else "",
            f"k{rng.integers(5)}",
            ODD_CELLS[i % len(ODD_CELLS)] if i % 50 == 0 else str(rng.integers(100)),
            "" if i % 2 else f" {rng.integers(9)} ",
        ]
        out.append(",".join(cells))
    return out


def _bad(rows: list[str]) -> list[str]:
    rows = list(rows)
    rows[5] = ""  # blank line
    rows[17] = "   "  # whitespace only
    rows[30] = "t30,2026-01-01T00:00:00Z,a1,b1"  # too few fields
    rows[44] = rows[43]  # duplicate id
    rows[61] = rows[61].replace(rows[61].split(",")[4], "-5", 1)  # amount not > 0
    rows[77] = rows[77] + ",extra"  # too many fields
    return rows


def _read(path, monkeypatch, arrow: bool, **kwargs):
    if not arrow:
        monkeypatch.setattr(arrow_csv, "trouble", lambda run, ends: "quote")
    txns, rejects = read_transactions(path, chunk_rows=37, **kwargs)
    monkeypatch.undo()
    return txns, [(r.txn_id, r.line, r.reason) for r in rejects]


def _same(a, b) -> None:
    assert a.rows_read == b.rows_read and a.extra_columns == b.extra_columns
    for name in transactions._COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in a.extra_columns:
        x, y = a.extras[name], b.extras[name]
        assert x.dtype == y.dtype, name
        if x.dtype == object:
            assert x.tolist() == y.tolist(), name
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_arrow_reads_what_csv_reader_reads(tmp_path, monkeypatch, newline):
    path = tmp_path / "t.csv"
    path.write_bytes((HEADER + newline.join(_bad(_rows(400))) + newline + newline).encode("utf-8"))
    source = csv_chunks.CsvChunks(path)
    assert len(list(source.chunks(37))) == source.arrow_chunks == 11  # every run read by Arrow
    arrow, arrow_rejects = _read(path, monkeypatch, True)
    rows, rows_rejects = _read(path, monkeypatch, False)
    _same(arrow, rows)
    assert arrow_rejects == rows_rejects
    assert {line for _, line, _ in arrow_rejects} >= {7, 19, 32, 46, 63, 79}  # file lines (header = 1)
    assert arrow.rows_read == len(arrow) + len(arrow_rejects) == 401
    assert arrow.extras["score"].dtype == np.float64 and np.isnan(arrow.extras["score"]).any()


def test_trouble_sends_a_run_or_the_rest_of_the_file_to_csv_reader(tmp_path, monkeypatch):
    rows = _rows(300)
    rows[100] = rows[100].replace("k", "\xe9k", 1)  # in a run of its own: that run by csv.reader
    cells = rows[200].split(",")
    cells[9] = f'"{cells[9]}\nstill"'  # a record over two lines: the rest of the file by csv.reader
    rows[200] = ",".join(cells)
    path = tmp_path / "t.csv"
    data = (HEADER + "\n".join(rows) + "\n").encode("utf-8")
    path.write_bytes(data.replace("\xe9".encode(), b"\xe9"))  # a latin-1 byte: not UTF-8
    source = csv_chunks.CsvChunks(path)
    chunks = list(source.chunks(37))
    assert 0 < source.arrow_chunks < len(chunks)
    arrow, arrow_rejects = _read(path, monkeypatch, True)
    reference, reference_rejects = _read(path, monkeypatch, False)
    _same(arrow, reference)
    assert arrow_rejects == reference_rejects == [("", 102, "not UTF-8 (byte 0xe9 at column 60)")]
    assert arrow.txn_id[-1] == "t299" and arrow.line[-1] == 302  # lines counted past the two-line record
    assert arrow.extras["kind"][199].endswith("\nstill")  # the quoted newline kept, as csv.reader keeps it


def test_a_mapped_export_reads_alike(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    header = HEADER.replace("txn_id", "id").replace("src_account", "card").replace("timestamp", "when")
    path.write_text(header + "\n".join(_rows(120)) + "\n", encoding="utf-8")
    mapping = ColumnMapping.parse("txn_id=id,timestamp=when,src_account=card+kind")
    arrow, a_rej = _read(path, monkeypatch, True, mapping=mapping)
    rows, r_rej = _read(path, monkeypatch, False, mapping=mapping)
    _same(arrow, rows)
    assert a_rej == r_rej and arrow.src[0].count("|") == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(ODD_CELLS), st.text(alphabet=" 0123456789.e-+_nafi\u00a0", max_size=6))))
def test_extra_column_types_cells_as_python_does(cells):
    if any("," in c or "\n" in c for c in cells):
        return
    got = arrow_csv.extra_column(arrow_csv.pa.array(cells, arrow_csv.pa.string()))
    want = transactions.extra_column(cells)
    assert got.dtype == want.dtype
    if want.dtype == object:
        assert got.tolist() == want.tolist()
    else:
        np.testing.assert_array_equal(got, want)


def test_runs_arrow_could_misread_are_named():
    assert arrow_csv.trouble(b'a,"b"\n', np.array([5])) == "quote"
    assert arrow_csv.trouble(b"a,b\rc\n", np.array([5])) == "carriage return"
    assert arrow_csv.trouble(b"a,\x00\n", np.array([3])) == "bytes"
    assert arrow_csv.trouble(b"a,b\r\nc,d\r\n", np.array([4, 9])) is None
