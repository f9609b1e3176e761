"""`fedsite compress` / `fedsite profile` end to end: compression.json as docs/contracts.md says, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common import runs
from common.cli import main
from common.export import onnx_size_bytes, run_session, session

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def model_dir(reference_registered, tmp_path):
    task = reference_registered
    cfg = task.tiny_config()
    torch.manual_seed(0)
    source = task.synthesize(tmp_path / "data", seed=0, scale="tiny")
    model = task.build_model(cfg)
    task.fit(model, task.load_data(cfg, source, "train"), cfg)
    return runs.save_model(tmp_path / "model", task.name, model, cfg, seed=0), source


def test_compress_writes_a_model_directory_and_the_contract_report(model_dir, tmp_path, capsys):
    src, data = model_dir
    out = tmp_path / "small"
    code = main(
        [
            "compress",
            str(src),
            "--out",
            str(out),
            "--prune",
            "0.5",
            "--distill",
            "--data",
            str(data),
            "--max-drop",
            "0.05",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"model.pt", "config.toml", "metadata.json", "model.onnx", "compression.json"} <= names
    report = json.loads((out / "compression.json").read_text())
    assert set(report["size_bytes"]) >= {"fp32", "int8"} and set(report["latency_ms"]) >= {
        "torch",
        "ort_fp32",
        "ort_int8",
    }
    assert report["size_bytes"]["fp32"] == onnx_size_bytes(out / "model_fp32.onnx")
    assert report["size_bytes"]["int8"] == onnx_size_bytes(out / "model_int8.onnx")
    assert all(v > 0 for v in report["latency_ms"].values())
    assert report["metric"]["name"] == "auroc" and {"before", "after"} <= set(report["metric"])
    assert report["chosen"] in ("ort_fp32", "ort_int8") and isinstance(report["kept_fp32_nodes"], list)
    kinds = [c["kind"] for c in report["int8"]["candidates"]]
    assert kinds[0] == "static" and "static_conv" in kinds  # Conv-only INT8 is timed beside full static
    assert all(c["latency_ms"] > 0 and "drop" in c for c in report["int8"]["candidates"])
    assert report["data"]["synthesized"] is False and report["distill"] is not None
    assert report["params"]["after"] < report["params"]["before"]
    # the directory is a model directory: it loads (pruned widths restored) and its ONNX matches torch
    loaded = runs.load_model(out)
    assert sum(p.numel() for p in loaded.model.parameters()) == report["params"]["after"]
    x = torch.randn(5, 1, 32)
    fp32 = run_session(session(out / "model_fp32.onnx"), [x])[0]
    np.testing.assert_allclose(fp32, loaded.model(x).detach().numpy(), atol=1e-4)
    chosen = "model_int8.onnx" if report["chosen"] == "ort_int8" else "model_fp32.onnx"
    assert (out / "model.onnx").read_bytes() == (out / chosen).read_bytes()
    assert (src / "model.pt").exists() and not (src / "compression.json").exists()  # input untouched


def test_compress_without_data_synthesizes_and_says_so(model_dir, tmp_path):
    src, _ = model_dir
    out = tmp_path / "off"
    assert main(["compress", str(src), "--out", str(out), "--int8", "off", "--scale", "tiny"]) == 0
    report = json.loads((out / "compression.json").read_text())
    assert report["data"]["synthesized"] is True and report["data"]["source"] == "synthesized"
    assert report["chosen"] == "ort_fp32" and report["size_bytes"]["int8"] is None
    assert report["latency_ms"]["ort_int8"] is None and not (out / "model_int8.onnx").exists()


def test_old_data_scale_spelling_still_works_hidden_and_warned(model_dir, tmp_path, capsys):
    """`--scale` as in synth/federate; the old `--data-scale` is a hidden alias with a warning."""
    src, _ = model_dir
    out = tmp_path / "old"
    assert main(["compress", str(src), "--out", str(out), "--int8", "off", "--data-scale", "tiny"]) == 0
    assert json.loads((out / "compression.json").read_text())["data"]["scale"] == "tiny"
    assert "--data-scale is deprecated; say --scale" in capsys.readouterr().err
    assert main(["compress", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--scale" in shown and "--data-scale" not in shown


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prune", "1.5"], "--prune"),
        (["--max-drop", "-1"], "--max-drop"),
        (["--int8", "sometimes"], "--int8"),
        (["--data", "/no/such/data"], "not found"),
    ],
)
def test_bad_options_exit_2_with_one_line(model_dir, tmp_path, capsys, args, message):
    src, _ = model_dir
    code = main(["compress", str(src), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "o").exists()


def test_missing_model_and_overwriting_the_input_are_refused(model_dir, tmp_path, capsys):
    src, _ = model_dir
    assert main(["compress", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert main(["compress", str(src), "--out", str(src)]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_profile_prints_a_table_and_json(model_dir, capsys):
    src, _ = model_dir
    assert main(["profile", str(src), "--no-ort"]) == 0
    table = capsys.readouterr().out
    assert "body.0" in table and "Conv1d" in table and "latency ms" in table
    assert main(["profile", str(src), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"layers", "total", "latency_ms"} <= set(data) and data["latency_ms"]["ort_int8"] > 0


def test_compress_refuses_a_metric_that_cannot_show_a_drop(model_dir, tmp_path, capsys):
    """Held-out labels of one class make AUROC undefined (NaN): the INT8 budget would pass anything."""
    src, data = model_dir
    d = np.load(data / "data.npz")
    one_class = tmp_path / "one_class"
    one_class.mkdir()
    np.savez(one_class / "data.npz", x=d["x"], y=np.zeros_like(d["y"]))
    out = tmp_path / "guarded"
    code = main(["compress", str(src), "--out", str(out), "--data", str(one_class)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "cannot be measured" in err and "--force" in err
    code = main(["compress", str(src), "--out", str(out), "--data", str(one_class), "--int8", "off", "--force"])
    assert code == 0
    report = json.loads((out / "compression.json").read_text())
    assert report["metric"]["guard"].startswith("off:")


def test_guard_accepts_a_metric_that_can_anchor_a_drop():
    from common.guard import require_judgeable, unjudgeable_reason

    assert unjudgeable_reason(0.73) is None and require_judgeable(0.73, "auroc", force=False) is None
    assert unjudgeable_reason(0.0) == "is 0" and "not finite" in unjudgeable_reason(float("nan"))
