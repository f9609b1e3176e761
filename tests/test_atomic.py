"""Atomic writes: a process killed mid-write leaves no partial file and the old output intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from common import atomic

KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from common import atomic
    target = sys.argv[1]
    with atomic.atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"x" * 1_000_000)
            fh.flush()
            print("half-written", flush=True)
            time.sleep(60)
    """
)


def _kill_mid_write(target):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half-written"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def test_killed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.csv"
    _kill_mid_write(target)
    assert not target.exists()


def test_killed_write_keeps_previous_content(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous\n")
    _kill_mid_write(target)
    assert target.read_text() == "previous\n"


def test_failed_write_cleans_up(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    final = tmp_path / "model"
    with atomic.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    atomic.write_text(final / "b.txt", "hello")
    assert (final / "b.txt").read_text() == "hello"
