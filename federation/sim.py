"""Running N sites on one machine: Flower's simulation engine (Ray), or an in-process engine.

`ray` is Flower's own Simulation Runtime (`flwr.simulation.run_simulation`): every site's ClientApp
runs in a Ray worker process, as in Flower's tutorials. Starting Ray costs 10-20 s on this class of
machine, which dominates small runs, so `inprocess` runs the *same* ServerApp loop and the *same*
ClientApp, with the same Flower Messages, behind a minimal Grid (grid.py) that calls each site's ClientApp in
this process, one at a time (deterministic, no start-up cost). Tests and the demo's small verticals
use it; `fedsite federate --engine ray` is the default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.grid import InProcessGrid
from federation.settings import FederationSettings

ENGINES = ("ray", "inprocess")


def _task_path(settings: FederationSettings) -> str | None:
    """The directory a non-package task module lives in (tests/), so Ray workers can import it."""
    if not settings.task_module:
        return None
    module = sys.modules.get(settings.task_module)
    file = getattr(module, "__file__", None)
    return str(Path(file).resolve().parent) if file else None


def run(settings: FederationSettings, engine: str = "ray") -> dict[str, Any]:
    """Run a federation of `settings.sites` simulated sites; returns the history."""
    from federation.client_app import app as client_app
    from federation.server_app import run_federation

    if engine == "inprocess":
        return run_federation(
            InProcessGrid(client_app, settings.sites, timeout=settings.round_timeout or None), settings
        )
    if engine != "ray":
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    from flwr.simulation import run_simulation

    holder: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            holder["history"] = run_federation(grid, settings)
        except BaseException as exc:  # surfaced in the caller's thread below
            holder["error"] = exc

    extra = _task_path(settings)
    if extra:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH", "")) if p)
    cpus = max(1, min(os.cpu_count() or 1, settings.sites))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=settings.sites,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False},
        },
    )
    if "error" in holder:
        from federation.server_app import SitesNotReady

        if isinstance(holder["error"], SitesNotReady):
            from common.progress import log

            log(
                f"{holder['error']}: Ray's site workers are slow to start on this machine (busy?); "
                "running the same federation on the in-process engine instead (--engine inprocess skips Ray)"
            )
            return run(settings, "inprocess")
        raise holder["error"]
    if "history" not in holder:
        raise RuntimeError("the Flower simulation ended without a result (see the log above)")
    return holder["history"]


def model_config(task: Any, vertical: str, config_file, overrides, preset: str | None = None) -> Any:
    """The model config from --config/--set, over a named preset of the Task (--tiny, --quick) if given."""
    from common import config

    base = task.preset(preset) if preset else None
    return config.resolve(task.config_cls, config_file, list(overrides), section=vertical, base=base)


def simulate(
    vertical: str,
    out: Path,
    *,
    resume: bool = False,
    engine: str = "ray",
    scale: str = "small",
    config_file: str | Path | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    tiny: bool = False,
    cfg: Any = None,
    **knobs: Any,
) -> dict[str, Any]:
    """The Python API behind `fedsite federate`: make the sites' data, run the federation, write outputs.

    `cfg`, when given, is used as is (Python callers such as the demo); `knobs` are FederationSettings
    fields (sites, rounds, strategy, seed, clip, noise, compression, min_results, fail_site, ...), each
    defaulting to the settings' default. Bad input raises UserError with a one-line message.
    """
    import json

    from common import atomic, config, registry
    from common.errors import UserError
    from federation import codec, strategies
    from federation.partition import prepare_sites

    if vertical not in registry.VERTICALS:
        raise UserError(f"--vertical {vertical}: unknown (known: {', '.join(registry.names())})")
    task = registry.get_task(vertical)
    run_knobs = {**FederationSettings.defaults(), **knobs}
    sites, rounds, seed = run_knobs["sites"], run_knobs["rounds"], run_knobs["seed"]
    if run_knobs["strategy"] not in strategies.STRATEGIES:
        raise UserError(f"--strategy {run_knobs['strategy']}: unknown (known: {', '.join(strategies.STRATEGIES)})")
    if run_knobs["compression"] not in codec.CODECS:
        raise UserError(f"--compression {run_knobs['compression']}: unknown (known: {', '.join(codec.CODECS)})")
    if sites < 1 or rounds < 1:
        raise UserError(f"--sites {sites} --rounds {rounds}: both must be at least 1")
    if cfg is None:
        cfg = model_config(task, vertical, config_file, overrides, "tiny" if tiny else None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    suffix = prepare_sites(task, out / "data", sites, seed=seed, scale=scale)
    settings = FederationSettings(
        **knobs,
        vertical=vertical,
        task_module=registry.VERTICALS[vertical],
        config_toml=config.to_toml(cfg),
        data_root=str((out / "data").resolve()),
        source_suffix=suffix,
        out_dir=str(out.resolve()),
        resume=resume,
    )
    run_file = out / "run.json"
    identity = {k: v for k, v in settings.to_config().items() if k not in ("rounds", "resume", "node-wait")}
    if resume and run_file.exists():
        before = json.loads(run_file.read_text(encoding="utf-8"))
        changed = sorted(k for k in identity if before.get(k) != identity[k])
        if changed:
            raise UserError(f"{run_file}: --resume with different settings ({', '.join(changed)}); use a new --out")
    atomic.write_text(run_file, json.dumps(identity, indent=2) + "\n")
    return run(settings, engine)
