"""Config precedence (defaults -> TOML -> --set), type checks, freezing and the TOML round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from common import config
from common.errors import UserError


@dataclass(frozen=True)
class Demo:
    lr: float = 0.1
    epochs: int = 3
    name: str = "a"
    augment: bool = True
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    loss: Literal["bce", "focal"] = "bce"
    limit: int | None = None


def test_defaults_then_file_then_set(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('lr = 0.5\nepochs = 7\nname = "from-file"\n')
    cfg = config.resolve(Demo, path, ["epochs=9", "augment=false", "spacing=1.5,0.7,0.7"])
    assert cfg.lr == 0.5  # file beats default
    assert cfg.epochs == 9  # --set beats file
    assert cfg.name == "from-file"
    assert cfg.augment is False
    assert cfg.spacing == (1.5, 0.7, 0.7)
    assert cfg.limit is None


def test_section_table_is_read(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochs = 2\n[medical]\nlr = 0.01\n[finance]\nlr = 9.0\n")
    cfg = config.resolve(Demo, path, section="medical")
    assert (cfg.lr, cfg.epochs) == (0.01, 2)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("epochs=abc", "epochs"),
        ("epochs=1.5", "integer"),
        ("nope=1", "unknown"),
        ("lr", "key=value"),
        ("loss=hinge", "not one of"),
        ("augment=maybe", "true/false"),
        ("spacing=1,2", "3 values"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, fragment):
    with pytest.raises(UserError) as info:
        config.resolve(Demo, None, [override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(UserError, match="bad.toml"):
        config.resolve(Demo, bad)
    with pytest.raises(UserError, match="not found"):
        config.resolve(Demo, tmp_path / "missing.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("learning_rate = 1.0")
    with pytest.raises(UserError, match="learning_rate"):
        config.resolve(Demo, unknown)


def test_resolved_config_is_frozen_and_round_trips():
    cfg = config.resolve(Demo, None, ["limit=4", "loss=focal"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    again = config.from_toml(Demo, config.to_toml(cfg))
    assert again == cfg
