"""Read a bank's export as it is: contract columns named by a mapping, values converted on the way in.

Why at read time: a fraud team's export never uses the contract's names (`TransactionDT`, `card1`,
`nameOrig`...), and a conversion script per bank is one more place for rows to go missing. A
mapping such as

    src_account=card1+addr1,dst_account=ProductCD+P_emaildomain,timestamp=TransactionDT:seconds@2017-12-01,
    amount=TransactionAmt,is_fraud=isFraud,txn_id=TransactionID

turns every chunk of raw rows into contract rows before the usual validation, so rejections keep
their file line and the rule `read = kept + rejected` still holds.

Grammar: `target=SOURCE[+SOURCE...][:CONVERSION]`, targets being the contract columns. Several
sources are joined with `|` into one key (a card is `card1|addr1`). `@line` as a source is the
row's file line (for exports without an id). Conversions of `timestamp`: `UNIT[@DATE]` (a number
of ms, seconds, minutes, hours, days or weeks after DATE, default 1970-01-01, UTC) or `utc` (a
time without a zone, such as `2022/09/01 00:20`, read as UTC). A source renamed to a target is
consumed; sources joined into a key stay features too (a card number says something by itself).
Every other column of the file passes through as a feature column.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError

TARGETS = ("txn_id", "timestamp", "src_account", "dst_account", "amount", "currency", "channel", "is_fraud", "typology")
LINE = "@line"
_UNITS = {"ms": 0.001, "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86_400.0, "weeks": 604_800.0}

Converter = Callable[[list[str]], list[str]]
RowSource = Callable[[Path], tuple[list[str], Iterator[tuple[int, list[str]]]]]


@dataclass(frozen=True)
class Source:
    """Where one contract column comes from: source columns (joined with `|`) and a value converter."""

    columns: tuple[str, ...]
    convert: Converter | None = None
    spec: str = ""


def dedupe_header(header: Sequence[str]) -> list[str]:
    """Repeated names get `.1`, `.2`... (AMLworld's two `Account` columns: payer's, then payee's)."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def offset_seconds(unit: str, start: str = "1970-01-01") -> Converter:
    """Numbers of `unit` after `start` (UTC) -> Unix seconds, as text (empty stays empty)."""
    if unit not in _UNITS:
        raise UserError(f"--columns: unknown time unit '{unit}' (known: {', '.join(_UNITS)})")
    try:
        origin = _dt.datetime.fromisoformat(start)
    except ValueError:
        raise UserError(f"--columns: '{start}' is not a date (expected e.g. 2017-12-01)") from None
    base = (origin if origin.tzinfo else origin.replace(tzinfo=_dt.UTC)).timestamp()
    scale = _UNITS[unit]

    def convert(values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                out.append(repr(base + float(value) * scale))
            except ValueError:
                out.append(value)  # validation rejects it with the usual reason
        return out

    return convert


def naive_utc(values: list[str]) -> list[str]:
    """Times without a zone (`2022/09/01 00:20`, `2022-09-01 00:20:00`) -> ISO 8601 in UTC."""
    out = []
    for value in values:
        text = value.strip().replace("/", "-")
        try:
            when = _dt.datetime.fromisoformat(text)
        except ValueError:
            out.append(value)
            continue
        out.append((when if when.tzinfo else when.replace(tzinfo=_dt.UTC)).isoformat())
    return out


def value_map(table: dict[str, str], what: str) -> Converter:
    """Replace known values (unknown ones pass through, so validation names them)."""

    def convert(values: list[str]) -> list[str]:
        return [table.get(v.strip(), v) for v in values]

    convert.__doc__ = what
    return convert


def _conversion(target: str, text: str) -> Converter:
    if target != "timestamp":
        raise UserError(f"--columns: {target}: conversions apply to timestamp only (got ':{text}')")
    if text == "utc":
        return naive_utc
    unit, _, start = text.partition("@")
    return offset_seconds(unit, start or "1970-01-01")


@dataclass
class ColumnMapping:
    """Contract column -> Source. An empty mapping reads the contract CSV unchanged.

    `drop`: source columns that are not features (identifiers); `converters`: value conversions of
    feature columns; `source`: a reader for a format that is not one CSV (Elliptic's three files),
    giving (header, (line, row) pairs) instead of the file's own rows.
    """

    targets: dict[str, Source] = field(default_factory=dict)
    name: str = ""
    drop: tuple[str, ...] = ()
    converters: dict[str, Converter] = field(default_factory=dict)
    source: RowSource | None = None

    @staticmethod
    def parse(spec: str) -> ColumnMapping:
        """`target=a+b:conversion,...` (see the module docstring); a UserError for a bad item."""
        targets: dict[str, Source] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            target, eq, expr = item.partition("=")
            target = target.strip()
            if not eq or not expr.strip():
                raise UserError(f"--columns: '{item}' is not target=source")
            if target not in TARGETS:
                raise UserError(f"--columns: unknown target '{target}' (targets: {', '.join(TARGETS)})")
            if target in targets:
                raise UserError(f"--columns: {target} is mapped twice")
            expr, colon, conversion = expr.partition(":")
            sources = tuple(s.strip() for s in expr.split("+"))
            if "" in sources:
                raise UserError(f"--columns: '{item}' names an empty source column")
            convert = _conversion(target, conversion.strip()) if colon else None
            targets[target] = Source(sources, convert, item)
        return ColumnMapping(targets, spec)

    def merged(self, other: ColumnMapping) -> ColumnMapping:
        """This mapping with `other`'s targets taking precedence (an importer's preset + the user's)."""
        name = ",".join(n for n in (self.name, other.name) if n)
        return ColumnMapping({**self.targets, **other.targets}, name, self.drop, self.converters, self.source)

    def bind(self, header: Sequence[str], where: str) -> BoundMapping:
        """Check every source against the file's header; a UserError names the unknown ones."""
        names = dedupe_header([h.strip() for h in header])
        known = set(names)
        unknown = [c for s in self.targets.values() for c in s.columns if c != LINE and c not in known]
        if unknown:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise UserError(f"{where}: --columns names unknown column(s) {', '.join(unknown)} (the file has: {shown})")
        consumed = {s.columns[0] for s in self.targets.values() if len(s.columns) == 1}
        dropped = consumed | set(self.drop) | set(self.targets)
        kept = [n for n in names if n not in dropped]
        converters = [self.converters.get(n) for n in kept]
        return BoundMapping(names, list(self.targets), [self.targets[t] for t in self.targets], kept, converters)


@dataclass
class BoundMapping:
    """A mapping checked against one header: turns raw rows into rows under `header`."""

    source_header: list[str]
    targets: list[str]
    sources: list[Source]
    passthrough: list[str]
    converters: list[Converter | None]

    @property
    def header(self) -> list[str]:
        return self.targets + self.passthrough

    def apply(self, raws: list[list[str]], lines: list[int]) -> list[tuple[str, ...]]:
        """Raw rows of the source header (already of the right length) -> rows of `header`."""
        if not raws:
            return []
        return list(zip(*self.apply_columns(list(zip(*raws)), lines)))

    def apply_columns(self, columns: Sequence, lines: list[int]) -> list:
        """Columns of the source header -> columns of `header`. A column passed through unchanged
        stays what it was (an Arrow array from csv_chunks too); joined or converted ones become
        lists of strings."""
        from data_adapters.arrow_csv import as_list

        index = {name: i for i, name in enumerate(self.source_header)}
        out = []
        for source in self.sources:
            if len(source.columns) == 1 and source.columns[0] != LINE and source.convert is None:
                out.append(columns[index[source.columns[0]]])
                continue
            parts = [[str(n) for n in lines] if c == LINE else as_list(columns[index[c]]) for c in source.columns]
            values = parts[0] if len(parts) == 1 else ["|".join(p) if any(p) else "" for p in zip(*parts)]
            out.append(source.convert(values) if source.convert else values)
        for name, convert in zip(self.passthrough, self.converters):
            values = columns[index[name]]
            out.append(convert(as_list(values)) if convert else values)
        return out
