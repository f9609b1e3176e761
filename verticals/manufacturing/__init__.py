"""Manufacturing vertical: visual defect inspection (learned DefectNet + OpenCV).

`TASK` is the vertical's Task (common.task); the Python API behind the CLI is in api.py. TASK is
resolved lazily (PEP 562) so `fedsite --help`, which imports this package for its CLI, does not
import torch and OpenCV.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TASK"]


def __getattr__(name: str) -> Any:
    if name == "TASK":
        from verticals.manufacturing.task import TASK

        return TASK
    raise AttributeError(f"module 'verticals.manufacturing' has no attribute {name!r}")
