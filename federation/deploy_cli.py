"""`fedsite certs|hub|site`: run the federation across real machines with Flower's deployment engine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import typer

hub_app = typer.Typer(no_args_is_help=True, help="The federation hub (Flower SuperLink).")
site_app = typer.Typer(no_args_is_help=True, help="A site (Flower SuperNode) training on its local data.")
certs_app = typer.Typer(no_args_is_help=True, help="TLS certificates for the hub and keys for sites.")


@certs_app.command("make")
def certs_make(
    out: Path = typer.Option(..., "--out", help="Directory of what the hub runs with: ca.crt, server.pem/.key."),
    host: list[str] = typer.Option([], "--host", help="Hub address(es) sites use (loopback is always added)."),
    ca_key: Path | None = typer.Option(
        None, "--ca-key", help="Where the CA private key goes (default OUT-ca-private/ca.key; keep it offline)."
    ),
    days: int = typer.Option(365, "--days", help="Validity of the certificates."),
) -> None:
    """Make a CA and the hub's TLS certificate; the CA private key is written apart from OUT."""
    from common.errors import UserError
    from common.progress import log
    from federation.certs import make_tls

    try:
        paths = make_tls(out, list(host), days, ca_key)
    except ValueError as err:
        raise UserError(str(err)) from None
    log(f"wrote {paths['ca']}, {paths['cert']}, {paths['key']} (the hub's) and {paths['ca_key']}")
    log(f"keep {paths['ca_key']} offline: it can mint a certificate sites would trust as the hub")


@site_app.command("keygen")
def site_keygen(
    name: str = typer.Option(..., "--name", help="The site's name (file stem and key comment)."),
    out: Path = typer.Option(Path("."), "--out", help="Directory for NAME.key (stays here) and NAME.pub."),
) -> None:
    """Make this site's authentication key pair at the site; send only NAME.pub to the hub operator."""
    from common.errors import UserError
    from common.progress import log
    from federation.certs import make_site_keys

    try:
        paths = make_site_keys(out, name)
    except FileExistsError as err:
        raise UserError(str(err)) from None
    log(f"wrote {paths['private']} (private, mode 0600, never leaves this site) and {paths['public']} (send it)")


def _supervise(flower: list[str], env: dict[str, str], servers: tuple = (), ready=None) -> int:
    """Run Flower's process (and the hub's own servers: gate, app registry) until SIGTERM/SIGINT or
    until one of them ends, then stop every process of the tree within a few seconds (procs.py).
    Returns Flower's exit code (0 when it was stopped on request)."""
    import threading

    from federation import procs

    procs.become_subreaper()
    stopping = threading.Event()
    procs.on_terminate(stopping.set)
    child = procs.start(flower, env)
    threads = []
    try:
        if ready is not None:
            ready(child)
        for server in servers:
            threads.append(threading.Thread(target=server.run, daemon=True))
            threads[-1].start()
        while not stopping.wait(0.3):
            if child.poll() is not None or not all(t.is_alive() for t in threads):
                break
    finally:
        code = child.poll()
        for server in servers:  # they stop while Flower's tree gets its TERM (graceful <= 1-2 s each)
            server.should_exit = True
        procs.stop_tree(grace=3.0)
        for thread in threads:
            thread.join(timeout=3)
    return 0 if stopping.is_set() or code is None else code


@hub_app.command("keygen")
def hub_keygen(
    out: Path = typer.Option(..., "--out", help="Directory for operator.key (keep it off the hub) and operator.pub."),
    name: str = typer.Option("operator", "--name", help="File stem of the key pair."),
) -> None:
    """Make the operator's app-signing key (Ed25519); every site trusts its .pub (`site start --trust`)."""
    from common.errors import UserError
    from common.progress import log
    from federation.appsign import make_operator_key

    try:
        paths = make_operator_key(out, name)
    except FileExistsError as err:
        raise UserError(str(err)) from None
    log(f"wrote {paths['private']} (signs apps; keep it off the hub) and {paths['public']} (give it to every site)")


@hub_app.command("sign")
def hub_sign(
    key: Path = typer.Option(..., "--key", help="The operator's signing key (from `fedsite hub keygen`)."),
    apps: Path | None = typer.Option(None, "--apps", help="App directory the hub serves (default STATE/apps)."),
    state: Path | None = typer.Option(None, "--state", help="The hub's state directory."),
) -> None:
    """Build this checkout's Flower app (FAB) and sign it for the hub to serve to sites."""
    from common.errors import UserError
    from common.progress import log
    from federation import appsign, deploy

    if not key.is_file():
        raise UserError(f"{key}: signing key not found")
    target = apps or deploy.flwr_home(state) / deploy.APPS
    try:
        fab = appsign.build_and_sign(deploy.app_dir(), key, target)
    except ValueError as err:
        raise UserError(str(err)) from None
    log(f"signed {fab} ({fab.stat().st_size} bytes)")


