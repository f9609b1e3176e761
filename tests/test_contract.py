"""Every registered Task goes through the same stages (think scikit-learn's check_estimator).

build -> one short fit on tiny synthetic data, through a FitContext -> evaluate (headline first,
finite) -> save/load round trip (identical outputs) -> ONNX export with parity -> calibration ->
profile, and every optional hook of common.task.Task (presets, federated_moments,
prune_ignored_layers, final_round_only, len(data)). Each stage is its own test, parametrized over
the Tasks, so a failing stage does not hide the others; the tiny data and the fitted model are made
once per Task. A vertical joins this test by registering; the reference Task proves the harness.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from common import config, registry, runs
from common.device import seed_everything
from common.export import export_onnx, parity
from common.task import FitContext, FitWindow, KeptOptimizer, Task, first_output


def _task_names() -> list[str]:
    names = ["reference"]
    for name in registry.names():
        try:
            if registry.get_task(name) is not None:
                names.append(name)
        except ImportError:
            names.append(name)  # a vertical that fails to import must fail here, loudly
    return names


@pytest.fixture(scope="module")
def registered():
    """The reference Task registered beside the verticals for this module (model directories name it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.VERTICALS, "reference", "reference_task")
        yield


_PREPARED: dict[str, SimpleNamespace] = {}


@pytest.fixture(params=_task_names())
def prepared(request, registered, tmp_path_factory):
    """The Task, its tiny config and data, and a model fitted once through a FitContext."""
    name = request.param
    if name not in _PREPARED:
        task = registry.get_task(name)
        tmp = tmp_path_factory.mktemp(f"contract-{name}")
        seed_everything(0)
        cfg = task.tiny_config()
        source = task.synthesize(tmp / "data", seed=0, scale="tiny")
        train = task.load_data(cfg, source, "train")
        test = task.load_data(cfg, source, "test")
        model = task.build_model(cfg)
        calls: list[tuple] = []

        def extra(m, inputs, outputs):  # records what fit hands it; adds nothing to the loss
            calls.append((m, inputs, outputs))
            return 0.0 * first_output(outputs).sum()

        kept = KeptOptimizer()
        context = FitContext(extra_loss=extra, optimizer=kept, window=FitWindow(0, 1))
        fit_metrics = task.fit(model, train, cfg, epochs=1, context=context)
        _PREPARED[name] = SimpleNamespace(
            task=task, cfg=cfg, train=train, test=test, model=model, fit=fit_metrics, calls=calls, kept=kept, tmp=tmp
        )
    return _PREPARED[name]


def test_subclasses_the_task_base(prepared):
    task = prepared.task
    assert isinstance(task, Task), f"{task} does not subclass common.task.Task"
    assert task.name and task.headline_metric and dataclasses.is_dataclass(task.config_cls)


def test_presets_are_configs_of_the_task(prepared):
    task = prepared.task
    assert {"tiny", "small", "default"} <= set(task.presets)
    for name in ("tiny", "small", "default"):
        assert isinstance(task.preset(name), task.config_cls), name
    assert task.tiny_config() == task.preset("tiny")
    config.from_toml(task.config_cls, config.to_toml(task.preset("small")))  # every preset round-trips


def test_len_of_data_counts_examples(prepared):
    for data in (prepared.train, prepared.test):
        assert isinstance(len(data), int) and len(data) > 0


def test_fit_honours_its_context(prepared):
    assert "loss" in prepared.fit and math.isfinite(prepared.fit["loss"])
    assert prepared.calls, "fit never called the context's extra_loss"
    model, inputs, outputs = prepared.calls[0]
    assert model is prepared.model and all(isinstance(t, torch.Tensor) for t in inputs)
    assert isinstance(first_output(outputs), torch.Tensor)
    optimizer = prepared.kept.last
    assert optimizer is not None, "fit did not build its optimizer with fit_optimizer(context, ...)"
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert params <= {id(p) for p in prepared.model.parameters()} and optimizer.state


def test_evaluate_gives_the_headline_first(prepared):
    metrics = prepared.task.evaluate(prepared.model, prepared.test, prepared.cfg)
    assert next(iter(metrics)) == prepared.task.headline_metric
    assert all(math.isfinite(v) for v in metrics.values())


def test_save_load_round_trip(prepared):
    task, cfg, model = prepared.task, prepared.cfg, prepared.model
    example = task.example_input(cfg)
    model.eval()
    with torch.no_grad():
        before = first_output(model(*example))
    out = runs.save_model(prepared.tmp / "model", task.name, model, cfg, metrics={}, seed=0)
    assert {"model.pt", "config.toml", "metadata.json"} <= {p.name for p in out.iterdir()}
    loaded = runs.load_model(out)
    assert config.to_dict(loaded.cfg) == config.to_dict(cfg)
    with torch.no_grad():
        after = first_output(loaded.model(*example))
    torch.testing.assert_close(before, after)


def test_onnx_export_matches_on_calibration_batches(prepared):
    """Dynamic batch: parity on a calibration batch, whose size differs from the export example's."""
    task, cfg, model = prepared.task, prepared.cfg, prepared.model.eval()
    onnx_path = export_onnx(model, task.example_input(cfg), prepared.tmp / "model.onnx")
    batches = list(task.calibration_batches(prepared.train, cfg))
    assert batches, "calibration_batches yielded nothing"
    assert all(isinstance(b, tuple) and all(isinstance(t, torch.Tensor) for t in b) for b in batches)
    assert parity(model, onnx_path, batches[0], atol=1e-4) <= 1e-4


def test_profile_covers_the_model(prepared):
    from common.profile import profile_model

    model = prepared.model
    table = profile_model(model, prepared.task.example_input(prepared.cfg))
    assert sum(row["params"] for row in table["layers"]) == sum(p.numel() for p in model.parameters())


def test_federated_moments_name_matching_state_entries(prepared):
    state = prepared.model.state_dict()
    pairs = prepared.task.federated_moments(prepared.model)
    assert len(set(pairs)) == len(pairs)
    for mean, spread, kind in pairs:
        assert kind in ("var", "std") and mean in state and spread in state, (mean, spread, kind)
        assert state[mean].shape == state[spread].shape and state[mean].is_floating_point()
    bn = [m for m in prepared.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert sum(kind == "var" for _, _, kind in pairs) >= sum(m.track_running_stats for m in bn)


def test_prune_ignored_layers_exist(prepared):
    modules = dict(prepared.model.named_modules())
    for item in prepared.task.prune_ignored_layers(prepared.model):
        assert item in modules if isinstance(item, str) else item in modules.values(), item


def test_final_round_only_names_boolean_config_keys(prepared):
    fields = {f.name: f for f in dataclasses.fields(prepared.task.config_cls)}
    assert isinstance(prepared.task.final_round_only, tuple)
    for key in prepared.task.final_round_only:
        assert key in fields and isinstance(getattr(prepared.cfg, key), bool), key
