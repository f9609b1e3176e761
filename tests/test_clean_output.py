"""Clean output: plain help without markup debris, no library warnings, no colour codes in a log.

Every command's `--help` is checked (the walk finds new commands by itself); Flower's and Ray's
warnings are shown only under `--debug`; nothing written to a pipe carries ANSI escape codes. The
warnings are raised in a real interpreter behind the real CLI set-up, with Flower's real logger (a
Ray simulation shows the same two notices, at 25-80 s a run: too slow for the suite).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import click
import typer

from common import cli

ANSI = "\x1b["


def _command_paths(command: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            paths += _command_paths(sub, (*prefix, name))
    return paths


def test_every_help_is_plain_text(capsys):
    paths = _command_paths(typer.main.get_command(cli.build_app()))
    assert len(paths) > 25  # the root, 7 groups, their commands and the top-level commands
    problems = []
    for path in paths:
        code = cli.main([*path, "--help"])
        out, err = capsys.readouterr()
        name = " ".join(("fedsite", *path))
        if code != 0 or not out.startswith("Usage:"):
            problems.append(f"{name}: exit {code}, {err.strip()[:80]}")
        for bad in ("\\", ANSI):
            if bad in out or bad in err:
                problems.append(f"{name}: {bad!r} in its help")
    assert problems == []


# A real Flower deprecation notice, a Ray-style FutureWarning and an error, after fedsite's own set-up.
PROBE = textwrap.dedent(
    """
    import sys, warnings
    from common.cli import main
    main(sys.argv[1:] + ["--version"])
    from flwr.common.logger import log, warn_deprecated_feature
    warn_deprecated_feature("the old thing")
    warnings.warn_explicit("Tip: Ray will change", FutureWarning, "worker.py", 1, module="ray._private.worker")
    log(40, "a real error")
    """
)


def _probe(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # as a user's shell would have it
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_library_warnings_hidden_unless_debug_and_never_coloured_in_a_pipe():
    quiet = _probe()
    assert quiet.returncode == 0, quiet.stderr
    assert "DEPRECATED" not in quiet.stderr and "Ray will change" not in quiet.stderr
    assert "a real error" in quiet.stderr  # errors still reach the user
    debug = _probe("--debug")
    assert "DEPRECATED FEATURE: the old thing" in debug.stderr
    assert "Ray will change" in debug.stderr
    for proc in (quiet, debug):
        assert ANSI not in proc.stdout and ANSI not in proc.stderr
