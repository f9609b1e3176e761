"""`fedsite certs|hub|site`: run the federation across real machines with Flower's deployment engine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer

hub_app = typer.Typer(no_args_is_help=True, help="The federation hub (Flower SuperLink).")
site_app = typer.Typer(no_args_is_help=True, help="A site (Flower SuperNode) training on its local data.")
certs_app = typer.Typer(no_args_is_help=True, help="TLS certificates for the hub and keys for sites.")


@certs_app.command("make")
def certs_make(
    out: Path = typer.Option(..., "--out", help="Directory for ca.crt, server.pem/.key and sites/<name>.key/.pub."),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="Hub address(es) for the certificate."),
    site: list[str] = typer.Option([], "--site", help="Make an authentication key pair for this site (repeatable)."),
    days: int = typer.Option(365, "--days", help="Validity of the certificates."),
) -> None:
    """Make a CA, the hub's TLS certificate and one key pair per site."""
    from common.progress import log
    from federation.certs import make_site_keys, make_tls

    paths = make_tls(out, list(host), days)
    for name in site:
        make_site_keys(out / "sites", name)
    log(
        f"wrote {paths['ca']}, {paths['cert']}, {paths['key']}" + (f" and {len(site)} site key pair(s)" if site else "")
    )


@certs_app.command("site")
def certs_site(
    name: str = typer.Argument(..., help="Site name."),
    out: Path = typer.Option(..., "--out", help="Directory for <name>.key (private, stays at the site) and .pub."),
) -> None:
    """Make one more site key pair (register its .pub with `fedsite hub register`)."""
    from federation.certs import make_site_keys

    make_site_keys(out, name)


def _exec(cmd: list[str], env: dict[str, str]) -> None:
    """Replace this process with Flower's (signals and exit code then belong to it)."""
    os.execvpe(cmd[0], cmd, env)


@hub_app.command("start")
def hub_start(
    certs: Path = typer.Option(..., "--certs", help="Directory made by `fedsite certs make`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for all interfaces)."),
    port: int = typer.Option(9092, "--port", help="Port for sites and for run submission."),
    state: Path | None = typer.Option(None, "--state", help="FLWR_HOME for the hub (default $FLWR_HOME or ~/.flwr)."),
) -> None:
    """Start the hub: TLS on, only registered sites admitted, no runtime dependency installation."""
    from federation import deploy

    home = deploy.flwr_home(state)
    cmd = deploy.hub_command(certs, host, port)
    deploy.write_connection(
        home, "127.0.0.1" if host in ("0.0.0.0", "::") else host, port, (certs / "ca.crt").resolve()
    )
    _exec(cmd, deploy.offline_env(home))


@hub_app.command("register")
def hub_register(
    public_key: Path = typer.Argument(..., help="A site's .pub file from `fedsite certs`."),
    name: str | None = typer.Option(None, "--name", help="A name for the site in the hub's list."),
    state: Path | None = typer.Option(None, "--state", help="The hub's FLWR_HOME."),
) -> None:
    """Admit a site: register its public key with the running hub."""
    from common.errors import UserError
    from federation import deploy

    home = deploy.flwr_home(state)
    done = subprocess.run(
        deploy.register_command(public_key, name), env=deploy.offline_env(home), capture_output=True, text=True
    )
    if done.returncode != 0 or "registered successfully" not in done.stdout:
        last = (done.stdout + done.stderr).strip().splitlines()
        raise UserError(f"{public_key}: registration refused by the hub ({last[-1] if last else 'no output'})")
    print(done.stdout.strip().splitlines()[-1])


