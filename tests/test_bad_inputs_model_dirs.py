"""Damaged model directories (issue 18, Model directories): every file checked against manifest.json.

Each vertical's directory is built by `runs.save_model` from its tiny preset (with the ONNX export
and, for manufacturing, a golden-template baseline, as `train` writes them); then one file at a time
is emptied or has one byte flipped, and loading must fail with exit 2 naming that file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from common import manifest, runs
from common.cli import main
from common.errors import UserError
from common.export import export_onnx
from common.registry import get_task
from verticals.manufacturing.baseline import GoldenTemplate

FILES = {
    "finance": ("model.pt", "model.onnx", "config.toml", "metadata.json"),
    "manufacturing": ("model.pt", "model.onnx", "baseline.npz", "config.toml", "metadata.json"),
    "medical": ("model.pt", "config.toml", "metadata.json"),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-dirs")
    dirs = {}
    for vertical in FILES:
        task = get_task(vertical)
        cfg = task.presets["tiny"]
        model = task.build_model(cfg).eval()
        extra = {}
        with tempfile.TemporaryDirectory() as work:
            if "model.onnx" in FILES[vertical]:
                extra["model.onnx"] = export_onnx(model, task.example_input(cfg), Path(work) / "m.onnx").read_bytes()
        if vertical == "manufacturing":
            size = cfg.image_size
            extra["baseline.npz"] = GoldenTemplate(
                np.zeros((size, size, 3), np.float32), np.ones((size, size, 3), np.float32), 1.0
            ).to_bytes()
        dirs[vertical] = runs.save_model(root / vertical, vertical, model, cfg, extra_files=extra)
    return dirs


def _damaged(source: Path, dest: Path, name: str, how: str) -> Path:
    shutil.copytree(source, dest)
    file = dest / name
    data = bytearray(file.read_bytes())
    if how == "empty":
        data = bytearray()
    else:
        data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    return dest


def test_save_model_writes_a_manifest_of_every_file(model_dirs):
    for vertical, path in model_dirs.items():
        listed = set(manifest.build(path)["files"])
        assert listed == set(FILES[vertical]), vertical
        assert manifest.verify(path) is None


@pytest.mark.parametrize("vertical", sorted(FILES))
@pytest.mark.parametrize("how", ["empty", "flipped"])
def test_a_damaged_file_is_named_with_exit_2(model_dirs, tmp_path, capsys, vertical, how):
    for name in FILES[vertical]:
        damaged = _damaged(model_dirs[vertical], tmp_path / f"{name}-{how}", name, how)
        capsys.readouterr()
        assert main(["profile", str(damaged), "--no-ort"]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(damaged / name) in err[0] and "damaged" in err[0], (name, err)


def test_finance_score_names_a_damaged_onnx_file(model_dirs, tmp_path, capsys):
    data = tmp_path / "t.csv"
    data.write_text("txn_id,timestamp,src_account,dst_account,amount\nt1,1700000000,a,b,10\n")
    damaged = _damaged(model_dirs["finance"], tmp_path / "m", "model.onnx", "empty")
    out = tmp_path / "s.csv"
    assert main(["finance", "score", "--data", str(data), "--model", str(damaged), "--out", str(out)]) == 2
    assert "model.onnx: damaged (empty)" in capsys.readouterr().err


def test_a_directory_without_a_manifest_loads_with_a_note_and_still_names_bad_files(model_dirs, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(model_dirs["manufacturing"], old)
    (old / manifest.NAME).unlink()
    capsys.readouterr()
    assert runs.load_model(old, expect="manufacturing").metadata["vertical"] == "manufacturing"
    assert "no manifest.json" in capsys.readouterr().err
    # without digests, each reader still names the file it cannot read (exit 2, not "internal error")
    (old / "model.onnx").write_bytes(b"")
    data = tmp_path / "t.csv"
    data.write_text("txn_id,timestamp,src_account,dst_account,amount\nt1,1700000000,a,b,10\n")
    fin = tmp_path / "fin"
    shutil.copytree(model_dirs["finance"], fin)
    (fin / manifest.NAME).unlink()
    (fin / "model.onnx").write_bytes(b"\x08\x01garbage")
    assert main(["finance", "score", "--data", str(data), "--model", str(fin), "--out", str(tmp_path / "s.csv")]) == 2
    assert "model.onnx: unreadable ONNX model" in capsys.readouterr().err
    with pytest.raises(UserError, match="baseline.npz: unreadable golden-template baseline"):
        GoldenTemplate.from_bytes(b"PK\x03\x04cut", "baseline.npz")


def test_a_file_listed_but_missing_or_an_unreadable_manifest(model_dirs, tmp_path):
    gone = tmp_path / "gone"
    shutil.copytree(model_dirs["medical"], gone)
    (gone / "model.pt").unlink()
    with pytest.raises(UserError, match="model.pt: missing from the model directory"):
        runs.load_model(gone)
    broken = tmp_path / "broken"
    shutil.copytree(model_dirs["medical"], broken)
    (broken / manifest.NAME).write_text("{")
    with pytest.raises(UserError, match="unreadable checksum manifest"):
        runs.load_model(broken)
