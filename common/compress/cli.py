"""`fedsite compress` and `fedsite profile` (filled in by the core issue)."""

from common.errors import UserError


def compress() -> None:
    """Compress a model directory (not implemented yet)."""
    raise UserError("compress is not implemented yet")


def profile() -> None:
    """Per-layer profile of a model directory (not implemented yet)."""
    raise UserError("profile is not implemented yet")
