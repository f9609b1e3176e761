"""Latency of `POST /score?explain=1` against plain `/score` on a real `finance serve` (127.0.0.1).

One transaction per request, sequential, alternating explain and plain so load drifts hit both alike.
Usage: python benchmarks/finance_explain_latency.py --model MODEL_DIR --data transactions.csv [--n 400]
"""

from __future__ import annotations

import argparse
import csv
import signal
import socket
import statistics
import subprocess
import sys
import time

import httpx


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _port()
    cmd = [sys.executable, "-m", "common.cli", "finance", "serve", "--model", args.model, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timings: dict[str, list[float]] = {"plain": [], "explain": []}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            for _ in range(600):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            for i, row in enumerate(rows):
                kind = "explain" if i % 2 else "plain"
                start = time.perf_counter()
                reply = client.post("/score", params={"explain": "1"} if i % 2 else None, json=row)
                timings[kind].append((time.perf_counter() - start) * 1000)
                reply.raise_for_status()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    for kind, values in timings.items():
        median, p99 = statistics.median(values), _quantile(values, 0.99)
        print(f"{kind}: n={len(values)} median {median:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
