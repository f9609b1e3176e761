"""Config resolution: dataclass defaults -> optional TOML file -> `--set key=value` overrides.

Each vertical declares one frozen dataclass with every default (its `config.py`). The resolved
config is type-checked here (a string "3" for an int field becomes 3; "abc" is a one-line error
naming the key) and written into every model or run directory as `config.toml`, so a model can be
rebuilt exactly as it was trained.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from common.errors import UserError

C = TypeVar("C")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert `value` to the field's declared type, or raise UserError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"config key '{name}': cannot be None")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise UserError(f"config key '{name}': {value!r} is not one of {list(args)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("()[]").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{name}': expected a list, got {value!r}")
        item_types = args if origin is tuple and args and args[-1] is not Ellipsis else args[:1] * len(value)
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise UserError(f"config key '{name}': expected {len(args)} values, got {len(value)}")
        items = [_coerce(name, v, t) if t is not Any else v for v, t in zip(value, item_types)]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise UserError(f"config key '{name}': expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UserError(f"config key '{name}': expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{name}': expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise UserError(f"config key '{name}': expected an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise UserError(f"config key '{name}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key '{name}': expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise UserError(f"config key '{name}': expected a string, got {value!r}")
        return str(value)
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def resolve(
    cls: type[C],
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    section: str | None = None,
    base: C | None = None,
) -> C:
    """Build a config: `cls` defaults (or `base`, e.g. a named preset), then keys from `config_file`,
    then `key=value` overrides.

    A TOML file may hold its keys at top level or under a `[section]` table (the vertical's name),
    so one file can configure several verticals. Unknown keys are errors, not silently ignored:
    a misspelt key that does nothing is worse than a refusal.
    """
    types_ = _field_types(cls)
    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid TOML ({exc})") from None
        if section and isinstance(data.get(section), dict):
            data = {**{k: v for k, v in data.items() if not isinstance(v, dict)}, **data[section]}
        for key, value in data.items():
            if isinstance(value, dict):  # a sub-table: [finance.features] numeric = ... is features_numeric
                if any(name.startswith(f"{key}_") for name in types_):
                    for sub, item in value.items():
                        if f"{key}_{sub}" not in types_:
                            raise UserError(f"{path}: unknown config key '{key}.{sub}'")
                        values[f"{key}_{sub}"] = _coerce(f"{key}.{sub}", item, types_[f"{key}_{sub}"])
                continue
            if key not in types_:
                raise UserError(f"{path}: unknown config key '{key}' (known: {', '.join(sorted(types_))})")
            values[key] = _coerce(key, value, types_[key])
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace(".", "_")  # --set features.numeric=a,b names features_numeric
        if key not in types_:
            raise UserError(f"--set {key}: unknown config key (known: {', '.join(sorted(types_))})")
        values[key] = _coerce(key, raw.strip(), types_[key])
    return replace(base if base is not None else cls(), **values)


def replace(cfg: C, **changes: Any) -> C:
    """`dataclasses.replace` with the same type checks as `resolve`."""
    types_ = _field_types(type(cfg))
    for key in changes:
        if key not in types_:
            raise UserError(f"unknown config key '{key}'")
    checked = {k: _coerce(k, v, types_[k]) for k, v in changes.items()}
    return dataclasses.replace(cfg, **checked)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists, None values are dropped: TOML has no null)."""
    out = {}
    for key, value in dataclasses.asdict(cfg).items():
        if value is None:
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def to_toml(cfg: Any) -> str:
    """The resolved config as TOML text, as written into model and run directories."""
    return tomli_w.dumps(to_dict(cfg))


def from_toml(cls: type[C], text: str) -> C:
    """Rebuild a config written by `to_toml` (fields added since then take their defaults)."""
    data = tomllib.loads(text)
    types_ = _field_types(cls)
    known = {k: _coerce(k, v, types_[k]) for k, v in data.items() if k in types_}
    return dataclasses.replace(cls(), **known)
