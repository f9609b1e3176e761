"""The hub's only network-facing port: Flower's Fleet API for sites, nothing else.

Flower 1.41's SuperLink serves its Fleet API (sites), Control API (registering sites, starting,
listing and stopping runs) and Runtime API (the ServerApp's connection) on ONE HTTP port, and the
open-source Control API asks for no credential (account authentication is OIDC, enterprise-only).
Whoever reaches that port with the public CA certificate could register a key of their own, list
the sites and submit a run whose code every site executes. So fedsite binds the SuperLink to
127.0.0.1 only and puts this gate on the address sites use: it terminates TLS with the hub's
certificate and forwards POST requests under /v1/fleet/ to the SuperLink over TLS on loopback,
headers (the sites' signed authentication headers) and body unchanged. Every other path, the
Control and Runtime APIs included, is answered 404 here and never reaches Flower.
"""

from __future__ import annotations

import contextlib
import posixpath
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

FLEET_PREFIX = "/v1/fleet/"
# hop-by-hop headers and those the two hops recompute
_DROP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade"}


def fleet_path(method: str, path: str) -> str | None:
    """The normalised path if this request may pass (POST under /v1/fleet/), else None.

    Normalising first means `/v1/fleet/../control/list-nodes` is judged (and sent) as what it is.
    """
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return norm if method == "POST" and norm.startswith(FLEET_PREFIX) else None


def create_app(upstream: str, ca: Path, timeout: float = 300.0) -> Starlette:
    """A Starlette app forwarding the Fleet API to `upstream` (https://127.0.0.1:PORT)."""
    context = ssl.create_default_context(cafile=str(ca))
    client = httpx.AsyncClient(base_url=upstream, verify=context, timeout=timeout)

    async def forward(request: Request) -> Response:
        path = fleet_path(request.method, request.url.path)
        if path is None:
            return PlainTextResponse("not served on this address (the hub's Fleet API only)\n", status_code=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        try:
            reply = await client.post(path, params=request.url.query or None, content=await request.body(),
                                      headers=headers)  # fmt: skip
        except httpx.HTTPError:
            return PlainTextResponse("hub unavailable\n", status_code=503)
        out = {k: v for k, v in reply.headers.items() if k.lower() not in _DROP}
        return Response(reply.content, status_code=reply.status_code, headers=out)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    routes = [Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])]
    return Starlette(routes=routes, lifespan=lifespan)


def server(host: str, port: int, upstream: str, certs: Path):  # -> uvicorn.Server
    """The uvicorn server of the gate (TLS with the hub's certificate); run it with `.run()`."""
    import uvicorn

    config = uvicorn.Config(
        create_app(upstream, certs / "ca.crt"), host=host, port=port, log_level="warning",
        ssl_certfile=str(certs / "server.pem"), ssl_keyfile=str(certs / "server.key"),
        timeout_graceful_shutdown=2, lifespan="on",
    )  # fmt: skip
    return uvicorn.Server(config)
