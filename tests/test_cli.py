"""The CLI layer: groups listed, --version, and the exit-code rules (0 / 2 / 3) without tracebacks."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import typer

from common import cli
from common.errors import PartialSuccess, UserError


def _run(*args: str) -> subprocess.CompletedProcess:
    exe = [sys.executable, "-m", "common.cli"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_group():
    proc = _run("--help")
    assert proc.returncode == 0
    for group in (
        "dicom",
        "medical",
        "finance",
        "manufacturing",
        "federate",
        "hub",
        "site",
        "compress",
        "profile",
        "demo",
    ):
        assert group in proc.stdout


def test_version():
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("fedsite ")


def test_unknown_command_is_usage_error():
    proc = _run("no-such-command")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture
def fake_commands(monkeypatch):
    module = types.ModuleType("fake_cmds")

    def bad_input(path: str) -> None:
        raise UserError(f"{path}: line 3: amount must be > 0")

    def partial() -> None:
        raise PartialSuccess("2 of 5 inputs rejected, see report.json", rejected=2)

    def crash() -> None:
        raise ZeroDivisionError("bug")

    def ok() -> None:
        print("fine")

    for fn in (bad_input, partial, crash, ok):
        setattr(module, fn.__name__, fn)
    monkeypatch.setitem(sys.modules, "fake_cmds", module)
    app = typer.Typer()
    module.app = app
    monkeypatch.setattr(
        cli,
        "COMMANDS",
        [
            ("bad-input", "fake_cmds:bad_input"),
            ("partial", "fake_cmds:partial"),
            ("crash", "fake_cmds:crash"),
            ("ok", "fake_cmds:ok"),
        ],
    )
    monkeypatch.setattr(cli, "GROUPS", [])


def test_exit_codes(fake_commands, capsys):
    assert cli.main(["ok"]) == 0
    assert cli.main(["bad-input", "tx.csv"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "fedsite: error: tx.csv: line 3: amount must be > 0"
    assert cli.main(["partial"]) == 3
    assert "2 of 5 inputs rejected" in capsys.readouterr().err
    assert cli.main(["bad-input"]) == 2  # missing argument: usage error
    assert "Traceback" not in capsys.readouterr().err


def test_debug_shows_traceback_only_when_asked(fake_commands, capsys):
    assert cli.main(["crash"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--debug" in err
    assert cli.main(["--debug", "crash"]) == 1
    assert "Traceback" in capsys.readouterr().err
