"""Real deployments: command lines for Flower's SuperLink (hub) and SuperNodes (sites), and run submission.

fedsite does not reimplement Flower's deployment engine; it starts Flower's own processes with
the safe choices made: TLS always on (certificates from `fedsite certs`), supernode
authentication always on (only registered site keys may connect), no runtime dependency
installation (sites are often offline), the SuperLink bound to 127.0.0.1 behind the Fleet-only
gate (gate.py: its Control API never faces the network), the hub's registrations and runs in a
database under its state directory, and each site's state under the site's own directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import tomli_w

from common.atomic import write_text
from common.errors import UserError

CONNECTION = "fedsite"


def app_dir() -> Path:
    """The project directory holding pyproject.toml's [tool.flwr.app] (what `flwr run` packages)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        raise UserError(f"{root}: no pyproject.toml; `fedsite hub run` needs an installed source checkout")
    return root


def flwr_home(state: Path | None) -> Path:
    """FLWR_HOME for this process tree (explicit --state wins, then $FLWR_HOME, then ~/.flwr)."""
    home = Path(state) if state else Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def _need(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"{path}: {what} not found")
    return Path(path).resolve()


def _exe(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        raise UserError(f"{name}: not installed (install fedsite with its flwr dependency)")
    return found


def write_connection(home: Path, host: str, port: int, ca: Path) -> Path:
    """FLWR_HOME/config.toml naming this hub, so `flwr supernode register` and `flwr run` reach it."""
    config = {
        "superlink": {"default": CONNECTION, CONNECTION: {"address": f"{host}:{port}", "root-certificates": str(ca)}}
    }
    return write_text(home / "config.toml", tomli_w.dumps(config))


TASK_POLL_SECONDS = 0.2
CONTROL_PORT = 9093  # the SuperLink's own port (Control + Fleet + Runtime APIs), on 127.0.0.1 only
DATABASE = "hub.db"
APPS = "apps"  # signed FABs and their signatures, served to the SuperLink (appsign.py)


def check_hub_certs(certs: Path) -> None:
    """Refuse a certificates directory that holds the CA private key (it belongs offline)."""
    from federation.certs import CA_KEY

    if (Path(certs) / CA_KEY).exists():
        raise UserError(
            f"{Path(certs) / CA_KEY}: the CA private key must not sit beside the hub's runtime certificates; "
            "move it offline (see federation/README.md, Deploying at hospitals)"
        )


def hub_command(certs: Path, port: int, database: Path) -> list[str]:
    """flower-superlink on 127.0.0.1:`port` with TLS, supernode authentication, offline app
    installation and its state (registered site keys, runs) in `database` (SQLite)."""
    certs = Path(certs)
    check_hub_certs(certs)
    return [
        _exe("flower-superlink"),
        "--ssl-ca-certfile", str(_need(certs / "ca.crt", "CA certificate")),
        "--ssl-certfile", str(_need(certs / "server.pem", "hub certificate")),
        "--ssl-keyfile", str(_need(certs / "server.key", "hub key")),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database", str(database),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip


def site_command(
    data: Path, hub: str, ca: Path, key: Path, name: str, port: int, retries: int | None, state: Path
) -> list[str]:
    """flower-supernode pointing at the hub, signing with the site's key, reading DATA and keeping
    its state (optimizer moments, residuals, normalisation) in STATE, both on this machine."""
    data = Path(data)
    if not data.exists():
        raise UserError(f"{data}: site data not found")
    state = Path(state).resolve()
    node_config = f'data-dir="{data.resolve()}" site-name="{name}" state-dir="{state}"'
    cmd = [
        _exe("flower-supernode"),
        "--root-certificates", str(_need(ca, "CA certificate")),
        "--superlink", hub,
        "--auth-supernode-private-key", str(_need(key, "site private key")),
        "--node-config", node_config,
        "--port", str(port),
    ]  # fmt: skip
    if retries is not None:
        cmd += ["--max-retries", str(retries)]
    return cmd


def register_command(public_key: Path, name: str | None) -> list[str]:
    cmd = [_exe("flwr"), "supernode", "register", str(_need(public_key, "site public key")), CONNECTION]
    return cmd + (["--name", name] if name else [])


def run_config_file(path: Path, values: dict[str, Any]) -> Path:
    """The run config for `flwr run --run-config FILE` (keys must exist in [tool.flwr.app.config])."""
    return write_text(path, tomli_w.dumps(values))


def signed_app(home: Path) -> str:
    """`@publisher/name==version` of this checkout's app, which must have been signed (`hub sign`)."""
    from federation.appsign import app_identity, latest

    app_id, version = app_identity(app_dir())
    if latest(home / APPS, app_id, version) is None:
        raise UserError(
            f"{home / APPS}: no signed {app_id}=={version}; run `fedsite hub sign --key OPERATOR_KEY` "
            "(or `hub run --unsigned` for sites that do not check signatures)"
        )
    return f"{app_id}=={version}"


def run_command(app: str, config_file: Path) -> list[str]:
    """`flwr run` of `app` (a signed app's `@id==version`, or a directory) with a run-config file."""
    return [_exe("flwr"), "run", app, CONNECTION, "--stream", "--run-config", str(config_file)]


def offline_env(home: Path) -> dict[str, str]:
    """Environment for Flower processes: our FLWR_HOME, no runtime dependency installation.

    Flower's SuperLink and SuperNode start helpers (`flower-superexec`, ...) by name, so this
    interpreter's script directory goes first on PATH: `.venv/bin/fedsite hub start` then works
    without an activated virtual environment.
    """
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts]])
    env["FLWR_HOME"] = str(home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    # how often Flower's SuperExec asks for work: every message a site gets waits for it to start the
    # app's process (default 1 s, i.e. 0.5 s a message on average; a poll is one loopback request)
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(TASK_POLL_SECONDS))
    return env


def wait_listening(host: str, port: int, timeout: float, process: Any = None) -> bool:
    """True once something accepts TCP connections on host:port; False on timeout or if `process`
    (a Popen) exits first."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False
