"""One source for every federation default, and recipes that mean the same as their flags."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import typer

from common.cli import main
from federation import cli, recipes, strategies
from federation.settings import FederationSettings

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_is_the_settings_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    table["rounds"] = table.pop("num-server-rounds")
    run_only = {k: table.pop(k) for k in ("synthesize-sites", "scale")}
    assert run_only == {"synthesize-sites": True, "scale": "tiny"}
    assert table == FederationSettings().to_config()
    assert FederationSettings.from_config(table) == FederationSettings()


def test_cli_options_are_built_from_the_settings():
    app = typer.Typer()
    app.command()(cli.federate)
    params = {p.name: p for p in typer.main.get_command(app).params}
    for f in FederationSettings.options():
        param = params[f.name]
        assert param.default is None, f.name  # not given: the recipe's value, else the settings default
        assert f.metadata["flag"].split("/")[0] in param.opts
        shown = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        if isinstance(f.default, bool):
            shown = f.metadata["flag"].split("/")[0 if f.default else 1]
        assert param.show_default == str(shown)
    # nothing given and no recipe: exactly the settings' defaults
    _, scale, knobs = cli.resolve("finance", {f.name: None for f in FederationSettings.options()}, tiny=True)
    assert scale == "small" and knobs == {}


def test_strategy_params_follow_the_settings():
    assert strategies.StrategyParams.of(FederationSettings()) == strategies.StrategyParams()
    custom = FederationSettings(server_lr=0.5, server_momentum=0.5, trim_fraction=0.1, krum_byzantine=2)
    params = strategies.StrategyParams.of(custom)
    assert (params.server_lr, params.server_momentum, params.trim_fraction, params.krum_byzantine) == (
        0.5, 0.5, 0.1, 2,
    )  # fmt: skip


@pytest.mark.parametrize("vertical", ["medical", "finance", "manufacturing"])
def test_named_recipes_resolve_to_the_same_settings_as_their_flags(vertical, tmp_path):
    from common.config import to_toml
    from common.registry import get_task

    task = get_task(vertical)
    assert {"federated", "quick"} <= set(task.recipes)
    recipe = recipes.resolve(task, "federated")
    assert recipe.settings["rounds"] > 1 and recipe.settings["final_round_only"] == task.final_round_only
    resolved = cli.resolve(vertical, {}, recipe="federated")
    # the same run spelled out as flags: the preset as --tiny or --config FILE, its changes as --set
    flags = {k: ",".join(v) if k == "final_round_only" else v for k, v in recipe.settings.items()}
    sets = [f"{k}={v}" for k, v in recipe.config.items()]
    if recipe.preset == "tiny":
        spelled = cli.resolve(vertical, flags, tiny=True, overrides=sets, scale=recipe.scale)
    else:
        preset = tmp_path / "preset.toml"
        preset.write_text(to_toml(task.preset(recipe.preset)))
        spelled = cli.resolve(vertical, flags, config_file=preset, overrides=sets, scale=recipe.scale)
    assert resolved == spelled
    assert FederationSettings(**resolved[2]) == FederationSettings(**spelled[2])


def test_a_recipe_file_runs_as_its_flags(tmp_path, reference_registered):
    """`--recipe FILE` and the same options as flags: the same run.json and the same metrics."""
    recipe = tmp_path / "short.toml"
    recipe.write_text(
        'preset = "tiny"\nscale = "tiny"\nrounds = 2\nlocal_epochs = 1\nstrategy = "fedadam"\n'
        "one_schedule = true\ncross_site = false\n[config]\nchannels = 4\n"
    )
    base = ["federate", "--vertical", "reference", "--engine", "inprocess", "--sites", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), "--recipe", str(recipe)]) == 0
    flags = ["--tiny", "--set", "channels=4", "--scale", "tiny", "--rounds", "2", "--local-epochs", "1",
             "--strategy", "fedadam", "--one-schedule", "--no-cross-site"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "b"), *flags]) == 0
    runs = [json.loads((tmp_path / d / "run.json").read_text()) for d in "ab"]
    for run in runs:
        run.pop("data-root"), run.pop("out-dir")
    assert runs[0] == runs[1] and runs[0]["strategy"] == "fedadam" and runs[0]["one-schedule"] is True
    evals = [
        [r["global_eval"] for r in json.loads((tmp_path / d / "history.json").read_text())["rounds"]] for d in "ab"
    ]
    assert evals[0] == evals[1]


def test_bad_recipes_are_one_line_usage_errors(tmp_path, reference_registered, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = 2\nwarp_speed = 9\n")
    base = ["federate", "--vertical", "reference", "--engine", "inprocess", "--out", str(tmp_path / "x")]
    assert main([*base, "--recipe", str(bad)]) == 2
    assert "warp_speed" in capsys.readouterr().err
    assert main([*base, "--recipe", "no-such-recipe"]) == 2
    assert "no-such-recipe" in capsys.readouterr().err
    bad.write_text('rounds = "many"\n')
    assert main([*base, "--recipe", str(bad)]) == 2
    assert "rounds" in capsys.readouterr().err
