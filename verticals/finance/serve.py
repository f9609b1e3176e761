"""`fedsite finance serve`: real-time scoring over HTTP with per-account memory.

Why a thin layer over `StreamingScorer`: the service must give exactly the scores batch `score`
would give for the same stream (a test checks it), so it owns no features of its own. It validates
each request with the CSV's row rules (data_adapters.transactions.check_row); a bad request gets 422
with the reason and changes no state, and the service keeps serving. The event loop serialises
requests, so the account state needs no lock, and one request costs well under a millisecond of
featurising plus one ONNX Runtime call. A model trained with extra columns needs them in every
request, under the names they have after the column mapping (null = missing value).

Bounds (issue 18): a request body over MAX_BODY_BYTES is refused (413) before it is read whole; a
txn_id over MAX_TXN_ID characters, or a field that is not a string/number/null, is a 422; JSON
nested beyond what the parser can follow is a 400, never a 500; duplicate txn_ids are detected among
the last `remember` ids (default 1,000,000), so memory stays bounded. State (issue 19): `--state
FILE` keeps the account state across restarts (serve_state.py: restored on start, saved every
`snapshot_every` seconds and on shutdown); `--warm-start CSV` replays history before the first
request; `--token-file` asks for `Authorization: Bearer <token>` on /score (/health, /metrics open).
`POST /score?explain=1` adds each transaction's top 3 reasons (explain.py), same scores and state.
"""

# No `from __future__ import annotations` here: FastAPI resolves the endpoint annotations (Request)
# at run time, and they are imported inside create_app.
import asyncio
import gc
import hmac
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from data_adapters.transactions import REQUIRED, check_row, extra_column
from verticals.finance.explain import format_reason, load_baseline
from verticals.finance.infer import StreamingScorer, load_scorer
from verticals.finance.serve_state import RecentIds

MAX_ITEMS = 10_000
MAX_BODY_BYTES = 8 << 20  # 10,000 transactions of ~400 bytes fit, with room for extra columns
MAX_TXN_ID = 256
REMEMBER_IDS = 1_000_000


class RequestError(ValueError):
    """A request the service refuses (422) with a one-line reason."""


class ScoringService:
    """Validates JSON transactions, scores them causally, keeps counters for /metrics."""

    def __init__(self, scorer: StreamingScorer, model_dir: str = "", remember: int = REMEMBER_IDS) -> None:
        self.scorer = scorer
        self.model_dir = model_dir
        self.baseline = load_baseline(model_dir) if model_dir else None  # for ?explain=1
        self.seen = RecentIds(remember)
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
            odd = next((k for k, v in item.items() if v is not None and not isinstance(v, (str, int, float))), None)
            if odd is not None:
                raise RequestError(f"{where}field '{str(odd)[:40]}' must be a string, a number or null")
            values = {k: "" if v is None else str(v) for k, v in item.items()}
            if len(values.get("txn_id", "")) > MAX_TXN_ID:
                raise RequestError(f"{where}txn_id longer than {MAX_TXN_ID} characters")
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

    def score(self, body: Any, explain: bool = False) -> dict[str, Any] | list[dict[str, Any]]:
        """Score one transaction (object) or several (list, taken in timestamp order, ties in list order).

        `explain`: each result also carries `reasons`, its top 3 feature groups with how much each moved
        the score (explain.py, occlusion; same probabilities and state advance as without it).
        """
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
        args = (ts[order], col("src_account"), col("dst_account"), np.asarray(amounts)[order], channel, extras)
        why: list[list[tuple[str, float]]] = []
        if explain:
            probs, why = self.scorer.score_explained(*args, baseline=self.baseline)
        else:
            probs = self.scorer.score(*args)
        out: list[dict[str, Any]] = [{}] * len(rows)
        for rank, i in enumerate(order):
            txn = rows[i]["txn_id"].strip()
            self.seen.add(txn)
            out[i] = {"txn_id": txn, "fraud_probability": float(probs[rank])}
            if explain:
                out[i]["reasons"] = [format_reason(name, change) for name, change in why[rank]]
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


def load_service(model_dir: str | Path, remember: int = REMEMBER_IDS) -> ScoringService:
    """A service around the model directory's ONNX model (torch when model.onnx is absent)."""
    # one request is one small ONNX call: a second intra-op thread only adds hand-off latency (the
    # measured p99 of a single call doubled with 2 threads on a busy 2-core machine)
    scorer = load_scorer(model_dir, cfg_threads=1)
    return ScoringService(scorer, str(model_dir), remember)


