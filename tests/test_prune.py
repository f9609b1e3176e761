"""Structural pruning removes channels (the model still runs and exports), magnitude pruning gives sparsity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common import runs
from common.compress.prune import (
    count_params,
    magnitude_prune,
    output_layers,
    prune_channels,
    structure,
    weight_sparsity,
)
from common.compress.reference_cnn import TASKS
from common.export import export_onnx, parity

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_output_layers_are_the_ones_that_shape_the_outputs():
    task = TASKS[2]
    cfg = task.tiny_config()
    model = task.build_model(cfg)
    assert output_layers(model, task.example_input(cfg)) == [model.head]

    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(1, 8, 3, padding=1)
            self.norm = nn.BatchNorm2d(4)
            self.cls = nn.Conv2d(8, 4, 1)
            self.box = nn.Linear(8, 6)

        def forward(self, x):
            feats = torch.relu(self.body(x))
            return torch.sigmoid(self.norm(self.cls(feats))), self.box(feats.mean((2, 3)))

    two = TwoHeads()
    found = output_layers(two, (torch.randn(2, 1, 8, 8),))
    assert {id(m) for m in found} == {id(two.cls), id(two.box)}  # walked through sigmoid and batch norm


def test_iterative_channel_pruning_shrinks_and_keeps_working(tmp_path):
    torch.manual_seed(0)
    task = TASKS[2]
    cfg = task.tiny_config()
    source = task.synthesize(tmp_path / "data", seed=0, scale="tiny")
    train, test = task.load_data(cfg, source, "train"), task.load_data(cfg, source, "test")
    model = task.build_model(cfg)
    task.fit(model, train, cfg, epochs=1)
    example = task.example_input(cfg)
    widths_before = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    report = prune_channels(task, model, train, cfg, example, fraction=0.5, step=0.25, final_epochs=1)
    assert report["rounds"] == 2 and len(report["history"]) == 2
    assert report["params_after"] == count_params(model) < 0.5 * report["params_before"]
    widths_after = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(widths_after) < sum(widths_before)
    assert model.head.out_features == 1  # the output layer keeps its width
    with torch.no_grad():
        out = model(torch.randn(3, *example[0].shape[1:]))
    assert out.shape == (3,) and torch.isfinite(out).all()
    metrics = task.evaluate(model, test, cfg)
    assert 0.0 <= metrics["auroc"] <= 1.0
    path = export_onnx(model, example, tmp_path / "pruned.onnx")
    assert parity(model, path, (torch.randn(4, *example[0].shape[1:]),)) <= 1e-4


def test_pruned_model_directory_loads_back(reference_registered, tmp_path):
    task = reference_registered
    cfg = task.tiny_config()
    source = task.synthesize(tmp_path / "data", seed=0, scale="tiny")
    train = task.load_data(cfg, source, "train")
    model = task.build_model(cfg)
    prune_channels(task, model, train, cfg, task.example_input(cfg), fraction=0.5, step=0.5, final_epochs=0)
    out = runs.save_model(tmp_path / "m", task.name, model, cfg, extra={"pruned_structure": structure(model)})
    loaded = runs.load_model(out)
    x = task.example_input(cfg)[0]
    assert count_params(loaded.model) == count_params(model)
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_magnitude_pruning_reports_sparsity():
    torch.manual_seed(0)
    model = TASKS[1].build_model(TASKS[1].tiny_config())
    assert weight_sparsity(model) == 0.0
    result = magnitude_prune(model, 0.6)
    assert result["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert not any(name.endswith("_mask") for name, _ in model.named_buffers())  # zeros baked in, no masks
    with pytest.raises(ValueError):
        prune_channels(TASKS[1], model, None, None, (), fraction=1.5)


class _WidthBoundTask:
    """The reference Task, but its training needs the body's full width (like a loss on a hidden
    reconstruction head that the forward pass does not return): a cut breaks training, not forward."""

    def __init__(self, base):
        self.base = base

    def fit(self, model, data, cfg, **kwargs):
        if model.body[0].out_channels != cfg.channels:
            raise RuntimeError(f"reconstruction expects {cfg.channels} channels, got {model.body[0].out_channels}")
        return self.base.fit(model, data, cfg, **kwargs)


def test_a_cut_that_breaks_training_is_rolled_back(reference_registered, tmp_path):
    base = reference_registered
    cfg = base.tiny_config()
    source = base.synthesize(tmp_path / "data", seed=0, scale="tiny")
    train = base.load_data(cfg, source, "train")
    model = base.build_model(cfg)
    before = count_params(model)
    example = base.example_input(cfg)
    report = prune_channels(_WidthBoundTask(base), model, train, cfg, example, fraction=0.5, step=0.25)
    assert report["rounds_done"] == 0 and "cannot train the pruned model" in report["stopped"]
    assert count_params(model) == before and model.body[0].out_channels == cfg.channels
    assert model(example[0]).shape == (example[0].shape[0],)