@hub_app.command("start")
def hub_start(
    certs: Path = typer.Option(..., "--certs", help="Directory made by `fedsite certs make` (without the CA key)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address sites connect to (0.0.0.0: all interfaces)."),
    port: int = typer.Option(9092, "--port", help="Port for sites (Flower's Fleet API only)."),
    control_port: int = typer.Option(
        9093, "--control-port", help="The SuperLink's own port on 127.0.0.1 (registration and run submission)."
    ),
    registry_port: int = typer.Option(
        9095, "--registry-port", help="Port on 127.0.0.1 serving the signed apps to the SuperLink."
    ),
    state: Path | None = typer.Option(
        None, "--state", help="The hub's state directory: FLWR_HOME, hub.db, apps/ (default $FLWR_HOME or ~/.flwr)."
    ),
) -> None:
    """Start the hub: sites reach only the Fleet API on HOST:PORT (TLS, registered keys only); the
    Control API stays on 127.0.0.1:CONTROL_PORT; registrations and runs persist in STATE/hub.db;
    the apps signed with `hub sign` (STATE/apps) are served to the SuperLink with their signatures."""
    from common.errors import UserError
    from federation import appsign, deploy, gate

    if len({port, control_port, registry_port}) < 3:
        raise UserError(f"--port {port}, --control-port {control_port}, --registry-port {registry_port}: must differ")
    home = deploy.flwr_home(state)
    certs = certs.resolve()
    cmd = deploy.hub_command(certs, control_port, home / deploy.DATABASE)
    deploy.write_connection(home, "127.0.0.1", control_port, certs / "ca.crt")
    front = gate.server(host, port, f"https://127.0.0.1:{control_port}", certs)
    (home / deploy.APPS).mkdir(exist_ok=True)
    registry = appsign.registry_server(home / deploy.APPS, registry_port)
    env = deploy.offline_env(home)
    env["FLWR_SUPERGRID_API_URL"] = f"http://127.0.0.1:{registry_port}/v1"

    def ready(child) -> None:
        if not deploy.wait_listening("127.0.0.1", control_port, 60.0, child):
            raise UserError(f"flower-superlink did not start listening on 127.0.0.1:{control_port}")

    raise typer.Exit(_supervise(cmd, env, (front, registry), ready))


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
    eval_every: int = typer.Option(1, "--eval-every", help="Sites score every k-th round (and the last)."),
    cross_site: bool = typer.Option(False, "--cross-site/--no-cross-site", help="Also train local-only models."),
    task_module: str = typer.Option("", "--task-module", help="Import path of a Task outside the registry."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    secagg: bool = typer.Option(False, "--secagg", help="SecAgg+: the hub learns only the mean update."),
    unsigned: bool = typer.Option(
        False, "--unsigned", help="Send this checkout unsigned (sites started with --trust refuse it)."
    ),
    state: Path | None = typer.Option(None, "--state", help="The hub's state directory (as for hub start)."),
) -> None:
    """Submit a federated run to the running hub and stream its log until it ends."""
    from common import config, registry
    from common.errors import UserError
    from federation import deploy, strategies
    from federation.secagg import incompatibility

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
    if eval_every < 1:
        raise UserError(f"--eval-every {eval_every}: must be at least 1")
    if secagg and (why := incompatibility(strategy, compression, sites=sites)):
        raise UserError(f"--secagg: {why}")
    home = deploy.flwr_home(state)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    values = {
        "vertical": vertical, "task-module": module, "config-toml": config.to_toml(cfg),
        "num-server-rounds": rounds, "sites": sites, "strategy": strategy, "seed": seed, "clip": clip,
        "noise": noise, "compression": compression, "min-results": min_results, "round-timeout": round_timeout,
        "eval-every": eval_every, "cross-site": cross_site, "out-dir": str(out), "local-epochs": 0,
        "synthesize-sites": False, "resume": resume, "secagg": secagg,
    }  # fmt: skip
    config_file = deploy.run_config_file(out / "run-config.toml", values)
    app = str(deploy.app_dir()) if unsigned else deploy.signed_app(home)
    done = subprocess.run(deploy.run_command(app, config_file), env=deploy.offline_env(home))
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
    key: Path = typer.Option(..., "--key", help="This site's private key (from `fedsite site keygen`)."),
    name: str = typer.Option("site-0", "--name", help="The site's name in reports."),
    port: int = typer.Option(9094, "--port", help="Local port for the site's app runtime (one per site per host)."),
    retries: int | None = typer.Option(None, "--retries", help="Give up after this many failed connection attempts."),
    state: Path = typer.Option(
        Path.home() / ".fedsite-site", "--state", help="This site's state: FLWR_HOME and per-run training state."
    ),
    trust: list[Path] = typer.Option(
        [], "--trust", help="Run only apps signed by this operator key (.pub from `hub keygen`; repeatable)."
    ),
) -> None:
    """Start a site: connect to the hub over TLS, authenticate with the site key, train when asked.
    Every file the site writes (Flower's and fedsite's) is under --state or is its log on stderr."""
    from common.errors import UserError
    from federation import appsign, deploy

    home = deploy.flwr_home(state / "flwr")
    cmd = deploy.site_command(data, hub, ca, key, name, port, retries, state / "site_state")
    if trust:
        missing = [str(p) for p in trust if not p.is_file()]
        if missing:
            raise UserError(f"{missing[0]}: operator public key not found")
        try:
            entities = appsign.trusted_entities_file(list(trust), state / "trusted-entities.yaml")
        except ValueError as err:
            raise UserError(str(err)) from None
        cmd += ["--trusted-entities", str(entities)]
    raise typer.Exit(_supervise(cmd, deploy.offline_env(home)))
