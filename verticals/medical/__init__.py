"""The medical vertical: lung-nodule detection in 3D chest CT read from DICOM, scored by LUNA16 FROC/CPM.

`TASK` is the vertical's Task (common.task); the Python API behind the CLI is in api.py.
"""

from verticals.medical.task import TASK

__all__ = ["TASK"]
