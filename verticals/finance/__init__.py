"""The finance vertical: fraud detection fusing a causal TCN over account histories with a GNN.

`TASK` is the vertical's Task (common.task); the Python API is listed in README.md.
"""

from verticals.finance.task import FinanceTask

TASK = FinanceTask()
