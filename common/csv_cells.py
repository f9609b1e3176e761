"""Spreadsheet-safe CSV cells: no cell fedsite writes can run as a formula when a CSV is opened.

Why: scores.csv, rejected.csv, candidates and defect tables are opened in Excel or LibreOffice by
analysts, and they carry text that came from outside (a txn_id, a file name, a reason quoting a bad
value). A cell starting with = + - @ (or tab / carriage return, which some spreadsheets skip before
looking for one) is a formula there: `=HYPERLINK(...)` in a txn_id becomes a link that leaks data.
OWASP's remedy is applied: such a text cell gets a leading apostrophe, which spreadsheets show as
text and do not display. A cell that is a plain number ("-3.5", "+1e-3") is left alone: it cannot
be a formula, and numeric columns stay numeric. `plain` undoes the escape for fedsite's own readers.
"""

from __future__ import annotations

from itertools import repeat

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def spreadsheet_cell(value: object) -> object:
    """`value` with a leading apostrophe when it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(TRIGGERS) and not _is_number(value):
        return "'" + value
    return value


def escape_column(cells: list) -> list:
    """`spreadsheet_cell` of every cell; the list itself when none is text starting with a trigger
    (checked by one C-level pass, not a Python call per cell)."""
    try:
        if not any(map(str.startswith, cells, repeat(TRIGGERS))):
            return cells
    except TypeError:  # a cell that is not text: check cell by cell
        pass
    return list(map(spreadsheet_cell, cells))


def plain(text: str) -> str:
    """The original of a cell `spreadsheet_cell` escaped (other text unchanged)."""
    if text.startswith("'") and text[1:].startswith(TRIGGERS) and not _is_number(text[1:]):
        return text[1:]
    return text
