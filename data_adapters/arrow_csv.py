"""Runs of CSV lines parsed by Apache Arrow's C reader, giving exactly what `csv.reader` gives.

Why: a bank's month is 1M rows x 100 columns, 100M cells. The csv module plus a Python step per
cell read such an export at ~15,000 rows per CPU-second, most of `finance score`'s time and two
minutes of `finance train`'s; pyarrow.csv splits the lines in C and its string columns become
numbers (one cast) or shared strings (one dictionary encoding) column by column.

Exactness, not "nearly the same": a run of lines goes to Arrow only when its bytes leave no room
for the two parsers to differ (`trouble`): no quote character (a quoted field may hold a newline
or a comma), no carriage return except in CRLF, no NUL (csv refuses it) or ASCII separator
0x1c-0x1f (str.strip removes them, Arrow's trim does not), valid UTF-8, no line over csv's field
limit. Such a run has one record per line, so every row keeps its file line. Anything else is
read by the caller's csv.reader path, the reference. Values: `text` strips cells as str.strip does;
`extra_column` types a column as the row path's `transactions.extra_column` does, including the
numbers Python reads and Arrow does not ('1_000', other scripts' digits) and the reverse ('nan(1)').
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

READ_BYTES = 8 << 20  # bytes read from the file at a time while cutting runs of lines
ARROW_BLOCK = 1 << 20  # Arrow parses 1 MB at a time: a 16 MB block took twice the CPU (cache misses)
_BAD_BYTES = (b"\x00", b"\x1c", b"\x1d", b"\x1e", b"\x1f")


@dataclass
class Run:
    """A run of lines read by Arrow: the rows with the header's field count, and the others."""

    columns: list[pa.ChunkedArray]  # one string column per field of the header, valid rows only
    lines: list[int]  # file line of each valid row
    faults: list[tuple[int, list[str]]]  # (line, fields) of each row with another field count ([] when empty)


def line_runs(handle: BinaryIO, rows: int) -> Iterator[tuple[bytes, np.ndarray]]:
    """(bytes, newline offsets in them) of up to `rows` whole lines at a time from the handle's
    position on. The last run may end without a newline (a file whose last line has none)."""
    tail, ends = b"", np.zeros(0, np.int64)
    while True:
        block = handle.read(READ_BYTES)
        if block:
            found = np.flatnonzero(np.frombuffer(block, np.uint8) == 10) + len(tail)
            tail, ends = tail + block, np.concatenate([ends, found])
        while len(ends) >= rows:
            cut = int(ends[rows - 1]) + 1
            yield tail[:cut], ends[:rows]
            tail, ends = tail[cut:], ends[rows:] - cut
        if not block:
            if tail:
                yield tail, ends
            return


def count_lines(run: bytes, ends: np.ndarray) -> int:
    """Lines in a run from `line_runs` (its last line may have no newline)."""
    return len(ends) + (0 if run.endswith(b"\n") or not run else 1)


def trouble(run: bytes, ends: np.ndarray) -> str | None:
    """Why Arrow may not read this run as csv.reader would ('quote', 'carriage return', 'bytes',
    'long line'), or None. Only the first two can make a record span lines."""
    if b'"' in run:
        return "quote"
    if b"\r" in run and (run.count(b"\r") != run.count(b"\r\n") or run.endswith(b"\r")):
        return "carriage return"
    if any(byte in run for byte in _BAD_BYTES):
        return "bytes"
    if not run.isascii():
        try:
            run.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes"
    starts, stops = _line_bounds(run, ends)
    if len(starts) and (stops - starts).max() > csv.field_size_limit():
        return "long line"
    return None


