"""Label mask -> LUNA16 annotations: world centroid through a flipped, offset NRRD, equal-volume diameter."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from common.errors import UserError
from verticals.medical.labels import write_label_annotations


def test_label_mask_gives_world_centroid_and_sizes(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    mask = np.zeros((20, 40, 50), np.int16)  # (k, j, i)
    k, j, i = np.mgrid[:20, :40, :50]
    ball = ((k - 10) * 2.0) ** 2 + ((j - 15) * 0.5) ** 2 + ((i - 30) * 0.5) ** 2 <= 6.0**2
    mask[ball] = 1
    mask[2:4, 35:37, 2:4] = 2  # a second, small lesion
    image = sitk.GetImageFromArray(mask)
    image.SetSpacing((0.5, 0.5, 2.0))
    image.SetOrigin((10.0, -20.0, -300.0))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # x index runs towards -x (RAS-like storage)
    sitk.WriteImage(image, str(tmp_path / "case_label.nrrd"))

    rows = write_label_annotations([f"case7={tmp_path / 'case_label.nrrd'}"], tmp_path / "ann.csv")
    with open(tmp_path / "ann.csv", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert len(rows) == len(written) == 2 and written[0]["seriesuid"] == "case7"
    big = rows[0]
    assert big["coordX"] == pytest.approx(10.0 - 30 * 0.5, abs=0.01)
    assert big["coordY"] == pytest.approx(-20.0 + 15 * 0.5, abs=0.01)
    assert big["coordZ"] == pytest.approx(-300.0 + 10 * 2.0, abs=0.01)
    volume = ball.sum() * 0.5 * 0.5 * 2.0
    assert big["diameter_mm"] == pytest.approx((6 * volume / math.pi) ** (1 / 3), abs=0.01)
    assert 11.0 <= big["max_inplane_mm"] <= 13.0  # a 12 mm ball's widest slice
    assert rows[1]["voxels"] == 8


def test_empty_or_missing_label_is_a_one_line_error(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8)), str(tmp_path / "e.nrrd"))
    with pytest.raises(UserError, match="empty"):
        write_label_annotations([str(tmp_path / "e.nrrd")], tmp_path / "a.csv")
    with pytest.raises(UserError, match="not found"):
        write_label_annotations([str(tmp_path / "none.nrrd")], tmp_path / "a.csv")
    assert not (tmp_path / "a.csv").exists()
