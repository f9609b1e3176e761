"""The finance vertical: fraud detection fusing a causal TCN over account histories with a GNN.

`TASK` is the vertical's Task (common.task); the Python API is listed in README.md. It is created on
first access (PEP 562), so importing `verticals.finance.cli` for `fedsite --help` does not import
torch and torch-geometric.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "TASK":
        from verticals.finance.task import FinanceTask

        task = FinanceTask()
        globals()["TASK"] = task
        return task
    raise AttributeError(f"module 'verticals.finance' has no attribute '{name}'")
