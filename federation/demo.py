"""`fedsite demo` (filled in by the federation issue)."""

from common.errors import UserError


def demo() -> None:
    """Run the end-to-end demo (not implemented yet)."""
    raise UserError("demo is not implemented yet")
