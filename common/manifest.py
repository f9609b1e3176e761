"""Checksum manifest of a model directory: SHA-256 of every file, written at save, checked on load.

Why: a model directory travels between machines and sites (copied, synced, unpacked); a file cut
short or damaged on the way used to surface as an "internal error" deep inside ONNX Runtime or
numpy, or not at all (a corrupt baseline.npz was read as garbage). With the digests recorded when
the directory is built, loading names the damaged file before anything parses it.

Directories written before manifests existed still load; `verify` then returns a note saying that
nothing could be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from common.errors import UserError

NAME = "manifest.json"
_verified: dict[tuple[str, int], None] = {}  # (directory, manifest mtime) already checked this process


def file_digest(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(root: str | os.PathLike[str]) -> dict:
    """The manifest of every regular file under `root` (relative POSIX names, sorted)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != NAME)
    return {
        "algorithm": "sha256",
        "files": {p.relative_to(root).as_posix(): {"sha256": file_digest(p), "bytes": p.stat().st_size} for p in files},
    }


def write(root: str | os.PathLike[str]) -> Path:
    """Write `root/manifest.json` (call last, when the directory holds all its files)."""
    path = Path(root) / NAME
    path.write_text(json.dumps(build(root), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify(root: str | os.PathLike[str]) -> str | None:
    """Check every file the manifest lists; a UserError naming the first missing, empty or changed
    file. Returns a note when the directory has no manifest (older fedsite), else None."""
    root = Path(root)
    path = root / NAME
    try:
        key = (str(root.resolve()), path.stat().st_mtime_ns)
    except FileNotFoundError:
        return f"{root}: no {NAME} (saved by an older fedsite); its files cannot be checked for damage"
    if key in _verified:
        return None
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["files"]
        items = [(name, str(e["sha256"]), int(e["bytes"])) for name, e in entries.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: unreadable checksum manifest ({type(exc).__name__})") from None
    for name, sha, size in items:
        file = root / name
        if not file.is_file():
            raise UserError(f"{file}: missing from the model directory (listed in {NAME})")
        found = file.stat().st_size
        if found != size:
            what = "empty" if found == 0 else f"{found} bytes, {size} when saved"
            raise UserError(f"{file}: damaged ({what}); copy the model directory again or retrain")
        if file_digest(file) != sha:
            raise UserError(f"{file}: damaged (SHA-256 differs from {NAME}); copy the model directory again or retrain")
    _verified[key] = None
    return None
