"""The two exceptions that carry the exit codes of docs/contracts.md.

Commands raise these instead of calling sys.exit so the mapping to exit codes (2 for bad usage or
bad input, 3 for partial success) and the one-line message format live in one place: `common.cli`.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad usage or bad input that stopped the command (exit code 2).

    The message must be one line that says what went wrong and where (file, row, option).
    """

    exit_code = 2


class PartialSuccess(Exception):
    """Some inputs were rejected, the rest were processed and written (exit code 3).

    Raised *after* every output is written; the message names the report listing the rejections.
    """

    exit_code = 3

    def __init__(self, message: str, rejected: int = 0) -> None:
        super().__init__(message)
        self.rejected = rejected
