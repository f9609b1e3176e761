"""Property-based tests of the reader's header handling (hypothesis): geometry and plausibility.

For any orientation, slice step, slice count, file order and header precision a scanner might
write, an untilted, gap-free series reads as ok with the right step and origin; for any header
values at all, the reader returns a status and never raises.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from dicom_builders import ds_str, write_slices
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_adapters import dicom

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rotation(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


quaternions = st.tuples(*[st.floats(-1, 1) for _ in range(4)]).filter(lambda q: np.linalg.norm(q) > 0.2)


@SETTINGS
@given(
    q=quaternions,
    step=st.floats(0.5, 5.0),
    n=st.integers(3, 8),
    iop_decimals=st.integers(4, 8),
    ipp_decimals=st.integers(1, 6),
    order=st.randoms(use_true_random=False),
)
def test_untilted_series_read_ok_at_any_orientation_and_precision(q, step, n, iop_decimals, ipp_decimals, order):
    if 0.5 * 10.0**-ipp_decimals * 10 > step:  # positions rounded coarser than a tenth of a step: not a header
        ipp_decimals = 3
    rot = _rotation(q)
    row, col, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    origin = np.array([-120.25, 33.5, -410.75])
    positions = [[ds_str(v, ipp_decimals) for v in origin + k * step * normal] for k in range(n)]
    iop = [ds_str(v, iop_decimals) for v in (*row, *col)]
    pixels = np.arange(n * 12, dtype=np.int16).reshape(n, 3, 4)
    shuffled = list(range(n))
    order.shuffle(shuffled)
    with tempfile.TemporaryDirectory() as tmp:
        write_slices(Path(tmp) / "s", pixels[shuffled], [positions[i] for i in shuffled], iop)
        (series,), skipped = dicom.read_series(tmp, load=True)
    assert not skipped and series.status == "ok", series.reasons
    res = 0.5 * 10.0**-ipp_decimals
    assert abs(series.spacing_zyx[0] - step) <= 4 * np.sqrt(3) * res / (n - 1) + 1e-3
    np.testing.assert_array_equal(series.hu, pixels.astype(np.float32))  # sorted back along the normal
    np.testing.assert_allclose(series.origin_xyz, [float(v) for v in positions[0]], atol=1e-9)
    np.testing.assert_allclose(series.direction[:, 2], normal, atol=1e-3)


header_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1e30, 1e-30, 0.5, 1.0])
)


@SETTINGS
@given(spacing=header_numbers, slope=header_numbers, intercept=header_numbers)
def test_any_header_numbers_give_a_status_never_an_exception(spacing, slope, intercept):
    def text(v: float) -> str:
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf") if np.isinf(v) else f"{v:.6g}"

    with tempfile.TemporaryDirectory() as tmp:
        write_slices(
            Path(tmp) / "s", np.full((3, 2, 2), 100, np.int16),
            [["0", "0", str(2 * k)] for k in range(3)],
            spacing=(text(spacing), text(spacing)), slope=text(slope), intercept=text(intercept),
        )  # fmt: skip
        (series,), _ = dicom.read_series(tmp, load=True)
    lo, hi = dicom.PIXEL_SPACING_MM
    plausible = (
        np.isfinite(spacing) and lo <= float(text(spacing)) <= hi
        and np.isfinite(slope) and 0 < abs(float(text(slope))) <= dicom.MAX_ABS_SLOPE
        and np.isfinite(intercept) and abs(float(text(intercept))) <= dicom.MAX_ABS_INTERCEPT
        and dicom.HU_RANGE[0] <= 100 * float(text(slope)) + float(text(intercept)) <= dicom.HU_RANGE[1]
    )  # fmt: skip
    assert series.status == ("ok" if plausible else "rejected"), (series.reasons, spacing, slope, intercept)
    if series.status == "ok":
        assert series.hu is not None and np.isfinite(series.hu).all()