@hub_app.command("run")
def hub_run(
    vertical: str = typer.Option(..., "--vertical", help="medical, finance or manufacturing."),
    rounds: int = typer.Option(2, "--rounds", help="Federated rounds."),
    sites: int = typer.Option(2, "--sites", help="Sites to wait for before the first round."),
    out: Path = typer.Option(..., "--out", help="Run directory on the hub: history.json, global_model/, report.md."),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg|fedprox|fedadam|median|trimmed-mean|krum."),
    seed: int = typer.Option(0, "--seed", help="Seed for the initial model and the sites' training."),
    tiny: bool = typer.Option(False, "--tiny", help="Use the vertical's tiny config."),
    set_: list[str] = typer.Option([], "--set", help="key=value override of the model config (repeatable)."),
    clip: float = typer.Option(0.0, "--clip", help="DP clipping norm (0: off)."),
    noise: float = typer.Option(0.0, "--noise", help="DP noise multiplier."),
    compression: str = typer.Option("none", "--compression", help="none|int8|topk."),
    min_results: int = typer.Option(1, "--min-results", help="Fewest site updates needed to aggregate."),
    round_timeout: float = typer.Option(0.0, "--round-timeout", help="Seconds to wait for sites (0: all)."),
    cross_site: bool = typer.Option(False, "--cross-site/--no-cross-site", help="Also train local-only models."),
    task_module: str = typer.Option("", "--task-module", help="Import path of a Task outside the registry."),
    state: Path | None = typer.Option(None, "--state", help="The hub's FLWR_HOME."),
) -> None:
    """Submit a federated run to the running hub and stream its log until it ends."""
    from common import config, registry
    from common.errors import UserError
    from federation import deploy, strategies

    if strategy not in strategies.STRATEGIES:
        raise UserError(f"--strategy {strategy}: unknown (known: {', '.join(strategies.STRATEGIES)})")
    module = task_module or registry.VERTICALS.get(vertical, "")
    if not module:
        raise UserError(f"--vertical {vertical}: unknown (known: {', '.join(registry.names())})")
    import importlib

    task = importlib.import_module(module).TASK
    if task is None:
        raise UserError(f"--vertical {vertical}: this vertical is not available in this build yet")
    base = task.tiny_config() if tiny else task.config_cls()
    if any("=" not in item for item in set_):
        raise UserError("--set: expected key=value")
    cfg = config.replace(base, **dict(item.split("=", 1) for item in set_))
    home = deploy.flwr_home(state)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    values = {
        "vertical": vertical, "task-module": module, "config-toml": config.to_toml(cfg),
        "num-server-rounds": rounds, "sites": sites, "strategy": strategy, "seed": seed, "clip": clip,
        "noise": noise, "compression": compression, "min-results": min_results, "round-timeout": round_timeout,
        "cross-site": cross_site, "out-dir": str(out), "local-epochs": 0, "synthesize-sites": False,
    }  # fmt: skip
    config_file = deploy.run_config_file(out / "run-config.toml", values)
    done = subprocess.run(deploy.run_command(config_file), env=deploy.offline_env(home))
    if done.returncode != 0 or not (out / "history.json").exists():
        raise UserError(f"{out}: the federated run did not complete (flwr run exited {done.returncode})")
    import json

    from common.errors import PartialSuccess
    from federation.report import failed_sites

    failed = failed_sites(json.loads((out / "history.json").read_text(encoding="utf-8")))
    if failed:
        raise PartialSuccess(f"site(s) {', '.join(failed)} failed in some rounds; see {out / 'report.md'}", len(failed))


@site_app.command("start")
def site_start(
    data: Path = typer.Option(..., "--data", help="This site's data (what the vertical's train command reads)."),
    hub: str = typer.Option("127.0.0.1:9092", "--hub", help="Hub address host:port."),
    ca: Path = typer.Option(..., "--ca", help="The hub's CA certificate (ca.crt)."),
    key: Path = typer.Option(..., "--key", help="This site's private key (from `fedsite certs`)."),
    name: str = typer.Option("site-0", "--name", help="The site's name in reports."),
    port: int = typer.Option(9094, "--port", help="Local port for the site's app runtime (one per site per host)."),
    retries: int | None = typer.Option(None, "--retries", help="Give up after this many failed connection attempts."),
    state: Path | None = typer.Option(None, "--state", help="FLWR_HOME for this site."),
) -> None:
    """Start a site: connect to the hub over TLS, authenticate with the site key, train when asked."""
    from federation import deploy

    home = deploy.flwr_home(state)
    _exec(deploy.site_command(data, hub, ca, key, name, port, retries), deploy.offline_env(home))
