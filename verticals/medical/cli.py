"""`fedsite medical ...` commands (filled in by the medical vertical)."""

import typer

app = typer.Typer(no_args_is_help=True)
dicom_app = typer.Typer(no_args_is_help=True)
