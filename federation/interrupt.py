"""Ctrl-C (SIGINT) or SIGTERM during `fedsite federate`: exit 130 within seconds, nothing left running.

Why not let KeyboardInterrupt unwind: the sites run in threads (in-process engine: a torch fit in a
daemon thread) or in Ray worker processes, none of which a Python exception can stop. Unwinding
left the interpreter finalising under a running C++ thread ("terminate called without an active
exception", exit 134), and Ray's driver waiting on its workers for over 10 minutes. Nothing needs
unwinding: every checkpoint and output is written atomically (temp + rename), so the last complete
checkpoint is valid at any instant. The handler therefore says where the run can resume, stops
every process this one started (SIGTERM, then SIGKILL after a grace period), flushes the standard
streams and leaves with os._exit(130), which runs no finalisers that could wait on those threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

EXIT_INTERRUPTED = 130
GRACE_SECONDS = 3.0


def stop_children(grace: float = GRACE_SECONDS) -> int:
    """Terminate every descendant process (Ray's raylet, GCS, workers...); returns how many there were."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(children)


def _resume_hint(out: Path) -> str:
    from federation import checkpoint

    try:
        saved = checkpoint.load(out)
    except Exception:  # a checkpoint is replaced atomically, so this is a foreign or damaged file
        saved = None
    if saved is None:
        return f"no round finished yet; run again to start over in {out}"
    return f"last checkpoint after round {saved['round']} in {out / 'checkpoints'}; continue with --resume"


@contextlib.contextmanager
def exit_on_interrupt(out: Path) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM end the process with exit 130 after stopping its children."""
    if sys.platform == "win32":  # no process groups of this kind; KeyboardInterrupt as usual
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        name = signal.Signals(signum).name
        try:
            from federation import checkpoint

            checkpoint.freeze()  # the checkpoint named below stays the last one
            print(f"fedsite: interrupted ({name}): {_resume_hint(Path(out))}", file=sys.stderr, flush=True)
            # the site threads see their workers die and would log tracebacks: that line is the last one
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            stop_children()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
