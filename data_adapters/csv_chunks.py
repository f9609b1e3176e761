"""A transactions CSV as chunks of records: Arrow for the runs it reads exactly, csv.reader otherwise.

Why apart from `transactions.py`: that module validates rows and arranges columns; this one only
turns bytes into fields, two ways that give the same fields, and says which line each came from.
- `RowReader`: the reference, `csv.reader` over the text one record at a time. A record that
  cannot be read (bytes that are not UTF-8, a field over the csv module's limit) is a `RowFault`
  with its reason, so one bad row is rejected and the others kept.
- `CsvChunks.chunks`: the file cut into runs of whole lines; a run without `arrow_csv.trouble`
  is parsed by Arrow in C (one record per line, so lines are known), a run with bad bytes or an
  over-long line by `RowReader`, and from the first quote or lone carriage return on (a record
  may span lines there) the rest of the file by `RowReader`. The chunks are the same either way:
  `rows` records each, so whatever is decided per chunk downstream is decided alike.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

import pyarrow as pa

from common.errors import UserError
from data_adapters import arrow_csv, transaction_checks


@dataclass
class Chunk:
    """Consecutive records: the fields of those with the header's count, by column, and the others."""

    columns: list[Sequence[str] | pa.Array]  # one per header field (Arrow string arrays or Python strings)
    lines: list[int]  # file line of each row in `columns`
    faults: list[tuple[int, list[str] | transaction_checks.RowFault]] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.lines) + len(self.faults)


def record_chunks(records: Iterator[tuple[int, list[str]]], n_fields: int, rows: int) -> Iterator[Chunk]:
    """Chunks of `rows` records (line, fields or RowFault), as any row source gives them."""
    while True:
        raws, lines, faults = [], [], []
        for line, raw in itertools.islice(records, rows):
            if not isinstance(raw, transaction_checks.RowFault) and len(raw) == n_fields:
                raws.append(raw)
                lines.append(line)
            else:
                faults.append((line, raw))
        if not lines and not faults:
            return
        columns = [list(c) for c in zip(*raws)] if raws else [[] for _ in range(n_fields)]
        yield Chunk(columns, lines, faults)


class RowReader:
    """csv.reader over a text handle; lines numbered from `line0` + 1; undecodable lines -> RowFault."""

    def __init__(self, handle: TextIO, line0: int = 0) -> None:
        self.handle, self.line0 = handle, line0
        self.bad_lines: dict[int, str] = {}
        self.reader = csv.reader(itertools.chain.from_iterable(self._blocks()))

    def _blocks(self) -> Iterator[list[str]]:
        """About 1 MB of lines at a time, each line checked only when the block is not all ASCII
        (a Python step per line cost a sixth of reading a 100-column export)."""
        number = self.line0
        while block := self.handle.readlines(1 << 20):
            if not all(map(str.isascii, block)):
                for at, text in enumerate(block, number + 1):
                    if not text.isascii() and (reason := transaction_checks.undecodable(text)):
                        self.bad_lines[at] = reason
            number += len(block)
            yield block

    @property
    def line_num(self) -> int:
        return self.line0 + self.reader.line_num

    def header(self, path: Path) -> list[str]:
        """The first record; one-line UserErrors for an empty or unreadable file or a bad header byte."""
        try:
            header = next(self.reader)
        except StopIteration:
            self.handle.close()
            raise UserError(f"{path}: empty file (expected a header line)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            self.handle.close()
            raise UserError(f"{path}: not a readable CSV ({exc})") from None
        if self.bad_lines and min(self.bad_lines) <= self.line_num:  # later lines are the rows' business
            self.handle.close()
            raise UserError(f"{path}: header line {self.bad_lines[min(self.bad_lines)]}")
        return header

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(line, fields) per record, or (line, RowFault) for one that cannot be read."""
        with self.handle:
            while True:
                start = self.line_num
                try:
                    raw = next(self.reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield self.line_num, transaction_checks.RowFault(f"unreadable CSV record ({exc})")
                    continue
                if self.bad_lines:
                    faults = [self.bad_lines.pop(n) for n in range(start + 1, self.line_num + 1) if n in self.bad_lines]
                    if faults:
                        yield self.line_num, transaction_checks.RowFault(faults[0])
                        continue
                yield self.line_num, raw


def _text(binary: BinaryIO, encoding: str = "utf-8") -> TextIO:
    return io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a transactions CSV") from None


class CsvChunks:
    """A CSV file's header, then its records in chunks (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        rows = RowReader(_text(_open(path), "utf-8-sig"))
        self.header = rows.header(path)
        self._rows: Iterator | None = rows.records()
        with _open(path) as binary:  # Arrow only when the header is one line to csv.reader and to Arrow alike
            first = binary.readline().rstrip(b"\n")
        self._arrow = rows.line_num == 1 and b"\r" not in first[:-1]
        self.arrow_chunks = 0  # how many chunks Arrow read (the rest: csv.reader)

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()

    def chunks(self, rows: int) -> Iterator[Chunk]:
        n_fields = len(self.header)
        if not self._arrow:
            yield from record_chunks(self._rows, n_fields, rows)
            return
        self._rows.close()
        with _open(self.path) as binary:
            binary.readline()
            for run, offset, line, why, parsed in self._examined(binary, rows, n_fields):
                if parsed is not None:
                    self.arrow_chunks += 1
                    yield Chunk(parsed.columns, parsed.lines, parsed.faults)
                elif why in ("quote", "carriage return"):  # records may span lines from here on
                    binary.seek(offset)
                    self._rows = RowReader(_text(binary), line - 1).records()
                    yield from record_chunks(self._rows, n_fields, rows)
                    return
                else:
                    records = RowReader(_text(io.BytesIO(run)), line - 1).records()
                    yield from record_chunks(records, n_fields, rows)

    @staticmethod
    def _examined(binary: BinaryIO, rows: int, n_fields: int) -> Iterator[tuple]:
        """(run, offset, line, trouble, Arrow's parse or None) per run of `rows` lines. A worker
        thread checks and parses the next run while the caller converts this one (Arrow's parser
        releases the GIL): reading overlaps with validation on a 2-core server."""

        def examine(run: bytes, ends, line: int) -> tuple:
            why = arrow_csv.trouble(run, ends)
            return why, (arrow_csv.parse(run, ends, n_fields, line) if why is None else None)

        offset, line = binary.tell(), 2
        ahead: deque = deque()
        with ThreadPoolExecutor(max_workers=1) as pool:
            for run, ends in arrow_csv.line_runs(binary, rows):
                ahead.append((run, offset, line, pool.submit(examine, run, ends, line)))
                offset, line = offset + len(run), line + arrow_csv.count_lines(run, ends)
                if len(ahead) > 1:
                    *first, job = ahead.popleft()
                    yield (*first, *job.result())
            while ahead:
                *first, job = ahead.popleft()
                yield (*first, *job.result())
