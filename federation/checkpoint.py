"""Per-round server checkpoints, so `--resume` continues a run as if it had never stopped.

A checkpoint holds what the next round depends on: the global weights, the server optimizer
state (FedAdam's moments) and the history so far. Sites keep their own error-feedback residuals
per round (sitework.py), and every random draw is seeded by (seed, site, round), so a resumed run
ends with the same model as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import write_bytes

NAME = "checkpoint.npz"


def save(out_dir: Path, round_: int, vector: np.ndarray, ints: dict[str, np.ndarray], opt_state: dict, history: dict):
    """Write DIR/checkpoints/checkpoint.npz atomically (the previous one stays until this one is complete)."""
    arrays = {"vector": vector}
    arrays.update({f"int:{k}": v for k, v in ints.items()})
    arrays.update({f"opt:{k}": v for k, v in opt_state.items()})
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
        meta = json.loads(bytes(data["meta"]).decode())
        return {
            "round": int(meta["round"]),
            "history": meta["history"],
            "vector": data["vector"].copy(),
            "ints": {k[4:]: data[k].copy() for k in data.files if k.startswith("int:")},
            "opt_state": {k[4:]: data[k].copy() for k in data.files if k.startswith("opt:")},
        }
