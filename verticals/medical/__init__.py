"""The medical vertical: lung-nodule detection in 3D chest CT read from DICOM, scored by LUNA16 FROC/CPM.

`TASK` is the vertical's Task (common.task); the Python API behind the CLI is in api.py. TASK is
resolved lazily so `fedsite --help` (which imports this package for its CLI) does not pay for torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TASK"]


def __getattr__(name: str) -> Any:
    if name == "TASK":
        from verticals.medical.task import TASK

        return TASK
    raise AttributeError(f"module 'verticals.medical' has no attribute {name!r}")
