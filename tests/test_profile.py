"""Per-layer profile: parameters add up, FLOPs match the conv formula, shares are fractions; runtimes timed."""

from __future__ import annotations

import pytest

from common.compress.reference_cnn import TASKS
from common.profile import profile_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_profile_rows_add_up(dims):
    task = TASKS[dims]
    cfg = task.tiny_config()
    model = task.build_model(cfg)
    example = task.example_input(cfg)
    table = profile_model(model, example)
    rows = {row["name"]: row for row in table["layers"]}
    assert (
        sum(r["params"] for r in rows.values())
        == table["total"]["params"]
        == sum(p.numel() for p in model.parameters())
    )
    first = model.features[0]  # a 3^d conv, stride 1, "same" padding, no bias
    positions = example[0][0, 0].numel()
    expected = 2 * first.in_channels * first.out_channels * 3**dims * positions * example[0].shape[0]
    assert rows["features.0"]["flops"] == expected
    assert rows["features.0"]["activation_bytes"] == first.out_channels * positions * 4 * example[0].shape[0]
    assert 0 < sum(r["flops"] for r in rows.values()) <= table["total"]["flops"]
    shares = [r["latency_share"] for r in rows.values()]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1.0, abs=1e-6)
    assert table["total"]["latency_ms"] > 0


def test_profile_directory_times_every_runtime(reference_registered, tmp_path):
    from common import runs
    from common.compress.workflow import profile_directory

    task = reference_registered
    cfg = task.tiny_config()
    out = runs.save_model(tmp_path / "m", task.name, task.build_model(cfg), cfg)
    table = profile_directory(out)
    assert set(table["latency_ms"]) == {"torch", "ort_fp32", "ort_int8"}
    assert all(v > 0 for v in table["latency_ms"].values())
    assert table["layers"] and table["vertical"] == "reference"
