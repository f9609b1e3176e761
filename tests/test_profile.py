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


def test_tcn_layers_with_children_get_their_own_flops():
    """A TemporalConv1d owns its weights and has a padding child: it used to show 0 FLOPs."""
    from common.registry import get_task
    from verticals.finance.config import FinanceConfig

    task = get_task("finance")
    cfg = FinanceConfig()
    model = task.build_model(cfg)
    seq, nbr, txn = task.example_input(cfg)
    rows = {row["name"]: row for row in profile_model(model, (seq, nbr, txn))["layers"]}
    conv = rows["tcn.network.0.conv1"]
    assert conv["type"] == "TemporalConv1d" and conv["flops_counted"]
    module = model.tcn.network[0].conv1
    weight = dict(module.named_parameters())
    w = next(v for k, v in weight.items() if v.dim() == 3)
    sequences, steps = 2 * seq.shape[0], seq.shape[2]  # both sides of each transaction, "same" causal length
    assert conv["flops"] == 2 * w.shape[0] * w.shape[1] * w.shape[2] * steps * sequences
    assert all(r["flops"] > 0 for r in rows.values() if r["params"] and r["type"] in ("TemporalConv1d", "Linear"))
    assert not rows["tcn.network.0.activation1"]["flops_counted"]  # a ReLU: shown as n/a, not 0
