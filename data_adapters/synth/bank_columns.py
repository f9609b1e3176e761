"""A synthetic bank export: the generator's transactions plus 34 columns of the kinds banks export.

Why: a model that uses a bank's own columns must be measured where the signal is *split* between
those columns and the sequences and rings the contract columns reveal; neither half alone should
be enough. The columns imitate a card-fraud export (IEEE-CIS-like): counters C1..C8 (Poisson), time
deltas D1..D4 (days, often missing), match flags M1..M4 (T/F/missing), vendor risk scores R1..R4
(missing for a third of the rows), merchant category, card type, device type, e-mail domain,
country, a device id (an identifier: a model should ignore it), and 6 pure-noise numbers.

Where the signal goes: only rows of some typologies get a column footprint (account takeover and
random/unpatterned fraud: new device, risk scores shifted by ~0.8 sd, odd merchant categories and
domains, low counters; fan-in/fan-out mules: slightly raised counters), each with probability
0.6, and a few percent of legitimate rows get the same footprint (travellers, new phones). The ring
typologies (cycle, stack, bipartite, scatter/gather) leave no trace in the columns: only their
structure gives them away.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from common.atomic import write_csv

CATEGORIES = {
    "merchant_category": [f"mcc_{i:02d}" for i in range(24)],
    "card_type": ["debit", "credit", "prepaid", "charge"],
    "device_type": ["ios", "android", "desktop", "tablet", "unknown"],
    "email_domain": [f"mail{i}.example" for i in range(30)],
    "country": [f"C{i:02d}" for i in range(15)],
}
FOOTPRINT = {"account_takeover": 1.0, "random": 1.0, "fan_in": 0.4, "fan_out": 0.4}
COLUMNS = (
    *(f"C{i}" for i in range(1, 9)),
    *(f"D{i}" for i in range(1, 5)),
    *(f"M{i}" for i in range(1, 5)),
    *(f"R{i}" for i in range(1, 5)),
    *CATEGORIES,
    "device_id",
    *(f"noise{i}" for i in range(1, 7)),
)


def _zipf(rng: np.random.Generator, values: list[str], n: int, skew: float = 1.2) -> np.ndarray:
    p = 1.0 / np.arange(1, len(values) + 1) ** skew
    return np.asarray(values, dtype=object)[rng.choice(len(values), n, p=p / p.sum())]


def bank_columns(typology: np.ndarray, label: np.ndarray, seed: int = 0) -> dict[str, list[str]]:
    """The extra columns (as CSV text) for rows with these typologies and labels."""
    rng = np.random.default_rng(seed + 7919)
    n = len(label)
    strength = np.array([FOOTPRINT.get(t, 0.0) for t in typology]) * (label == 1)
    marked = (rng.random(n) < 0.6 * strength) | ((label == 0) & (rng.random(n) < 0.03))
    weak = marked * np.where(label == 1, strength, 1.0)
    out: dict[str, list[str]] = {}

    def text(values: np.ndarray, missing: np.ndarray | None = None, fmt: str = "{:g}") -> list[str]:
        cells = [fmt.format(v) for v in values]
        if missing is not None:
            cells = ["" if m else c for c, m in zip(cells, missing)]
        return cells

    rates = rng.uniform(0.5, 4.0, 8)
    for i in range(8):
        lam = rates[i] * np.where(marked, 0.3 if i < 4 else 2.0, 1.0)
        out[f"C{i + 1}"] = text(rng.poisson(lam).astype(float))
    for i in range(4):
        days = rng.exponential(60.0, n) * np.where(marked, 0.1, 1.0)
        out[f"D{i + 1}"] = text(np.round(days), rng.random(n) < 0.25 + 0.15 * i)
    for i in range(4):
        true = rng.random(n) < np.where(marked, 0.35, 0.8)
        flags = np.where(true, "T", "F").astype(object)
        out[f"M{i + 1}"] = ["" if m else f for f, m in zip(flags, rng.random(n) < 0.3)]
    for i in range(4):
        score = rng.normal(0.0, 1.0, n) + 0.8 * weak * (1 if i % 2 == 0 else -1)
        out[f"R{i + 1}"] = text(score, rng.random(n) < 0.33, "{:.3f}")
    for name, values in CATEGORIES.items():
        usual, odd = _zipf(rng, values, n), _zipf(rng, values[::-1], n, 0.8)
        out[name] = list(np.where(marked & (rng.random(n) < 0.7), odd, usual))
    out["device_id"] = [f"dev{v:09d}" for v in rng.integers(0, 10**9, n)]
    for i in range(6):
        out[f"noise{i + 1}"] = text(rng.normal(0, 1, n), fmt="{:.3f}")
    return out


def write_export(source_csv: str | os.PathLike[str], out_csv: str | os.PathLike[str], seed: int = 0) -> Path:
    """`out_csv` = every column of the generator's CSV plus COLUMNS (atomic write)."""
    with open(source_csv, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    at = {name: i for i, name in enumerate(header)}
    typology = np.array([r[at["typology"]] for r in rows], dtype=object)
    label = np.array([int(r[at["is_fraud"]]) for r in rows])
    extra = bank_columns(typology, label, seed)
    columns = [extra[name] for name in COLUMNS]
    lines = (row + [col[i] for col in columns] for i, row in enumerate(rows))
    return write_csv(Path(out_csv), [*header, *COLUMNS], lines)
