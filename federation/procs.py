"""Start Flower's long-running processes and stop them with everything they started.

Flower's SuperLink and SuperNode start helpers of their own (`flower-superexec`, then one
`flwr-serverapp` / `flwr-clientapp` per run or message) in new sessions, so a signal to the
process group misses them, and a SIGKILLed parent leaves them orphaned until their parent-pid
monitor notices. `fedsite hub start` and `site start` therefore supervise instead of exec'ing:
the supervisor becomes a Linux child subreaper (orphaned descendants are re-parented to it, not
to init), so on SIGTERM it can list its whole process tree, TERM it, and KILL what is left after
a short grace period. Its direct child gets PR_SET_PDEATHSIG, so a SIGKILLed supervisor still
takes Flower's process down with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: no subreaper, stop() still ends the direct tree
        return False


def become_subreaper() -> bool:
    """Make orphaned descendants children of this process (Linux), so stop_tree() finds them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start(cmd: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start `cmd` in a session of its own, killed if this process dies (even by SIGKILL)."""
    out = open(log, "ab") if log else None  # noqa: SIM115 - owned by the child for its lifetime
    try:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    finally:
        if out:
            out.close()


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live descendant of `pid` (default: this process)."""
    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_tree(grace: float = 5.0, pid: int | None = None) -> list[int]:
    """SIGTERM every descendant of `pid` (default: this process), SIGKILL what outlives `grace`.

    Returns the pids that had to be killed. Re-lists the tree once after the TERM round: a helper
    may have spawned a child (or been re-parented here) meanwhile.
    """
    killed: list[int] = []
    procs = descendants(pid)
    for proc in procs:
        _send(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    alive += [p for p in descendants(pid) if p not in alive]
    for proc in alive:
        _send(proc, signal.SIGKILL)
        killed.append(proc.pid)
    psutil.wait_procs(alive, timeout=3)
    return killed


def _send(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def on_terminate(handler: Callable[[], None]) -> None:
    """Call `handler` on SIGTERM and SIGINT (the supervisor's stop request)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: handler())