def parse(run: bytes, ends: np.ndarray, n_fields: int, first_line: int) -> Run | None:
    """Arrow's reading of a run without `trouble`, lines numbered from `first_line`; None when the
    rows Arrow found do not match the run's lines one to one (then the caller reads it row by row)."""
    names = [f"f{i}" for i in range(n_fields)]
    faults: list[tuple[int, str]] = []

    def odd(row) -> str:
        faults.append((row.number, row.text))
        return "skip"

    table = pa_csv.read_csv(
        pa.py_buffer(run),
        read_options=pa_csv.ReadOptions(use_threads=False, column_names=names, block_size=ARROW_BLOCK),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=odd, ignore_empty_lines=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    starts, stops = _line_bounds(run, ends)
    width = stops - starts
    is_empty = width == 0
    if b"\r" in run:  # CRLF: a line holding only the CR is empty too
        is_empty |= (width == 1) & (np.frombuffer(run, np.uint8)[np.minimum(starts, len(run) - 1)] == 13)
    full = np.flatnonzero(~is_empty)  # Arrow numbers these lines 1, 2, ...
    if table.num_rows + len(faults) != len(full):
        return None
    kept = np.ones(len(full), bool)
    kept[[number - 1 for number, _ in faults]] = False
    lines = (full[kept] + first_line).tolist()
    bad = [(int(i) + first_line, []) for i in np.flatnonzero(is_empty)]
    bad += [(int(full[number - 1]) + first_line, next(csv.reader([text]), [])) for number, text in faults]
    columns = [table.column(i) for i in range(n_fields)]  # chunked (one chunk per ARROW_BLOCK): no copy
    return Run(columns, lines, sorted(bad))


def _line_bounds(run: bytes, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (newline excluded) offsets of each line of `run` (`ends`: its newlines)."""
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(run)]])
    if not run or run.endswith(b"\n"):  # no line after the last newline
        starts, stops = starts[:-1], stops[:-1]
    return starts, stops


ARROW = (pa.Array, pa.ChunkedArray)  # what `parse` gives (a column may also be Python strings)


def as_list(column: Sequence[str] | pa.ChunkedArray) -> list[str]:
    """The cells as Python strings (unstripped)."""
    return column.to_pylist() if isinstance(column, ARROW) else list(column)


def text(column: Sequence[str] | pa.ChunkedArray) -> list[str]:
    """The cells stripped of surrounding whitespace (str.strip)."""
    if isinstance(column, ARROW):
        return _strip(column).to_pylist()
    return list(map(str.strip, column))


def _strip(column: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """str.strip of each cell (the ASCII trim, 7x faster, when every byte is ASCII)."""
    column = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
    datas = [chunk.buffers()[2] for chunk in column.chunks]
    if all(d is None or np.frombuffer(d, np.uint8).max(initial=0) < 128 for d in datas):
        return pc.ascii_trim_whitespace(column)
    return pc.utf8_trim_whitespace(column)


def extra_column(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`transactions.extra_column` of an Arrow string column: float64 (NaN where blank) when every
    non-blank cell is a number to Python's float(), else the stripped cells as an object array in
    which equal strings share one object."""
    stripped = _strip(column)
    blank = pc.equal(stripped, "")
    any_blank = bool(pc.any(blank).as_py())
    first = pc.index(blank, False).as_py() if any_blank else 0  # the first cell that is not blank
    if 0 <= first < len(stripped) and _is_number(stripped[first].as_py()):  # else text: no cast to fail (slow)
        try:
            numbers = pc.cast(pc.if_else(blank, None, stripped) if any_blank else stripped, pa.float64())
        except pa.ArrowInvalid:  # a cell Arrow cannot read: Python may (1_000), or it is text
            numbers = None
        if numbers is not None:
            out = numbers.to_numpy(zero_copy_only=False)
            nan = np.isnan(out)
            if any_blank:
                nan &= ~blank.to_numpy(zero_copy_only=False)
            if all(_is_number(stripped[int(i)].as_py()) for i in np.flatnonzero(nan)):  # not 'nan(1)', to Python
                return out
    encoded = pc.dictionary_encode(stripped).unify_dictionaries()
    values = encoded.chunks[0].dictionary.to_pylist() if encoded.num_chunks else []
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks] or [np.zeros(0, int)])
    try:
        parsed = np.array([float(v) if v else math.nan for v in values], dtype=np.float64)
        return parsed[codes]
    except ValueError:
        return np.array(values, dtype=object)[codes]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
