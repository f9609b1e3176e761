"""Progress on stderr: a rich bar in a terminal, plain lines when stderr is a pipe or a log file.

Long work (training, detection over a folder, federated rounds) must show that it is alive. Plain
lines are throttled so a CI log stays readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_quiet = False
_debug = False


def set_quiet(quiet: bool) -> None:
    """Silence progress output (tests and nested calls that report on their own)."""
    global _quiet
    _quiet = quiet


def set_debug(on: bool) -> None:
    """Show third-party warnings and other diagnostics (the CLI's --debug)."""
    global _debug
    _debug = on


def debug(message: str) -> None:
    """One diagnostic line on stderr, only under --debug (third-party warnings go here, not to the user)."""
    if _debug:
        print(message, file=sys.stderr, flush=True)


def log(message: str) -> None:
    """One status line on stderr."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items` while showing progress on stderr."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if _quiet:
        yield from items
        return
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task_id = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task_id)
        return
    start = last = time.monotonic()
    count = 0
    for item in items:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= 2.0 or (total is not None and count == total):
            last = now
            of = f"/{total}" if total is not None else ""
            print(f"{description}: {count}{of} ({now - start:.1f}s)", file=sys.stderr, flush=True)
