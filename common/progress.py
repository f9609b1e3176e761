"""Progress on stderr: a rich bar in a terminal, plain lines when stderr is a pipe or a log file.

Long work (training, detection over a folder, federated rounds) must show that it is alive, and say
when it will end. In a terminal: a rich bar with elapsed time and ETA. In a log (stderr not a
terminal): one line per ~10 % of the work with an ETA, never one per step, so a CI log stays readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
        from rich.progress import Progress, TimeElapsedColumn

        with Progress(*Progress.get_default_columns(), TimeElapsedColumn(), transient=False) as bar:
            task_id = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task_id)
        return
    start = last = time.monotonic()
    count, next_tenth = 0, 1
    for item in items:
        yield item
        count += 1
        now = time.monotonic()
        if total:
            # one line per 10 % of the work (and the last), whatever the number of steps
            if count * 10 >= next_tenth * total or count == total:
                next_tenth = count * 10 // total + 1
                last = now
                print(_line(description, count, total, now - start), file=sys.stderr, flush=True)
        elif now - last >= UNKNOWN_TOTAL_EVERY_S:
            last = now
            print(_line(description, count, None, now - start), file=sys.stderr, flush=True)


@contextmanager
def stage(description: str) -> Iterator[None]:
    """A step with no countable parts (export, INT8 timing): a line when it starts and one with its time
    when it ends, so a log never goes silent for minutes without saying what it is doing."""
    log(f"{description} ...")
    start = time.monotonic()
    yield
    log(f"{description}: done in {time.monotonic() - start:.1f}s")


UNKNOWN_TOTAL_EVERY_S = 10.0  # without a total there is no 10 %: a line every 10 s says it is alive


def _line(description: str, count: int, total: int | None, elapsed: float) -> str:
    """'training: 40/100 (40 %), 12.0s, ETA 18s' (no percentage or ETA without a total)."""
    if total is None:
        return f"{description}: {count} ({elapsed:.1f}s)"
    eta = elapsed / count * (total - count) if count else 0.0
    tail = f", ETA {eta:.0f}s" if count < total else ""
    return f"{description}: {count}/{total} ({100 * count // total} %), {elapsed:.1f}s{tail}"
