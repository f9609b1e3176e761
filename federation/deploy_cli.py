"""`fedsite hub|site|certs` (filled in by the federation issue)."""

import typer

hub_app = typer.Typer(no_args_is_help=True)
site_app = typer.Typer(no_args_is_help=True)
certs_app = typer.Typer(no_args_is_help=True)
