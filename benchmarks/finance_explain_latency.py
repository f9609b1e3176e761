"""Latency of `POST /score?explain=1` against plain `/score` on a real `finance serve` (127.0.0.1).

One transaction per request, sequential, alternating explain and plain so load drifts hit both alike.
Usage: python benchmarks/finance_explain_latency.py --model MODEL_DIR --data transactions.csv [--n 400]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verticals.finance.serve_process import serving  # noqa: E402


def _quantile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    with open(args.data, newline="") as handle:
        rows = [row for _, row in zip(range(args.n), csv.DictReader(handle))]
    timings: dict[str, list[float]] = {"plain": [], "explain": []}
    with serving(args.model) as served, httpx.Client(base_url=served.url, timeout=20) as client:
        for i, row in enumerate(rows):
            kind = "explain" if i % 2 else "plain"
            start = time.perf_counter()
            reply = client.post("/score", params={"explain": "1"} if i % 2 else None, json=row)
            timings[kind].append((time.perf_counter() - start) * 1000)
            reply.raise_for_status()
    for kind, values in timings.items():
        median, p99 = statistics.median(values), _quantile(values, 0.99)
        print(f"{kind}: n={len(values)} median {median:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
