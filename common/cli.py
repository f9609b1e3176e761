"""The `fedsite` entry point: parses, looks the command up, calls it, maps errors to exit codes.

Exit codes (docs/contracts.md) are implemented here once: 0 success, 2 bad usage or bad input (one line
on stderr, no traceback unless --debug), 3 partial success (some inputs rejected and reported).
Command modules raise `UserError` / `PartialSuccess`; they never call sys.exit themselves.
Command groups are imported lazily by module path so `fedsite --help` stays fast and the core does
not import verticals directly.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click
import typer
import typer.core

import common
from common import console, progress
from common.errors import PartialSuccess, UserError

# (name, "module:attribute", help). Groups are Typer apps, commands are functions.
GROUPS: list[tuple[str, str, str]] = [
    ("dicom", "verticals.medical.cli:dicom_app", "DICOM series: inspect geometry and QC, de-identify."),
    ("medical", "verticals.medical.cli:app", "CT lung-nodule detection: synth, train, detect, evaluate."),
    ("finance", "verticals.finance.cli:app", "Fraud detection: synth, train, score, update, evaluate, serve."),
    ("manufacturing", "verticals.manufacturing.cli:app", "Visual defect inspection: synth, train, inspect, evaluate."),
    ("hub", "federation.deploy_cli:hub_app", "Run the federation hub (Flower SuperLink) for real sites."),
    ("site", "federation.deploy_cli:site_app", "Run a site (Flower SuperNode) that trains on local data."),
    ("certs", "federation.deploy_cli:certs_app", "Make TLS certificates and site keys for a deployment."),
]
COMMANDS: list[tuple[str, str]] = [
    ("federate", "federation.cli:federate"),
    ("demo", "federation.demo:demo"),
    ("compress", "common.compress.cli:compress"),
    ("profile", "common.compress.cli:profile"),
]

_state = {"debug": False}

# `--quick` on every train, synth and federate command: one spelling, one meaning (issue 19 item 1)
QUICK_TRAIN_HELP = (
    "Start from the small preset: a useful model in about a minute on 2 cores (--config/--set still apply)."
)
QUICK_SYNTH_HELP = "Small data (what --quick training is sized for), unless --scale is given."


def _load(spec: str):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def _version(value: bool) -> None:
    if value:
        print(f"fedsite {common.__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Assemble the Typer app from the group and command tables.

    Help is plain text (rich_markup_mode=None). Typer 0.20 still escapes "[required]" and
    "[default: ...]" as rich markup whenever rich is installed, and prints the backslashes in plain
    mode, so rich is switched off for Typer's help formatting (fedsite's own tables still use rich).
    """
    typer.core.HAS_RICH = False
    app = typer.Typer(
        name="fedsite",
        help="fedsite: federated AI for hospitals, banks and factories. Data stays at each site.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
        debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    ) -> None:
        _state["debug"] = debug

    for name, spec, help_ in GROUPS:
        app.add_typer(_load(spec), name=name, help=help_)
    for name, spec in COMMANDS:
        app.command(name)(_load(spec))
    return app


def _error(message: str) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "error"
    print(f"fedsite: error: {first}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the contract's exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    console.configure(debug=_state["debug"])
    progress.set_debug(_state["debug"])
    code = 0
    try:
        app = build_app()
        result = app(args=argv, prog_name="fedsite", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except PartialSuccess as exc:
        print(f"fedsite: partial: {str(exc).splitlines()[0]}", file=sys.stderr)
        code = 3
    except UserError as exc:
        if _state["debug"]:
            traceback.print_exc()
        _error(str(exc))
        code = 2
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        print("fedsite: aborted", file=sys.stderr)
        code = 130
    except click.exceptions.ClickException as exc:  # usage errors: bad option, missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show what it offers
            print(exc.format_message(), file=sys.stderr)
            return 2
        ctx = getattr(exc, "ctx", None)
        where = f" (in '{ctx.command_path}')" if ctx is not None else ""
        _error(f"{exc.format_message()}{where}")
        code = 2
    except KeyboardInterrupt:
        print("fedsite: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # a bug in fedsite, not the user's fault: say so in one line
        if _state["debug"]:
            traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
