"""Manufacturing vertical: visual defect inspection (learned DefectNet + OpenCV). `TASK` is its Task."""

from .task import TASK

__all__ = ["TASK"]
