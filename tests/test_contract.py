"""Every registered Task goes through the same stages (think scikit-learn's check_estimator).

build -> one short fit on tiny synthetic data -> evaluate (headline first, finite) -> save/load
round trip (identical outputs) -> ONNX export with parity -> profile. A vertical joins this test by
registering; the reference Task proves the harness before any vertical lands.
"""

from __future__ import annotations

import math

import pytest
import torch

from common import config, registry, runs
from common.device import seed_everything
from common.export import export_onnx, parity
from common.task import Task, first_output


def _task_names() -> list[str]:
    names = ["reference"]
    for name in registry.names():
        try:
            if registry.get_task(name) is not None:
                names.append(name)
        except ImportError:
            names.append(name)  # a vertical that fails to import must fail here, loudly
    return names


@pytest.fixture(params=_task_names())
def task(request, reference_registered):
    return registry.get_task(request.param)


def test_task_runs_every_stage(task, tmp_path):
    assert isinstance(task, Task), f"{task} does not satisfy the Task protocol"
    seed_everything(0)
    cfg = task.tiny_config()
    source = task.synthesize(tmp_path / "data", seed=0, scale="tiny")
    train = task.load_data(cfg, source, "train")
    test = task.load_data(cfg, source, "test")

    model = task.build_model(cfg)
    fit_metrics = task.fit(model, train, cfg, epochs=1)
    assert "loss" in fit_metrics and math.isfinite(fit_metrics["loss"])

    metrics = task.evaluate(model, test, cfg)
    assert next(iter(metrics)) == task.headline_metric
    assert all(math.isfinite(v) for v in metrics.values())

    # save / load round trip gives the same outputs
    example = task.example_input(cfg)
    model.eval()
    with torch.no_grad():
        before = first_output(model(*example))
    out = runs.save_model(tmp_path / "model", task.name, model, cfg, metrics=metrics, seed=0)
    assert {"model.pt", "config.toml", "metadata.json"} <= {p.name for p in out.iterdir()}
    loaded = runs.load_model(out)
    assert config.to_dict(loaded.cfg) == config.to_dict(cfg)
    with torch.no_grad():
        after = first_output(loaded.model(*example))
    torch.testing.assert_close(before, after)

    # ONNX export with a dynamic batch, parity on a different batch size than the export example
    onnx_path = export_onnx(loaded.model, example, tmp_path / "model.onnx")
    batches = list(task.calibration_batches(train, cfg))
    assert batches, "calibration_batches yielded nothing"
    assert parity(loaded.model, onnx_path, batches[0], atol=1e-4) <= 1e-4

    # profiling covers the model (per-layer rows whose parameters add up to the model's)
    try:
        from common.profile import profile_model
    except ImportError:
        pytest.fail("common.profile.profile_model is missing")
    table = profile_model(loaded.model, example)
    assert sum(row["params"] for row in table["layers"]) == sum(p.numel() for p in loaded.model.parameters())
