"""Per-round server checkpoints, so `--resume` continues a run as if it had never stopped.

A checkpoint holds what the next round depends on: the global weights, the server optimizer
state (FedAdam's moments) and the history so far. Sites keep their own error-feedback residuals
per round (sitework.py), and every random draw is seeded by (seed, site, round), so a resumed run
ends with the same model as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_bytes
from federation import records
from federation.records import GlobalModel

NAME = "checkpoint.npz"
OPT_PREFIX = "opt:"  # the server optimizer's state (FedAdam's, FedAvgM's moments)


_WRITING = threading.Lock()
_FROZEN = threading.Event()


def freeze() -> None:
    """No checkpoint is written after this returns (one being written is finished first).

    An interrupted run reports its last checkpoint and then stops its workers; a round that completes in
    those seconds must not replace the checkpoint the user was just told about.
    """
    with _WRITING:
        _FROZEN.set()


def save(out_dir: Path, round_: int, model: GlobalModel, opt_state: dict, history: dict) -> None:
    """Write DIR/checkpoints/checkpoint.npz atomically (the previous one stays until this one is complete)."""
    with _WRITING:
        if not _FROZEN.is_set():
            _write(out_dir, round_, model, opt_state, history)


def _write(out_dir: Path, round_: int, model: GlobalModel, opt_state: dict, history: dict) -> None:
    arrays = records.pack({"vector": model.vector}, model.ints)
    arrays.update({f"{OPT_PREFIX}{k}": v for k, v in opt_state.items()})
    arrays["meta"] = np.frombuffer(json.dumps({"round": round_, "history": history}).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(out_dir / "checkpoints" / NAME, buffer.getvalue())


def load(out_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of a run directory, or None when there is none."""
    path = out_dir / "checkpoints" / NAME
    if not path.exists():
        return None
    with np.load(path) as data:
        named = {k: data[k].copy() for k in data.files}
    meta = json.loads(bytes(named.pop("meta")).decode())
    opt_state = {k[len(OPT_PREFIX) :]: named.pop(k) for k in list(named) if k.startswith(OPT_PREFIX)}
    arrays, ints = records.unpack(named)
    return {
        "round": int(meta["round"]),
        "history": meta["history"],
        "model": GlobalModel(arrays["vector"], ints),
        "opt_state": opt_state,
    }
