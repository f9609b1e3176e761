"""A site's CT data in memory: its cases on the model grid (with annotations) and what was rejected.

The reading itself (DICOM series -> resampled, windowed volumes) is preprocess.py's job; this is
the dataset type the Task's verbs pass around, and its loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from verticals.medical.config import MedicalConfig


@dataclass
class MedicalData:
    """A site's local data: cases on the model grid (with annotations) and what was rejected."""

    cases: list
    rejected: list
    skipped: list

    def __len__(self) -> int:
        """Examples = usable series (what FedAvg weights a site by)."""
        return len(self.cases)


def load_split(cfg: MedicalConfig, source: str | Path, split: str) -> MedicalData:
    """The series under `source` assigned to `split`, annotated from `source/annotations.csv`."""
    from verticals.medical.preprocess import load_cases

    source = Path(source)
    cases, rejected, skipped = load_cases(source, source / "annotations.csv", cfg, split)
    return MedicalData(cases, rejected, skipped)
