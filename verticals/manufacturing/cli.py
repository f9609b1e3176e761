"""`fedsite manufacturing ...` commands (filled in by the manufacturing vertical)."""

import typer

app = typer.Typer(no_args_is_help=True)
