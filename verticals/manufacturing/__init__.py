"""The manufacturing vertical (lands with its issue). `TASK` is the vertical's Task (common.task)."""

TASK = None
