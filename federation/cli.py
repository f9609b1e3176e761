"""`fedsite federate`: simulate N sites with Flower on this machine (thin: parse, call, map errors).

The settings options (--sites, --rounds, --strategy, ... --fail-mode) are built from the fields of
FederationSettings (settings.option), so the command cannot drift from the settings' defaults. An
option that is not given takes the `--recipe`'s value (federation/recipes.py), else the default.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from federation.settings import FederationSettings, config_keys


def resolve(
    vertical: str,
    given: dict[str, Any],
    *,
    recipe: str | None = None,
    tiny: bool = False,
    quick: bool = False,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    scale: str | None = None,
) -> tuple[Any, str, dict[str, Any]]:
    """(model config, data scale, FederationSettings knobs) of one invocation: the options given,
    over the recipe's values, over the defaults. Bad input raises UserError."""
    from common import config, registry
    from common.errors import UserError
    from federation.recipes import resolve as resolve_recipe
    from federation.sim import model_config

    task = registry.get_task(vertical)
    knobs = {k: config_keys(v) if k == "final_round_only" else v for k, v in given.items() if v is not None}
    if tiny and quick:
        raise UserError("--tiny and --quick: choose one")
    if recipe is None:
        preset = "tiny" if tiny else "small" if quick else None
        return model_config(task, vertical, config_file, overrides, preset), scale or "small", knobs
    if tiny or quick or config_file:
        raise UserError("--recipe and --tiny/--quick/--config: choose one (use --set to adjust the recipe's config)")
    chosen = resolve_recipe(task, recipe)
    pairs = [item.split("=", 1) for item in overrides]
    if any(len(p) != 2 for p in pairs):
        raise UserError("--set: expected key=value")
    cfg = config.replace(chosen.model_config(task), **{k.strip(): v.strip() for k, v in pairs})
    return cfg, scale or chosen.scale, {**chosen.settings, **knobs}


def check(engine: str, scale: str, knobs: dict[str, Any]) -> None:
    """One-line UserErrors for option values the run would trip over later."""
    from common.errors import UserError
    from federation.sim import ENGINES

    value = {**FederationSettings.defaults(), **knobs}
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: unknown (known: {', '.join(ENGINES)})")
    if scale not in ("tiny", "small", "full"):
        raise UserError(f"--scale {scale}: unknown (known: tiny, small, full)")
    if value["eval_split"] not in ("val", "test"):
        raise UserError(f"--eval-split {value['eval_split']}: unknown (known: val, test)")
    if value["eval_every"] < 1:
        raise UserError(f"--eval-every {value['eval_every']}: must be at least 1")
    if value["fail_mode"] not in ("error", "hang"):
        raise UserError(f"--fail-mode {value['fail_mode']}: unknown (known: error, hang)")
    if value["clip"] < 0 or value["noise"] < 0 or not 0 < value["delta"] < 1:
        raise UserError("--clip/--noise must be >= 0 and --delta in (0, 1)")
    if value["secagg"]:
        from federation.secagg import incompatibility

        why = incompatibility(
            value["strategy"], value["compression"], value["fail_mode"], value["fail_site"], value["sites"]
        )
        if why:
            raise UserError(f"--secagg: {why}")


def run(
    vertical: str,
    out: Path,
    resume: bool,
    engine: str,
    scale: str | None,
    config: Path | None,
    set_: list[str],
    tiny: bool,
    quick: bool,
    recipe: str | None,
    **given: Any,
) -> None:
    """Simulate N sites with Flower: each trains on its own data, only model updates travel.

    Exits 3 (partial success) when a site failed or timed out in some round; the run still completed.
    """
    from common.errors import PartialSuccess
    from common.progress import log
    from federation.report import failed_sites
    from federation.sim import simulate

    cfg, scale, knobs = resolve(
        vertical, given, recipe=recipe, tiny=tiny, quick=quick, config_file=config, overrides=set_, scale=scale
    )
    check(engine, scale, knobs)
    from federation.interrupt import exit_on_interrupt

    with exit_on_interrupt(out):  # Ctrl-C: exit 130, last checkpoint kept, no site process left
        history = simulate(vertical, out, resume=resume, engine=engine, scale=scale, cfg=cfg, **knobs)
    log(f"wrote {out / 'history.json'}, {out / 'global_model'}, {out / 'report.md'}")
    failed = failed_sites(history)
    if failed:  # the run finished without them: a partial success, listed in report.md
        raise PartialSuccess(f"site(s) {', '.join(failed)} failed in some rounds; see {out / 'report.md'}", len(failed))


def _settings_parameter(f: dataclasses.Field) -> inspect.Parameter:
    """A `fedsite federate` option for one settings field; None (not given) lets the recipe decide."""
    default = f.default
    kind = str if isinstance(default, tuple) else type(default)
    shown = ",".join(default) if isinstance(default, tuple) else default
    if isinstance(default, bool):
        shown = f.metadata["flag"].split("/")[0 if default else 1]
    option = typer.Option(None, f.metadata["flag"], help=f.metadata["help"], show_default=str(shown))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])  # noqa: UP045


_FIXED = [
    ("vertical", str, typer.Option(..., "--vertical", help="medical, finance or manufacturing.")),
    ("out", Path, typer.Option(..., "--out", help="Run directory: history.json, global_model/, report.md, data/.")),
    ("recipe", Optional[str], typer.Option(  # noqa: UP045
        None, "--recipe", help="A federated recipe of the vertical (e.g. federated, quick) or a TOML file of one."
    )),
    ("resume", bool, typer.Option(False, "--resume", help="Continue from the run directory's last checkpoint.")),
    ("engine", str, typer.Option("ray", "--engine", help="ray (Flower's simulation engine) or inprocess (no Ray).")),
    ("scale", Optional[str], typer.Option(  # noqa: UP045
        None, "--scale", help="Synthetic data size per site: tiny|small|full.", show_default="small, or the recipe's"
    )),
    ("config", Optional[Path], typer.Option(  # noqa: UP045
        None, "--config", help="TOML file overriding the vertical's model config."
    )),
    ("set_", list[str], typer.Option([], "--set", help="key=value override of the model config (repeatable).")),
    ("tiny", bool, typer.Option(False, "--tiny", help="Start from the vertical's tiny config (seconds per round).")),
    ("quick", bool, typer.Option(
        False, "--quick", help="Start from the vertical's small preset on small data, as `train --quick`."
    )),
]  # fmt: skip


def _command() -> Any:
    """`run` with a signature typer reads: the fixed options, then one per settings option."""

    def federate(**options: Any) -> None:
        run(**options)

    fixed = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t) for n, t, o in _FIXED]
    params = fixed + [_settings_parameter(f) for f in FederationSettings.options()]
    federate.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    federate.__annotations__ = {p.name: p.annotation for p in params}
    federate.__doc__ = run.__doc__
    return federate


federate = _command()
