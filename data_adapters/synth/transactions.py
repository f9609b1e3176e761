"""Synthetic bank transactions in the style of IBM's AMLSim / AMLworld, with typologies recorded.

Why synthetic: real labelled laundering data cannot leave a bank, and the model must be shown to
find *structures* (rings, chains, fans) and *temporal anomalies* (account takeover), not single odd
amounts. So the background is realistic enough to hide them: heavy-tailed activity (Pareto rates),
card purchases at Zipf-popular merchants, P2P among friends, monthly salaries and rent, large B2B
invoices. Laundering follows the AMLSim typologies (fan-in, fan-out, cycle, scatter-gather,
gather-scatter, bipartite, stack, random/unpatterned) plus account-takeover bursts, with camouflage:
amounts drawn from the legitimate P2P distribution, round amounts and just-under-threshold amounts
(the 10,000 reporting threshold) that legitimate invoices also use. Every fraudulent row carries its
`typology`; legitimate rows carry `none`.

`site` changes the customer mix (share of merchants and businesses, channel habits, amount scale,
currency, typology mix) so simulated banks are heterogeneous, as federated banks are.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_csv
from data_adapters.transactions import iso_utc

TYPOLOGIES = (
    "fan_in",
    "fan_out",
    "cycle",
    "scatter_gather",
    "gather_scatter",
    "bipartite",
    "stack",
    "random",
    "account_takeover",
)
THRESHOLD = 10_000.0
HEADER = ["txn_id", "timestamp", "src_account", "dst_account", "amount", "currency", "channel", "is_fraud", "typology"]
_START = _dt.datetime(2026, 3, 1, tzinfo=_dt.UTC).timestamp()
_DAY = 86_400.0


class _Ledger:
    """Rows being generated: (ts, src, dst, amount, channel, is_fraud, typology)."""

    def __init__(self, rng: np.random.Generator, amount_scale: float) -> None:
        self.rng = rng
        self.scale = amount_scale
        self.rows: list[tuple[float, int, int, float, str, int, str]] = []

    def add(self, ts: float, src: int, dst: int, amount: float, channel: str, fraud: int = 0, typ: str = "none"):
        self.rows.append((float(ts), int(src), int(dst), round(max(float(amount), 0.01), 2), channel, fraud, typ))

    def camouflaged_amount(self) -> float:
        """Laundering amounts that look like legitimate ones: P2P-like, round, or just under threshold."""
        kind = self.rng.random()
        if kind < 0.5:
            return float(self.rng.lognormal(np.log(120 * self.scale), 1.0))
        if kind < 0.8:
            return float(self.rng.choice([50, 100, 200, 500, 1000, 2000]) * self.scale)
        return float(self.rng.uniform(0.85, 0.999) * THRESHOLD)


def _background(led: _Ledger, n: int, days: int, mix: dict, roles: dict) -> None:
    rng = led.rng
    people, merchants, businesses = roles["people"], roles["merchants"], roles["businesses"]
    mobile = mix["mobile_share"]
    rate = np.minimum((rng.pareto(1.6, len(people)) + 0.3) * mix["activity"], 25.0)  # txns/day, heavy tailed
    popularity = 1.0 / np.arange(1, len(merchants) + 1) ** 1.1
    popularity /= popularity.sum()
    friends = {p: rng.choice(people, size=min(len(people) - 1, rng.integers(2, 8)), replace=False) for p in people}
    horizon = days * _DAY
    for i, person in enumerate(people):
        count = rng.poisson(rate[i] * days)
        times = _START + np.sort(rng.uniform(0, horizon, count))
        # daytime-heavy activity: pull most events into 7h-23h
        times = (
            np.floor(times / _DAY) * _DAY
            + np.where(rng.random(count) < 0.9, rng.uniform(7, 23, count), rng.uniform(0, 24, count)) * 3600
        )
        for ts in times:
            if rng.random() < 0.7:
                merchant = merchants[rng.choice(len(merchants), p=popularity)]
                channel = "online" if rng.random() < 0.3 else "card"
                led.add(ts, person, merchant, rng.lognormal(np.log(35 * led.scale), 1.0), channel)
            else:
                friend = friends[person][rng.integers(len(friends[person]))]
                amount = rng.lognormal(np.log(60 * led.scale), 1.0)
                if rng.random() < 0.25:
                    amount = float(rng.choice([20, 50, 100, 200, 500])) * led.scale
                led.add(ts, person, friend, amount, "mobile" if rng.random() < mobile else "transfer")
    _lookalikes(led, days, people, friends, mobile)
    employer = {p: businesses[rng.integers(len(businesses))] for p in people}
    landlord = {p: businesses[rng.integers(len(businesses))] for p in people}
    salary = {p: rng.lognormal(np.log(2500 * led.scale), 0.4) for p in people}
    rent = {p: rng.lognormal(np.log(800 * led.scale), 0.3) for p in people}
    for day in range(days):
        dom = (_dt.datetime.fromtimestamp(_START, _dt.UTC) + _dt.timedelta(days=day)).day
        for p in people:
            if dom == 1 and rng.random() < 0.8:
                led.add(_START + day * _DAY + rng.uniform(6, 9) * 3600, employer[p], p, salary[p], "transfer")
            if dom == 3 and rng.random() < 0.7:
                led.add(_START + day * _DAY + rng.uniform(8, 20) * 3600, p, landlord[p], rent[p], "transfer")
        for _ in range(rng.poisson(mix["b2b_per_day"])):  # invoices: large, some round or just under threshold
            a, b = rng.choice(businesses, 2, replace=False)
            amount = rng.lognormal(np.log(4000 * led.scale), 0.8)
            if rng.random() < 0.2:
                amount = rng.uniform(0.85, 0.999) * THRESHOLD
            led.add(_START + day * _DAY + rng.uniform(8, 18) * 3600, a, b, amount, "transfer")
        for m in merchants[: max(1, len(merchants) // 5)]:  # merchants settle to suppliers
            if rng.random() < 0.3:
                amount = rng.lognormal(np.log(1500 * led.scale), 0.6)
                led.add(_START + day * _DAY + rng.uniform(18, 22) * 3600, m, rng.choice(businesses), amount, "transfer")


def _lookalikes(led: _Ledger, days: int, people: np.ndarray, friends: dict, mobile: float) -> None:
    """Legitimate activity shaped like laundering, so shape alone is not proof: bill splitting (a
    fan-in among friends within hours), gifts passed on (A -> B -> C within hours, like a chain),
    and one person paying several friends back (a fan-out)."""
    rng = led.rng
    for _ in range(int(len(people) * days / 25)):
        hub = people[rng.integers(len(people))]
        group = friends[hub]
        t0 = _START + rng.uniform(0, days) * _DAY
        kind = rng.random()
        amount = float(rng.choice([20, 30, 50, 100, 200])) * led.scale
        channel = "mobile" if rng.random() < mobile else "transfer"
        if kind < 0.45:
            for f in group:
                led.add(t0 + rng.uniform(0, 3) * 3600, f, hub, amount * rng.uniform(0.9, 1.1), channel)
        elif kind < 0.75:
            for f in group:
                led.add(t0 + rng.uniform(0, 3) * 3600, hub, f, amount * rng.uniform(0.9, 1.1), channel)
        else:
            nxt = group[rng.integers(len(group))]
            onward = friends[nxt][rng.integers(len(friends[nxt]))]
            led.add(t0, hub, nxt, amount * 5, channel)
            if onward != hub:
                led.add(t0 + rng.uniform(0.5, 6) * 3600, nxt, onward, amount * 5 * rng.uniform(0.8, 1.0), channel)


def _pattern(led: _Ledger, typ: str, mules: np.ndarray, people: np.ndarray, t0: float) -> None:
    """One laundering instance of typology `typ` starting at t0, among mule accounts."""
    rng = led.rng
    span = rng.uniform(2, 36) * 3600  # the whole pattern plays out within hours to a day and a half

    def pick(k: int) -> np.ndarray:
        return rng.choice(mules, size=min(k, len(mules)), replace=False)

    def when() -> float:
        return t0 + rng.uniform(0, span)

    def ch() -> str:
        return str(rng.choice(["transfer", "mobile", "online"], p=[0.6, 0.25, 0.15]))

    k = int(rng.integers(4, 10))
    if typ == "fan_in":
        hub, *srcs = pick(k + 1)
        for s in srcs:
            led.add(when(), s, hub, led.camouflaged_amount(), ch(), 1, typ)
    elif typ == "fan_out":
        hub, *dsts = pick(k + 1)
        for d in dsts:
            led.add(when(), hub, d, led.camouflaged_amount(), ch(), 1, typ)
    elif typ in ("cycle", "random"):
        ring = list(pick(k))
        if typ == "random":  # an irregular walk among mules: repeats allowed, no closing edge
            ring = list(rng.choice(ring, size=k + 2))
        amount, ts = led.camouflaged_amount(), t0
        for a, b in zip(ring, ring[1:] + ([ring[0]] if typ == "cycle" else [])):
            if a == b:
                continue
            ts += rng.uniform(0.2, 6) * 3600
            led.add(ts, a, b, amount, ch(), 1, typ)
            amount *= rng.uniform(0.9, 0.99)  # mules keep a cut
    elif typ in ("scatter_gather", "gather_scatter"):
        chosen = pick(k + 2)
        first, last, middle = chosen[0], chosen[1], chosen[2:]
        for m in middle:
            ts = when()
            amount = led.camouflaged_amount()
            if typ == "scatter_gather":
                led.add(ts, first, m, amount, ch(), 1, typ)
                led.add(ts + rng.uniform(0.5, 8) * 3600, m, last, amount * 0.95, ch(), 1, typ)
            else:
                led.add(ts, m, first, amount, ch(), 1, typ)
                led.add(ts + rng.uniform(0.5, 8) * 3600, first, middle[rng.integers(len(middle))], amount, ch(), 1, typ)
    elif typ in ("bipartite", "stack"):
        layers = [pick(int(rng.integers(2, 5))) for _ in range(2 if typ == "bipartite" else 3)]
        ts = t0
        for upper, lower in zip(layers, layers[1:]):
            ts += rng.uniform(1, 8) * 3600
            for a in upper:
                for b in lower:
                    if a != b:
                        led.add(ts + rng.uniform(0, 4) * 3600, a, b, led.camouflaged_amount(), ch(), 1, typ)
    elif typ == "account_takeover":
        victim = people[rng.integers(len(people))]
        ts = t0 - (t0 % _DAY) + rng.uniform(0, 5) * 3600  # a night-time burst from a hijacked session
        amount = led.camouflaged_amount()
        for d in pick(int(rng.integers(3, 8))):
            ts += rng.uniform(1, 15) * 60
            led.add(ts, victim, d, amount, str(rng.choice(["mobile", "online"])), 1, typ)
            amount *= rng.uniform(1.0, 1.6)


def generate(
    n_accounts: int = 3000,
    days: int = 45,
    *,
    seed: int = 0,
    site: int = 0,
    n_sites: int = 1,
    fraud_rate: float = 0.02,
) -> list[tuple]:
    """Rows (ts, src, dst, amount, channel, is_fraud, typology) sorted by time, account ids as ints."""
    rng = np.random.default_rng([seed, site])
    shift = site / max(n_sites - 1, 1) if n_sites > 1 else 0.0
    mix = {
        "merchant_share": 0.08 + 0.06 * shift,
        "business_share": 0.05 + 0.03 * (1 - shift),
        "mule_share": 0.35,
        "mobile_share": 0.3 + 0.4 * shift,
        "activity": 0.9 + 0.5 * shift,
        "b2b_per_day": max(1.0, n_accounts / 150),
    }
    led = _Ledger(rng, amount_scale=1.0 + 0.5 * shift)
    ids = rng.permutation(n_accounts)
    n_m = max(3, int(n_accounts * mix["merchant_share"]))
    n_b = max(3, int(n_accounts * mix["business_share"]))
    n_mule = max(12, int(n_accounts * mix["mule_share"]))
    roles = {"merchants": ids[:n_m], "businesses": ids[n_m : n_m + n_b], "people": ids[n_m + n_b :]}
    _background(led, n_accounts, days, mix, roles)
    # mules are ordinary customers with ordinary history (camouflage), recruited from a broad pool so
    # most take part in only one or two schemes: their past alone does not give them away
    mules = rng.choice(roles["people"], size=min(n_mule, len(roles["people"])), replace=False)
    n_legit = len(led.rows)
    weights = np.ones(len(TYPOLOGIES))
    weights[(site * 2) % len(TYPOLOGIES)] += 1.0  # each bank sees a somewhat different typology mix
    weights /= weights.sum()
    target = fraud_rate / (1 - fraud_rate) * n_legit
    while len(led.rows) - n_legit < target:
        for typ in TYPOLOGIES:  # every typology appears, then more by the site's mix
            if len(led.rows) - n_legit >= target and typ != TYPOLOGIES[0]:
                break
            chosen = typ if rng.random() < 0.5 else str(rng.choice(TYPOLOGIES, p=weights))
            _pattern(led, chosen, mules, roles["people"], _START + rng.uniform(0.5, days - 1.5) * _DAY)
    rows = [r for r in led.rows if r[1] != r[2]]
    rows.sort(key=lambda r: r[0])
    return rows


def write(out: str | os.PathLike[str], n_accounts: int = 3000, days: int = 45, **options: Any) -> Path:
    """Write `out/transactions.csv` (the contract's columns plus `typology`) atomically; return its path.

    `options` are `generate`'s keywords (seed, site, n_sites, fraud_rate).
    """
    rows = generate(n_accounts, days, **options)
    site = int(options.get("site", 0))
    currency = ("EUR", "USD", "GBP", "CHF")[site % 4]
    prefix = f"s{site}"
    stamp = [iso_utc(r[0]) for r in rows]
    lines = (
        (f"{prefix}-t{i:07d}", stamp[i], f"{prefix}-a{r[1]:05d}", f"{prefix}-a{r[2]:05d}", f"{r[3]:.2f}", currency)
        + (r[4], r[5], r[6])
        for i, r in enumerate(rows)
    )
    path = Path(out) / "transactions.csv"
    write_csv(path, HEADER, lines)
    return path
