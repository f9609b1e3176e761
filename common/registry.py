"""The verticals fedsite knows: name -> module that exposes `TASK` (and, optionally, `cli.app`).

Imports are lazy so `fedsite --help` does not pay for torch, MONAI and PyG start-up, and so the core
never imports a vertical except through here. Adding a vertical is one line below.
"""

from __future__ import annotations

import importlib
from typing import Any

from common.errors import UserError

VERTICALS: dict[str, str] = {
    "medical": "verticals.medical",
    "finance": "verticals.finance",
    "manufacturing": "verticals.manufacturing",
}


def names() -> list[str]:
    """Registered vertical names, in a stable order."""
    return list(VERTICALS)


def get_task(name: str) -> Any:
    """The Task object of vertical `name` (a one-line UserError for an unknown name)."""
    if name not in VERTICALS:
        raise UserError(f"unknown vertical '{name}' (known: {', '.join(VERTICALS)})")
    return importlib.import_module(VERTICALS[name]).TASK


def available_tasks() -> dict[str, Any]:
    """Every registered vertical whose module imports and exposes TASK (used by the contract test)."""
    tasks = {}
    for name, module in VERTICALS.items():
        mod = importlib.import_module(module)
        task = getattr(mod, "TASK", None)
        if task is not None:
            tasks[name] = task
    return tasks
