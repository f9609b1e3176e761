"""Federated recipes: how a vertical federates well, named once and used by every caller.

A recipe fixes what a vertical's federation needs beyond the plain defaults: its model preset and
config changes (batches per round), the synthetic data scale, and FederationSettings knobs (rounds,
local epochs, local normalisation, one schedule, final-round-only stages). Each vertical keeps its
recipes beside its presets (`RECIPES` in verticals/<name>/config.py, exposed as `Task.recipes`);
the demo, benchmarks/federation and `fedsite federate --recipe NAME|FILE` read them here. A FILE is
a TOML table of the same keys:

    preset = "tiny"          # a name of the vertical's presets
    scale = "small"          # synthetic data per site
    rounds = 50              # any FederationSettings field (final_round_only: a list of keys)
    local_norm = true
    [config]                 # model-config changes
    steps_per_epoch = 3
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from federation.settings import FederationSettings, config_keys

# what a run's own invocation decides (which vertical, where, resuming): never part of a recipe
RUN_ONLY = ("vertical", "task_module", "config_toml", "data_root", "source_suffix", "out_dir", "resume")
SCALES = ("tiny", "small", "full")


@dataclass(frozen=True)
class Recipe:
    """A vertical's federated setup: model preset + config changes, data scale, settings knobs."""

    name: str
    preset: str = "default"
    scale: str = "small"
    config: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def model_config(self, task: Any) -> Any:
        """The preset with the recipe's config changes."""
        return dataclasses.replace(task.preset(self.preset), **dict(self.config))

    def replace(self, **changes: Any) -> Recipe:
        """The same recipe with some settings knobs changed (a caller's budget, e.g. the demo's rounds)."""
        return dataclasses.replace(self, settings={**self.settings, **changes})


def settings_value(key: str, value: Any, where: str) -> tuple[str, Any]:
    """(field name, value of the field's type) for a recipe or run-config key; UserError when unknown."""
    name = key.replace("-", "_")
    defaults = FederationSettings.defaults()
    if name not in defaults or name in RUN_ONLY:
        known = ", ".join(k for k in defaults if k not in RUN_ONLY)
        raise UserError(f"{where}: unknown key '{key}' (known: preset, scale, config, {known})")
    default = defaults[name]
    if isinstance(default, tuple):
        return name, config_keys(value)
    if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, (type(default), int)):
        raise UserError(f"{where}: {key} = {value!r}: expected {type(default).__name__}")
    return name, type(default)(value)


def parse(name: str, table: Mapping[str, Any], task: Any, where: str) -> Recipe:
    """A Recipe from a table of keys (a vertical's RECIPES entry or a TOML file)."""
    preset, scale = str(table.get("preset", "default")), str(table.get("scale", "small"))
    if preset not in task.presets:
        raise UserError(f"{where}: preset '{preset}' unknown (known: {', '.join(task.presets)})")
    if scale not in SCALES:
        raise UserError(f"{where}: scale '{scale}' unknown (known: {', '.join(SCALES)})")
    changes = dict(table.get("config", {}))
    known = {f.name for f in dataclasses.fields(task.preset(preset))}
    if set(changes) - known:
        raise UserError(f"{where}: [config] keys not in the model config: {', '.join(sorted(set(changes) - known))}")
    settings = {"final_round_only": tuple(task.final_round_only)}  # the vertical's post-hoc stages
    settings.update(settings_value(k, v, where) for k, v in table.items() if k not in ("preset", "scale", "config"))
    return Recipe(name, preset, scale, changes, settings)


def resolve(task: Any, spec: str) -> Recipe:
    """`spec` as one of the Task's named recipes, else as a TOML file of one."""
    if spec in task.recipes:
        return parse(spec, task.recipes[spec], task, f"recipe '{spec}' of {task.name}")
    path = Path(spec)
    if path.suffix != ".toml" and not path.exists():
        names = ", ".join(task.recipes) or "none"
        raise UserError(f"--recipe {spec}: neither a recipe of {task.name} (known: {names}) nor a TOML file")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--recipe {path}: {exc}") from None
    return parse(path.stem, table, task, str(path))
