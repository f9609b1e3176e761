"""Model and run directories: `model.pt`, `config.toml`, `metadata.json`, written atomically.

A model directory is the unit that moves between commands (train -> detect -> compress -> federate)
and between sites, so it records everything needed to trust it later: the resolved config, the
library versions, the seed, a fingerprint of the training data and its metrics. It is built under a
temporary name and swapped into place, so a killed `train` never leaves a half model behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
from dataclasses import dataclass
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

import common
from common import atomic, config, manifest
from common.errors import UserError
from common.registry import get_task
from common.strict_json import to_json

# Bumped when the layout of a model directory changes incompatibly.
FORMAT_VERSION = 1
_VERSIONED = ("torch", "onnxruntime", "flwr", "monai", "torch-geometric", "pytorch-tcn", "numpy")


def library_versions() -> dict[str, str]:
    """Versions of fedsite and the libraries a model depends on (absent ones are skipped)."""
    versions = {"fedsite": common.__version__}
    for dist in _VERSIONED:
        try:
            versions[dist] = _importlib_metadata.version(dist)
        except _importlib_metadata.PackageNotFoundError:
            pass
    return versions


def fingerprint(paths: list[str | os.PathLike[str]] | str | os.PathLike[str]) -> str:
    """sha256 over the relative names and contents of every file under `paths` (sorted).

    Identifies the exact data a model was trained on without copying any of it (the data stays at
    the site; only this digest is recorded).
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    digest = hashlib.sha256()
    for item in items:
        root = Path(item)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            rel = file.relative_to(root) if root.is_dir() else Path(file.name)
            digest.update(str(rel).encode())
            with open(file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def now_iso() -> str:
    """UTC timestamp for metadata."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class ModelDir:
    """A loaded model directory."""

    path: Path
    task: Any
    model: nn.Module
    cfg: Any
    metadata: dict[str, Any]


def save_model(
    out: str | os.PathLike[str],
    vertical: str,
    model: nn.Module,
    cfg: Any,
    *,
    metrics: dict[str, float] | None = None,
    seed: int | None = None,
    data_fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete model directory at `out` atomically and return its path.

    `extra_files` are written beside the weights (e.g. a fitted baseline); `extra` is merged into
    metadata.json.
    """
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    meta = {
        "format_version": FORMAT_VERSION,
        "vertical": vertical,
        "versions": library_versions(),
        "seed": seed,
        "data_fingerprint": data_fingerprint,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "created": now_iso(),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    meta.update(extra or {})
    with atomic.atomic_dir(out) as tmp:
        (tmp / "model.pt").write_bytes(buffer.getvalue())
        (tmp / "config.toml").write_text(config.to_toml(cfg), encoding="utf-8")
        (tmp / "metadata.json").write_text(to_json(meta) + "\n", encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        manifest.write(tmp)  # last: the SHA-256 of every file above, checked by read_metadata
    return Path(out)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """metadata.json of a model directory, with a one-line error when it is missing or unreadable."""
    root = Path(path)
    meta_path = root / "metadata.json"
    if not root.is_dir():
        raise UserError(f"{root}: model directory not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{root}: not a model directory (no metadata.json)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta_path}: unreadable metadata ({exc.msg} at line {exc.lineno})") from None
    found = meta.get("format_version")
    if found != FORMAT_VERSION:
        wrote = meta.get("versions", {}).get("fedsite", "unknown")
        raise UserError(
            f"{root}: written by fedsite {wrote} in model format {found}; this fedsite "
            f"({common.__version__}) reads format {FORMAT_VERSION}: retrain or convert the model"
        )
    note = manifest.verify(root)  # every file of the directory, before any of them is parsed
    if note is not None:
        _note_once(note)
    return meta


_noted: set[str] = set()


def _note_once(note: str) -> None:
    if note not in _noted:
        _noted.add(note)
        from common.progress import log

        log(f"note: {note}")


def load_model(path: str | os.PathLike[str], expect: str | None = None, map_location: str = "cpu") -> ModelDir:
    """Load a model directory: rebuild the Task's model from config.toml and load its weights."""
    root = Path(path)
    meta = read_metadata(root)
    vertical = meta.get("vertical")
    if expect is not None and vertical != expect:
        raise UserError(f"{root}: holds a '{vertical}' model, expected a '{expect}' model")
    task = get_task(vertical)
    try:
        cfg = config.from_toml(task.config_cls, (root / "config.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{root}: not a model directory (no config.toml)") from None
    model = task.build_model(cfg)
    try:
        state = torch.load(root / "model.pt", map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{root}: not a model directory (no model.pt)") from None
    except Exception as exc:  # a truncated or foreign file: say which one, not a traceback
        raise UserError(f"{root / 'model.pt'}: unreadable weights ({type(exc).__name__})") from None
    if meta.get("pruned_structure"):  # channel-pruned by `fedsite compress`: narrower than config.toml says
        from common.compress.prune import resize_to_structure

        resize_to_structure(model, meta["pruned_structure"], state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{root / 'model.pt'}: weights do not fit the configured model ({first})") from None
    model.eval()
    return ModelDir(root, task, model, cfg, meta)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Strict pretty JSON (see to_json), written atomically."""
    return atomic.write_text(path, to_json(data) + "\n")
