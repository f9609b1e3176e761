"""Plausibility rules for a transaction row, and the CSV-level faults that cost one row, not a file.

Why apart from the reader: `transactions.py` parses and arranges columns; this module says which
values a bank's export can plausibly hold, so the rules sit in one place and the reader calls them
for a row (`row_problem`) and, vectorised, for a block of rows (`block_ok`, same rules).

- Amounts: finite, > 0 and at most `FEDSITE_MAX_AMOUNT` (default 1e12). One amount of 1e20 used to
  push every account sum it touched to float32 overflow and turned most scores into NaN.
- Timestamps: 1970-01-01 to 2100-01-01 UTC (Unix seconds of 1e300 or -99999999999 are typing or
  unit errors, not dates).
- Currency: an ISO 4217 code (the built-in list below), or, when `FEDSITE_CURRENCIES` names a file,
  one of the codes in that file (whitespace or comma separated; it replaces the built-in list, so a
  site lists the ISO codes it uses beside its own).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable

import numpy as np

from common.errors import UserError

MIN_TS = 0.0  # 1970-01-01T00:00:00Z
MAX_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z
DEFAULT_MAX_AMOUNT = 1e12

# ISO 4217 List One, active alphabetic codes (2025), without XXX (no currency) and XTS (testing)
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
    MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB
    RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD
    TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG
    XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL
    """.split()
)
_CODE = re.compile(r"^[A-Z0-9]{3}$")


@functools.cache
def _limits(max_amount: str, currency_file: str) -> tuple[float, frozenset[str]]:
    try:
        amount = float(max_amount) if max_amount else DEFAULT_MAX_AMOUNT
    except ValueError:
        raise UserError(f"FEDSITE_MAX_AMOUNT={max_amount!r} is not a number") from None
    if not (math.isfinite(amount) and amount > 0):
        raise UserError(f"FEDSITE_MAX_AMOUNT={max_amount!r} must be a finite number > 0")
    if not currency_file:
        return amount, ISO_4217
    try:
        codes = re.split(r"[\s,]+", open(currency_file, encoding="utf-8").read().strip())
    except OSError as exc:
        raise UserError(f"{currency_file} (FEDSITE_CURRENCIES): cannot read ({exc.strerror})") from None
    bad = [c for c in codes if not _CODE.match(c)]
    if bad or not codes or codes == [""]:
        raise UserError(f"{currency_file} (FEDSITE_CURRENCIES): '{(bad or [''])[0]}' is not a 3-letter code")
    return amount, frozenset(codes)


def limits() -> tuple[float, frozenset[str]]:
    """(largest plausible amount, accepted currency codes) under the current environment."""
    return _limits(os.environ.get("FEDSITE_MAX_AMOUNT", ""), os.environ.get("FEDSITE_CURRENCIES", ""))


def row_problem(ts: float, amount: float, currency: str) -> str | None:
    """Why a parsed row is implausible, or None. `amount` is finite and > 0 already."""
    max_amount, currencies = limits()
    if not MIN_TS <= ts < MAX_TS:
        return f"timestamp {ts:.6g} is outside 1970-2100"
    if amount > max_amount:
        return f"amount {amount:.6g} is above the plausible maximum {max_amount:.6g} (FEDSITE_MAX_AMOUNT)"
    if currency and currency not in currencies:
        listed = "FEDSITE_CURRENCIES" if currencies is not ISO_4217 else "ISO 4217"
        return f"currency '{currency[:20]}' is not an {listed} code"
    return None


def block_ok(ts: np.ndarray, amount: np.ndarray, currencies: Iterable[str]) -> bool:
    """True when every row of a block passes `row_problem` (vectorised; same rules)."""
    max_amount, allowed = limits()
    return bool(
        ((ts >= MIN_TS) & (ts < MAX_TS)).all()
        and (amount <= max_amount).all()
        and all(not c or c in allowed for c in currencies)
    )


def check_header(header: list[str], path: object) -> None:
    """A UserError when a column name repeats: which of the copies is meant cannot be guessed."""
    first: dict[str, int] = {}
    for i, name in enumerate(header):
        name = name.strip()
        if not name:
            continue
        if name in first:
            raise UserError(
                f"{path}: column '{name[:40]}' appears twice in the header (columns {first[name] + 1} and {i + 1})"
            )
        first[name] = i


class RowFault(str):
    """A record that could not be read (bad bytes, oversized field): rejected with this reason."""


def undecodable(line: str) -> str | None:
    """The reason a line read with errors='surrogateescape' held bytes that are not UTF-8, else None."""
    if line.isascii():
        return None
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(line[exc.start]) - 0xDC00
        return f"not UTF-8 (byte 0x{byte:02x} at column {exc.start + 1})"
    return None
