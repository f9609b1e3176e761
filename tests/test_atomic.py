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


@pytest.mark.parametrize(
    "ids",
    [
        ["t1", "t2", "t3"],  # nothing to escape: the column is written as it is
        ["t1", "=HYPERLINK(1)", "-2", "+x", "@y"],  # formulas escaped, the number "-2" left alone
        [1, "=x", 3.5],  # not all text: escaped cell by cell
    ],
)
def test_columns_are_written_as_rows_would_be(tmp_path, ids):
    scores = [f"{0.1 * i:.6g}" for i in range(len(ids))]
    atomic.write_csv(tmp_path / "rows.csv", ["txn_id", "=p"], zip(ids, scores))
    atomic.write_csv_columns(tmp_path / "columns.csv", ["txn_id", "=p"], [ids, scores])
    written = (tmp_path / "columns.csv").read_bytes()
    assert written == (tmp_path / "rows.csv").read_bytes()
    assert b"'=p" in written and (b"'=HYPERLINK" in written) == ("=HYPERLINK(1)" in ids)
