"""`fedsite finance serve`: real-time scoring over HTTP with per-account memory.

Why a thin layer over `StreamingScorer`: the service must give exactly the scores batch `score`
would give for the same stream (a test checks it), so it owns no features of its own. It validates
each request with the CSV's row rules (data_adapters.transactions.check_row); a bad request gets 422
with the reason and changes no state, and the service keeps serving. The event loop serialises
requests, so the account state needs no lock, and one request costs well under a millisecond of
featurising plus one ONNX Runtime call. A model trained with extra columns needs them in every
request, under the names they have after the column mapping (null = missing value).
"""

# No `from __future__ import annotations` here: FastAPI resolves the endpoint annotations (Request)
# at run time, and they are imported inside create_app.
import gc
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from data_adapters.transactions import REQUIRED, check_row, extra_column
from verticals.finance.infer import StreamingScorer, load_scorer

MAX_ITEMS = 10_000


class RequestError(ValueError):
    """A request the service refuses (422) with a one-line reason."""


class ScoringService:
    """Validates JSON transactions, scores them causally, keeps counters for /metrics."""

    def __init__(self, scorer: StreamingScorer, model_dir: str = "") -> None:
        self.scorer = scorer
        self.model_dir = model_dir
        self.seen: set[str] = set()
        self.counts = {"ok": 0, "rejected": 0}
        self.scored = 0
        self.latencies: deque[float] = deque(maxlen=10_000)
        self.started = time.time()

    def _parse(self, body: Any) -> tuple[list[dict[str, str]], list[float], list[float]]:
        items = body if isinstance(body, list) else [body]
        if not items:
            raise RequestError("empty list: send a transaction object or a non-empty list of them")
        if len(items) > MAX_ITEMS:
            raise RequestError(f"too many transactions in one request ({len(items)} > {MAX_ITEMS})")
        rows, stamps, amounts, ids = [], [], [], set()
        for i, item in enumerate(items):
            where = f"item {i}: " if isinstance(body, list) else ""
            if not isinstance(item, dict):
                raise RequestError(f"{where}expected a JSON object with {', '.join(REQUIRED)}")
            values = {k: "" if v is None else str(v) for k, v in item.items()}
            lacking = [c for c in self.scorer.spec.used if c not in values]
            if lacking:  # null is a missing value the model knows; an absent key is a different schema
                raise RequestError(f"{where}missing trained column(s) {', '.join(lacking)}")
            checked = check_row(values, require_label=False)
            if isinstance(checked, str):
                raise RequestError(f"{where}{checked}")
            txn = values["txn_id"].strip()
            if txn in self.seen or txn in ids:
                raise RequestError(f"{where}duplicate txn_id '{txn}'")
            ids.add(txn)
            rows.append(values)
            stamps.append(checked[0])
            amounts.append(checked[1])
        return rows, stamps, amounts

    def score(self, body: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Score one transaction (object) or several (list, taken in timestamp order, ties in list order)."""
        start = time.perf_counter()
        try:
            rows, stamps, amounts = self._parse(body)
        except RequestError:
            self.counts["rejected"] += 1
            raise
        ts = np.asarray(stamps, dtype=np.float64)
        order = np.argsort(ts, kind="stable")

        def col(name: str) -> np.ndarray:
            return np.array([rows[i].get(name, "").strip() for i in order], dtype=object)

        channel = np.array([c.lower() for c in col("channel")], dtype=object)
        extras = {name: extra_column(list(col(name))) for name in self.scorer.spec.used}
        probs = self.scorer.score(
            ts[order], col("src_account"), col("dst_account"), np.asarray(amounts)[order], channel, extras
        )
        out: list[dict[str, Any]] = [{}] * len(rows)
        for rank, i in enumerate(order):
            txn = rows[i]["txn_id"].strip()
            self.seen.add(txn)
            out[i] = {"txn_id": txn, "fraud_probability": float(probs[rank])}
        self.scored += len(rows)
        self.counts["ok"] += 1
        self.latencies.append(time.perf_counter() - start)
        return out if isinstance(body, list) else out[0]

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.model_dir,
            "backend": self.scorer.backend,
            "accounts": len(self.scorer.state.accounts),
            "transactions_scored": self.scored,
        }

    def metrics_text(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        lines = [
            "# HELP fedsite_finance_requests_total Scoring requests by outcome.",
            "# TYPE fedsite_finance_requests_total counter",
            *(f'fedsite_finance_requests_total{{status="{k}"}} {v}' for k, v in self.counts.items()),
            "# HELP fedsite_finance_transactions_scored_total Transactions scored.",
            "# TYPE fedsite_finance_transactions_scored_total counter",
            f"fedsite_finance_transactions_scored_total {self.scored}",
            "# HELP fedsite_finance_accounts Accounts with state in memory.",
            "# TYPE fedsite_finance_accounts gauge",
            f"fedsite_finance_accounts {len(self.scorer.state.accounts)}",
            "# HELP fedsite_finance_request_seconds Scoring time per accepted request (last 10k).",
            "# TYPE fedsite_finance_request_seconds summary",
        ]
        lat = np.asarray(self.latencies)
        for q in (0.5, 0.9, 0.99):
            value = float(np.quantile(lat, q)) if len(lat) else 0.0
            lines.append(f'fedsite_finance_request_seconds{{quantile="{q}"}} {value:.6f}')
        lines += [
            f"fedsite_finance_request_seconds_sum {float(lat.sum()):.6f}",
            f"fedsite_finance_request_seconds_count {len(lat)}",
            "# HELP fedsite_finance_uptime_seconds Seconds since the service started.",
            "# TYPE fedsite_finance_uptime_seconds gauge",
            f"fedsite_finance_uptime_seconds {time.time() - self.started:.1f}",
        ]
        return "\n".join(lines) + "\n"


def load_service(model_dir: str | Path) -> ScoringService:
    """A service around the model directory's ONNX model (torch when model.onnx is absent)."""
    # one request is one small ONNX call: a second intra-op thread only adds hand-off latency (the
    # measured p99 of a single call doubled with 2 threads on a busy 2-core machine)
    scorer = load_scorer(model_dir, cfg_threads=1)
    return ScoringService(scorer, str(model_dir))


def create_app(service: ScoringService):
    """The FastAPI app: POST /score, GET /health, GET /metrics."""
    import json

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI(title="fedsite finance scoring", version="1")

    @app.post("/score")
    async def score(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            service.counts["rejected"] += 1
            return JSONResponse({"detail": f"body is not valid JSON ({exc})"}, status_code=422)
        try:
            return JSONResponse(service.score(body))
        except RequestError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(service.metrics_text(), media_type="text/plain; version=0.0.4")

    return app


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service until interrupted (uvicorn, one worker: the account state is in-process)."""
    import uvicorn

    from common.progress import log

    service = load_service(model_dir)
    app = create_app(service)
    # torch, ONNX Runtime and FastAPI leave ~1M long-lived objects; freezing them keeps the cyclic
    # GC from re-scanning them during requests (full collections showed up as p99 spikes)
    gc.collect()
    gc.freeze()
    log(f"serving {model_dir} on http://{host}:{port} ({service.scorer.backend})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
