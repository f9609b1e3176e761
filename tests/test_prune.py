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
from common.task import Task

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


class _WidthBoundTask(Task):
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


class _TinyUNet(nn.Module):
    """What the verticals combine: InstanceNorm + in-place activation, scSE, a skip concatenation, an
    output head, and a reconstruction head that only the training loss sees."""

    def __init__(self) -> None:
        super().__init__()
        from common.blocks import attention

        self.enc = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.InstanceNorm3d(8, affine=True), nn.LeakyReLU(0.1, True)
        )
        self.down = nn.Sequential(nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.att = attention("scse", 3, 16)
        self.up = nn.ConvTranspose3d(16, 8, 2, stride=2)
        self.dec = nn.Sequential(
            nn.Conv3d(16, 8, 3, padding=1), nn.InstanceNorm3d(8, affine=True), nn.LeakyReLU(0.1, True)
        )
        self.head = nn.Conv3d(8, 2, 1)
        self.recon = nn.Conv3d(16, 1, 1)  # used by the loss only

    def features(self, x):
        e = self.enc(x)
        d = self.att(self.down(e))
        return self.dec(torch.cat([self.up(d), e], 1)), d

    def forward(self, x):
        return self.head(self.features(x)[0])


class _UNetTask(Task):
    headline_metric = "neg_loss"
    higher_is_better = True

    def fit(self, model, data, cfg, *, epochs=1, context=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        for _ in range(epochs):
            for x in data:
                feats, deep = model.features(x)
                recon = nn.functional.interpolate(model.recon(deep), size=x.shape[-3:])
                loss = model.head(feats).pow(2).mean() + (recon - x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {"loss": float(loss)}


def test_unet_with_attention_norms_skips_and_a_loss_only_head_prunes():
    torch.manual_seed(0)
    model = _TinyUNet()
    data = [torch.randn(2, 1, 8, 8, 8) for _ in range(2)]
    example = (torch.randn(1, 1, 8, 8, 8),)
    report = prune_channels(_UNetTask(), model, data, None, example, fraction=0.5, step=0.25)
    assert report["rounds_done"] == 2 and "stopped" not in report, report
    assert {"head", "recon"} <= set(report["ignored_layers"])  # recon found through the loss, not forward
    assert model.head.out_channels == 2 and model.recon.out_channels == 1
    assert model.enc[0].out_channels < 8 and model.enc[1].num_features == model.enc[0].out_channels
    assert model.att.spatial.conv.out_channels == 1
    assert model.att.spatial.conv.in_channels == model.down[0].out_channels < 16
    assert model(torch.randn(3, 1, 8, 8, 8)).shape == (3, 2, 8, 8, 8)
    _UNetTask().fit(model, data, None)  # and the loss-only head still trains


class _FixedPick(nn.Module):
    """Reads channels 0, 2 and 5 of a conv by position: a cut Torch-Pruning's trace cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(1, 8, 3, padding=1)
        self.b = nn.Conv1d(1, 8, 3, padding=1)
        self.c = nn.Conv1d(8, 8, 3, padding=1)
        self.head = nn.Linear(11, 1)

    def forward(self, x):
        picked = self.a(x)[:, [0, 2, 5]].mean(-1)
        return self.head(torch.cat([picked, self.c(torch.relu(self.b(x))).mean(-1)], 1))


def test_groups_the_dependency_graph_gets_wrong_are_found_and_left_whole():
    from common.compress.prune import breaking_groups

    model = _FixedPick()
    example = (torch.randn(2, 1, 16),)
    assert breaking_groups(model, example, [model.head]) == ["a"]


def test_a_task_can_name_layers_to_leave_whole(reference_registered, tmp_path):
    base = reference_registered
    cfg = base.tiny_config()
    train = base.load_data(cfg, base.synthesize(tmp_path / "data", seed=0, scale="tiny"), "train")

    class Declaring(Task):
        def fit(self, *args, **kwargs):
            return base.fit(*args, **kwargs)

        def prune_ignored_layers(self, model):
            return ["body.0"]

    model = base.build_model(cfg)
    report = prune_channels(Declaring(), model, train, cfg, base.example_input(cfg), fraction=0.5, step=0.5)
    assert "body.0" in report["ignored_layers"] and model.body[0].out_channels == cfg.channels
    assert model.body[2].out_channels < cfg.channels


@pytest.mark.parametrize("name", ["medical", "finance", "manufacturing"])
def test_each_vertical_model_prunes_and_reloads(name, tmp_path):
    """The verticals' models (U-Net skips, scSE gates, a loss-only reconstruction head, a TCN + GNN)
    lose channels in every round and load back from their model directory."""
    from common.registry import available_tasks

    torch.manual_seed(0)
    task = available_tasks()[name]
    cfg = task.tiny_config()
    train = task.load_data(cfg, task.synthesize(tmp_path / "data", seed=0, scale="tiny"), "train")
    model = task.build_model(cfg)
    example = tuple(task.example_input(cfg))
    report = prune_channels(task, model, train, cfg, example, fraction=0.5, step=0.25, final_epochs=0)
    assert report["rounds_done"] == 2 and "stopped" not in report, report.get("stopped")
    assert report["params_after"] < 0.8 * report["params_before"]
    out = runs.save_model(tmp_path / "m", name, model, cfg, extra={"pruned_structure": structure(model)})
    loaded = runs.load_model(out).model.eval()
    with torch.no_grad():
        for a, b in zip(_leaves(model.eval()(*example)), _leaves(loaded(*example))):
            torch.testing.assert_close(a, b)


def _leaves(outputs):
    from common.export import output_leaves

    return output_leaves(outputs)
