"""`fedsite federate` (filled in by the federation issue)."""

from common.errors import UserError


def federate() -> None:
    """Simulate N sites with Flower (not implemented yet)."""
    raise UserError("federate is not implemented yet")
