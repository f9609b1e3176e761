"""Model directories: complete, versioned, refused when incompatible; device and seeding helpers."""

from __future__ import annotations

import json

import pytest
import torch

from common import runs
from common.device import seed_everything, select_device
from common.errors import UserError


def test_save_load_round_trip(reference_registered, tmp_path):
    task = reference_registered
    cfg = task.tiny_config()
    seed_everything(3)
    model = task.build_model(cfg)
    data = task.synthesize(tmp_path / "d", seed=1, scale="tiny")
    out = runs.save_model(
        tmp_path / "m", "reference", model, cfg, metrics={"auroc": 0.5}, seed=3, data_fingerprint=runs.fingerprint(data)
    )
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["vertical"] == "reference" and meta["seed"] == 3
    assert meta["data_fingerprint"].startswith("sha256:")
    assert {"fedsite", "torch", "onnxruntime", "flwr"} <= set(meta["versions"])
    assert meta["metrics"] == {"auroc": 0.5}
    loaded = runs.load_model(out)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_incompatible_or_broken_directories_are_refused(reference_registered, tmp_path):
    task = reference_registered
    out = runs.save_model(tmp_path / "m", "reference", task.build_model(task.tiny_config()), task.tiny_config())
    meta = json.loads((out / "metadata.json").read_text())
    meta["format_version"] = 99
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="format 99"):
        runs.load_model(out)
    with pytest.raises(UserError, match="not found"):
        runs.load_model(tmp_path / "missing")
    meta["format_version"] = runs.FORMAT_VERSION
    (out / "metadata.json").write_text(json.dumps(meta))
    (out / "manifest.json").unlink()  # as saved by an older fedsite: the weights' own check still names the file
    (out / "model.pt").write_bytes(b"truncated")
    with pytest.raises(UserError, match="unreadable weights"):
        runs.load_model(out)
    with pytest.raises(UserError, match="expected a 'medical' model"):
        runs.load_model(out, expect="medical")


def test_fingerprint_changes_with_content(tmp_path):
    (tmp_path / "a.csv").write_text("1\n")
    first = runs.fingerprint(tmp_path)
    assert runs.fingerprint(tmp_path) == first
    (tmp_path / "a.csv").write_text("2\n")
    assert runs.fingerprint(tmp_path) != first


def test_seed_makes_models_identical():
    seed_everything(5)
    a = torch.nn.Linear(4, 4).weight.clone()
    seed_everything(5)
    b = torch.nn.Linear(4, 4).weight.clone()
    assert torch.equal(a, b)
    assert select_device("cpu").type == "cpu"
    assert select_device().type in ("cpu", "cuda")