def warm_start(service: ScoringService, history_csv: str | Path) -> int:
    """Replay a transactions CSV (time order) through the scorer before serving; returns rows replayed.

    The rows advance the account state exactly as batch `score` would, and their ids count as seen.
    """
    from data_adapters.transactions import time_order
    from verticals.finance.data import read_for

    scorer = service.scorer
    txns, rejects = read_for(scorer.cfg, history_csv)
    txns = txns.take(time_order(txns))
    extras = {name: txns.extras[name] for name in scorer.spec.used}
    scorer.score(txns.ts, txns.src, txns.dst, txns.amount, txns.channel, extras)
    for txn in txns.txn_id:
        service.seen.add(str(txn))
    service.scored += len(txns)
    return len(txns)


def read_token(path: str | Path) -> str:
    """The bearer token in `path` (first line, stripped); a UserError when it is missing or empty."""
    from common.errors import UserError

    try:
        token = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the token file ({exc.strerror})") from None
    if not token or len(token[0]) < 16:
        raise UserError(f"{path}: the token must be at least 16 characters on the first line")
    return token[0]


def create_app(service: ScoringService, token: str | None = None):
    """The FastAPI app: POST /score, GET /health, GET /metrics; `token`: bearer token for /score."""
    import json

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI(title="fedsite finance scoring", version="1")
    expected = f"Bearer {token}".encode() if token else None

    def refuse(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        service.counts["rejected"] += 1
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.post("/score")
    async def score(request: Request):
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return refuse(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():  # chunked bodies have no length: count as they come
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except RecursionError:
            return refuse(400, "JSON nested too deeply")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return refuse(422, f"body is not valid JSON ({exc})")
        try:
            explain = request.query_params.get("explain", "").lower() in ("1", "true", "yes")
            return JSONResponse(service.score(body, explain=explain))
        except RequestError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(service.metrics_text(), media_type="text/plain; version=0.0.4")

    return app


def serve(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    state: str | Path | None = None,
    warm: str | Path | None = None,
    snapshot_every: float = 60.0,
    token_file: str | Path | None = None,
    remember: int = REMEMBER_IDS,
) -> None:
    """Run the service until interrupted (uvicorn, one worker: the account state is in-process).

    With `state`, the account state is restored from it when it exists, saved every `snapshot_every`
    seconds while requests change it, and saved once more on shutdown (SIGINT/SIGTERM).
    """
    import uvicorn

    from common.progress import log
    from verticals.finance import serve_state

    token = read_token(token_file) if token_file else None
    service = load_service(model_dir, remember)
    key = serve_state.model_key(model_dir) if state else ""
    if state and Path(state).is_file():
        scorer = service.scorer
        restored = serve_state.load(state, scorer.cfg.history, key, service.seen, analyst=scorer.analyst is not None)
        scorer.state, service.scored = restored[:2]
        scorer.analyst = restored[2] if scorer.analyst is not None else None
        log(f"restored {len(service.scorer.state.accounts)} accounts from {state}")
    if warm:
        log(f"warm start: replayed {warm_start(service, warm)} transactions from {warm}")
    app = create_app(service, token)
    saved = {"scored": -1}

    def snapshot() -> None:
        if state and service.scored != saved["scored"]:
            serve_state.save(state, service.scorer.state, service.seen, key, service.scored, service.scorer.analyst)
            saved["scored"] = service.scored

    if state:

        async def _schedule() -> None:
            async def every() -> None:
                while True:
                    await asyncio.sleep(snapshot_every)
                    snapshot()  # on the event loop: no request is half-scored while it runs

            app.state.snapshots = asyncio.get_running_loop().create_task(every())

        app.router.add_event_handler("startup", _schedule)

    # torch, ONNX Runtime and FastAPI leave ~1M long-lived objects; freezing them keeps the cyclic
    # GC from re-scanning them during requests (full collections showed up as p99 spikes)
    gc.collect()
    gc.freeze()
    log(f"serving {model_dir} on http://{host}:{port} ({service.scorer.backend})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        snapshot()
        if state:
            log(f"saved the account state to {state}")
