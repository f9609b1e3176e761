"""`fedsite finance ...` commands (filled in by the finance vertical)."""

import typer

app = typer.Typer(no_args_is_help=True)
