"""Atomic file and directory writes: a reader never sees a half-written output.

Every output goes to a temporary sibling first and is moved into place with os.replace, which is
atomic on POSIX within one filesystem. A process killed mid-write leaves only a `.tmp-*` sibling,
never a truncated file under the final name.

Permissions: `tempfile` creates its files 0600 and directories 0700 (right for a scratch file, wrong
for an output a team shares), so a finished output gets the modes an ordinary `open`/`mkdir` would
give it under the process umask: 0644 and 0755 with the usual umask 022. Private keys and secrets
ask for `private=True` and stay 0600 from the first byte (the mode is set on the temporary file
before anything is written, never loosened then tightened).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

PRIVATE_MODE = 0o600
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it, so set it back at once)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode(private: bool = False) -> int:
    """The mode an output file gets: 0666 minus the umask, or 0600 for a private key or secret."""
    return PRIVATE_MODE if private else 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode an output directory gets: 0777 minus the umask (0755 with umask 022)."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "", *, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it into place, on error remove it.

    Use for writers that insist on a file name of their own (matplotlib, cv2.imwrite, torch.save).
    `suffix` keeps an extension the writer inspects (".png"). The file ends with `file_mode(private)`;
    a private file is 0600 before the writer sees it.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, file_mode(private))
        yield tmp
        os.chmod(tmp, file_mode(private))  # again: a writer may have replaced the file under its name
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> Path:
    """Write `data` to `path` atomically (fsync before rename, so a crash cannot expose zeros).

    `private=True` for keys and secrets: mode 0600 whatever the umask.
    """
    with atomic_path(path, private=private) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, *, private: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"), private=private)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place when the block succeeds.

    An existing directory at `path` is replaced only after the new one is complete, so a failed or
    killed run leaves the previous output intact (or nothing), never a mixture.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())  # mkdtemp made it 0700; the files inside keep the modes they were given
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / "d")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_csv(
    path: str | os.PathLike[str], header: list[str], rows: Iterable[Iterable[object]], *, private: bool = False
) -> Path:
    """Write a CSV (header + rows) atomically; floats keep full precision via repr; `private`: 0600.

    Text cells that a spreadsheet would run as a formula are escaped (common.csv_cells): every CSV
    fedsite writes may be opened by someone in Excel.
    """
    from common.csv_cells import spreadsheet_cell

    return _write_rows(path, header, (list(map(spreadsheet_cell, row)) for row in rows), private)


def write_csv_columns(
    path: str | os.PathLike[str], header: list[str], columns: list[list], *, private: bool = False
) -> Path:
    """`write_csv` of rows given as columns (the same bytes), escaped a column at a time.

    Why: a scores file has 200,000 rows and a Python call per cell to escape them was a third of
    writing it; a column of text none of whose cells needs escaping is checked at C speed.
    """
    from common.csv_cells import escape_column

    return _write_rows(path, header, zip(*map(escape_column, columns)), private)


def _write_rows(path: str | os.PathLike[str], header: list[str], rows: Iterable, private: bool) -> Path:
    import csv

    from common.csv_cells import spreadsheet_cell

    with atomic_path(path, suffix=".csv", private=private) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(list(map(spreadsheet_cell, header)))
            writer.writerows(rows)
    return Path(path)
