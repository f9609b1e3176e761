"""Apps signed by the hub operator, verified by each site with Flower's own trusted entities.

A Flower SuperNode started with `--trusted-entities` runs a run's app (FAB) only if the FAB carries
an Ed25519 signature, over (signed_at, sha256(FAB)), by one of the keys listed there
(`supernode/start_client_internal.py::_verify_fab`). In open-source Flower 1.41 the SuperLink attaches
signatures only to apps it fetches from a Flower Hub "Platform API" (`flwr run @account/app==version`:
POST {FLWR_SUPERGRID_API_URL}/hub/fetch-fab returns a download URL and the signatures); an app sent
as files by `flwr run DIR` carries none, so such sites refuse it. fedsite therefore signs the app
with the operator's key (`fedsite hub sign`, the same message `flwr app review` signs) into an app
directory, and `fedsite hub start` serves that directory to its own SuperLink as a Platform API on
127.0.0.1 only (FLWR_SUPERGRID_API_URL). A site started with `--trust operator.pub` then runs only
apps the operator signed: not an unsigned one, not one signed by any other key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.atomic import write_bytes, write_text

FAB_SUFFIX = ".fab"
SIGNATURE_SUFFIX = ".signature.json"


def make_operator_key(out: Path, name: str = "operator") -> dict[str, Path]:
    """An Ed25519 key pair (OpenSSH format) for signing apps; the .pub goes to every site."""
    from federation.certs import _write_private

    if (Path(out) / f"{name}.key").exists():
        raise FileExistsError(f"{Path(out) / f'{name}.key'}: exists; remove it first to make a new signing key")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    paths = {"private": Path(out) / f"{name}.key", "public": Path(out) / f"{name}.pub"}
    _write_private(paths["private"], private)
    write_bytes(paths["public"], public + f" {name}\n".encode())
    return paths


def key_id(public_key: str) -> str:
    """The name a public key goes by in signatures and in a site's trusted-entities file."""
    blob = public_key.split()[1] if len(public_key.split()) > 1 else public_key
    return "fpk_" + hashlib.sha256(blob.encode()).hexdigest()[:24]


def public_text(key: ed25519.Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode()


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_ssh_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 key (make one with `fedsite hub keygen`)")
    return key


def sign(fab: bytes, key: ed25519.Ed25519PrivateKey, signed_at: int | None = None) -> dict[str, Any]:
    """One verification record as Flower's SuperNode checks it (`flwr app review` signs the same)."""
    from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign, sign_message

    signed_at = int(time.time()) if signed_at is None else signed_at
    signature = sign_message(key, create_message_to_sign(hashlib.sha256(fab).digest(), signed_at))
    return {
        "public_key_id": key_id(public_text(key)),
        "signature": base64.urlsafe_b64encode(signature).decode().rstrip("="),
        "signed_at": signed_at,
    }


def app_identity(app_dir: Path) -> tuple[str, str]:
    """('@publisher/name', version) of the app in `app_dir`'s pyproject.toml, as Flower names it."""
    import tomllib

    project = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text(encoding="utf-8"))
    publisher = project["tool"]["flwr"]["app"]["publisher"]
    return f"@{publisher}/{project['project']['name']}", str(project["project"]["version"])


def build_and_sign(app_dir: Path, key_path: Path, apps: Path) -> Path:
    """Build the FAB of `app_dir` with Flower's builder, sign it, store both in `apps`; returns the FAB."""
    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(Path(app_dir))
    digest = hashlib.sha256(fab).hexdigest()
    app_id, version = app_identity(app_dir)
    record = {"app_id": app_id, "app_version": version, "verifications": [sign(fab, load_signing_key(key_path))]}
    path = write_bytes(Path(apps) / f"{digest}{FAB_SUFFIX}", fab)
    write_text(Path(apps) / f"{digest}{SIGNATURE_SUFFIX}", json.dumps(record, indent=1))
    return path


def trusted_entities_file(public_keys: list[Path], out: Path) -> Path:
    """The YAML file for `flower-supernode --trusted-entities` ({key id: public key}; JSON is YAML)."""
    entries = {}
    for path in public_keys:
        text = " ".join(Path(path).read_text(encoding="utf-8").split()[:2])
        if not text.startswith("ssh-ed25519 "):
            raise ValueError(f"{path}: not an Ed25519 public key (the operator's .pub from `fedsite hub keygen`)")
        entries[key_id(text)] = text
    return write_text(out, json.dumps(entries, indent=1))


def latest(apps: Path, app_id: str, version: str | None) -> tuple[str, list[dict[str, Any]]] | None:
    """(FAB digest, verifications) of the newest signed app matching `app_id` (and `version`)."""
    found = []
    for sig in Path(apps).glob(f"*{SIGNATURE_SUFFIX}"):
        record = json.loads(sig.read_text(encoding="utf-8"))
        if record["app_id"] == app_id and version in (None, record["app_version"]):
            found.append((sig.stat().st_mtime, sig.name[: -len(SIGNATURE_SUFFIX)], record["verifications"]))
    if not found:
        return None
    _, digest, verifications = max(found)
    return digest, verifications


def create_registry(apps: Path, base_url: str):  # -> Starlette
    """The Platform API subset the SuperLink calls for `flwr run @app==version`: fetch-fab and the FAB."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def fetch_fab(request: Request) -> Response:
        body = await request.json()
        hit = latest(apps, str(body.get("app_id", "")), body.get("app_version") or None)
        if hit is None:
            return JSONResponse({"detail": f"{body.get('app_id')}: no app signed by the operator"}, status_code=404)
        digest, verifications = hit
        return JSONResponse({"fab_url": f"{base_url}/fab/{digest}", "verifications": verifications})

    async def fab(request: Request) -> Response:
        digest = request.path_params["digest"]
        path = Path(apps) / f"{digest}{FAB_SUFFIX}"
        if not digest.isalnum() or not path.exists():
            return Response(status_code=404)
        return Response(path.read_bytes(), media_type="application/octet-stream")

    return Starlette(routes=[Route("/v1/hub/fetch-fab", fetch_fab, methods=["POST"]), Route("/fab/{digest}", fab)])


def registry_server(apps: Path, port: int):  # -> uvicorn.Server
    """The registry on 127.0.0.1:`port` (plain HTTP on loopback: the FAB is checked by signature)."""
    import uvicorn

    app = create_registry(apps, f"http://127.0.0.1:{port}")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    return uvicorn.Server(config)
