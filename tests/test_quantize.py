"""ONNX Runtime INT8: nodes really quantized, error bounded, sensitivity-based fp32 exclusion, auto choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.compress.latency import OrtModule
from common.compress.pipeline import CompressOptions, compress_model
from common.compress.quantize import (
    prepare,
    quantization_summary,
    quantize_dynamic_int8,
    quantize_static_int8,
    weighted_nodes,
)
from common.compress.reference_cnn import TASKS
from common.compress.sensitivity import _first_outputs, mixed_precision, node_sensitivity, relative_error
from common.export import export_onnx, onnx_size_bytes, run_session, session

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(one_torch_thread, tmp_path_factory):
    """A tiny 2D reference CNN trained for one epoch, exported and pre-processed for quantization."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("quant")
    task = TASKS[2]
    cfg = task.tiny_config()
    source = task.synthesize(tmp / "data", seed=0, scale="tiny")
    train, test = task.load_data(cfg, source, "train"), task.load_data(cfg, source, "test")
    model = task.build_model(cfg)
    task.fit(model, train, cfg, epochs=1)
    fp32 = export_onnx(model, task.example_input(cfg), tmp / "fp32.onnx")
    prepared = prepare(fp32, tmp / "prepared.onnx")
    batches = [tuple(b) for b in task.calibration_batches(train, cfg)]
    return {
        "task": task,
        "cfg": cfg,
        "model": model,
        "train": train,
        "test": test,
        "tmp": tmp,
        "fp32": fp32,
        "prepared": prepared,
        "batches": batches,
    }


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_int8_quantizes_every_conv_and_bounds_the_error(trained, method):
    out = quantize_static_int8(
        trained["prepared"], trained["tmp"] / f"int8_{method}.onnx", trained["batches"], method=method
    )
    summary = quantization_summary(out)
    n_weighted = len(weighted_nodes(trained["prepared"]))
    assert n_weighted >= 4
    assert summary["int8_initializers"] >= n_weighted  # every conv/gemm weight is stored as int8
    assert summary["quantize_linear"] > 0 and summary["dequantize_linear"] > 0
    assert onnx_size_bytes(out) < onnx_size_bytes(trained["fp32"])
    reference = _first_outputs(trained["fp32"], trained["batches"])
    err = relative_error(reference, _first_outputs(out, trained["batches"]))
    assert 0 < err < 0.05, f"{method}: relative output error {err:.3g}"


def test_dynamic_int8_quantizes_matmul_parts(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    fp32 = export_onnx(model, (torch.randn(2, 32),), tmp_path / "mlp.onnx")
    out = quantize_dynamic_int8(prepare(fp32, tmp_path / "prep.onnx"), tmp_path / "dyn.onnx")
    assert quantization_summary(out)["integer_ops"] >= 2
    x = torch.randn(16, 32)
    expected = model(x).detach().numpy()
    got = run_session(session(out), [x])[0]
    assert got.shape == expected.shape
    assert ((got - expected) ** 2).sum() / (expected**2).sum() < 0.01


def test_sensitivity_ranks_nodes_and_exclusion_meets_the_budget(trained):
    tmp, prepared, batches = trained["tmp"], trained["prepared"], trained["batches"]
    work = tmp / "sens"
    work.mkdir()
    sensitivity = node_sensitivity(prepared, batches, work)
    values = list(sensitivity.values())
    assert len(values) >= 4 and values == sorted(values, reverse=True) and values[0] > 0
    reference = _first_outputs(prepared, batches)

    def fidelity(path):  # 1 - relative output error: a real, measured "metric" of the int8 model
        return 1.0 - relative_error(reference, _first_outputs(path, batches))

    full = quantize_static_int8(prepared, work / "full.onnx", batches)
    full_drop = 1.0 - fidelity(full)
    budget = full_drop / 3
    result = mixed_precision(
        prepared, work / "mixed.onnx", batches, fidelity, 1.0, higher_is_better=True, max_drop=budget, workdir=work
    )
    assert result.within_budget and result.drop <= budget
    assert result.kept_fp32_nodes, "a tighter budget than full INT8 achieves must keep some nodes fp32"
    assert result.full_path is not None and result.full_path.exists()  # the fully int8 model stays a candidate
    assert result.kept_fp32_nodes == list(result.sensitivity)[: len(result.kept_fp32_nodes)]
    kept_in_graph = set(result.kept_fp32_nodes)
    import onnx

    graph = onnx.load(str(result.path)).graph
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.name in kept_in_graph and node.op_type == "Conv":
            assert node.input[1] not in quantized_inputs, f"{node.name} should have kept fp32 weights"


@pytest.mark.slow
def test_auto_keeps_int8_only_when_measured_faster(trained):
    task, cfg, model = trained["task"], trained["cfg"], trained["model"]
    common = dict(max_drop=1.0, dynamic_int8=False)
    never = compress_model(
        task,
        model,
        cfg,
        trained["train"],
        trained["test"],
        trained["tmp"] / "a",
        CompressOptions(int8="auto", min_speedup=1e6, **common),
    )
    assert never.report["chosen"] == "ort_fp32" and "not" in never.report["int8"]["reason"]
    assert never.report["latency_ms"]["ort_int8"] > 0 and never.report["size_bytes"]["int8"] > 0
    always = compress_model(
        task,
        model,
        cfg,
        trained["train"],
        trained["test"],
        trained["tmp"] / "b",
        CompressOptions(int8="auto", min_speedup=1e-6, **common),
    )
    assert always.report["chosen"] == "ort_int8" and always.chosen_onnx == always.int8_onnx


def test_ort_module_scores_like_the_torch_model(trained):
    task, cfg, model = trained["task"], trained["cfg"], trained["model"]
    wrapper = OrtModule.like(trained["fp32"], model, task.example_input(cfg))
    torch_metrics = task.evaluate(model, trained["test"], cfg)
    ort_metrics = task.evaluate(wrapper, trained["test"], cfg)
    assert ort_metrics["auroc"] == pytest.approx(torch_metrics["auroc"], abs=1e-6)


def test_compaction_keeps_the_numbers_and_sheds_graph_bytes(trained):
    import numpy as np

    from common.compress.compact import compact_onnx, size_breakdown

    tmp = trained["tmp"]
    int8 = quantize_static_int8(trained["prepared"], tmp / "int8_for_compact.onnx", trained["batches"])
    for path in (trained["fp32"], int8):
        small = compact_onnx(path, tmp / f"compact_{path.name}")
        assert onnx_size_bytes(small) < onnx_size_bytes(path)
        for batch in trained["batches"][:2]:
            a, b = run_session(session(path), batch), run_session(session(small), batch)
            assert all(np.array_equal(x, y) for x, y in zip(a, b))  # bit-identical outputs
        parts = size_breakdown(small)
        assert sum(v for k, v in parts.items() if k not in ("nodes", "float_tensors")) == onnx_size_bytes(small)
    parts = size_breakdown(tmp / f"compact_{int8.name}")
    assert parts["int8"] > 0.8 * sum(p.numel() for p in trained["model"].parameters() if p.dim() > 1)


def test_compaction_drops_the_exporters_graph_signature(trained):
    """The dynamo exporter writes torch.export's signature (a line per parameter) into the graph's
    metadata; ONNX Runtime never reads it, and on small models it is several % of the file."""
    import onnx

    from common.compress.compact import compact_onnx

    tmp = trained["tmp"]
    before = onnx.load(str(trained["fp32"]))
    signature = sum(len(p.key) + len(p.value) for p in before.graph.metadata_props)
    assert signature > 500  # one line per parameter and buffer of the 2D reference CNN
    small = compact_onnx(trained["fp32"], tmp / "compact_signature.onnx")
    after = onnx.load(str(small))
    assert not after.graph.metadata_props
    assert not any(v.metadata_props for v in (*after.graph.input, *after.graph.output))
    assert [v.name for v in after.graph.input] == [v.name for v in before.graph.input]


def test_paired_timing_keeps_each_callable_its_own_median():
    """Calls alternate (a, b, a, b, ...) so load hits both alike; each median still belongs to its callable."""
    import time

    from common.compress.latency import paired_median_ms

    calls: list[str] = []

    def fast() -> None:
        calls.append("a")
        time.sleep(0.001)

    def slow() -> None:
        calls.append("b")
        time.sleep(0.006)

    a, b = paired_median_ms([fast, slow], repeats=7, warmup=1)
    assert 0.9 <= a < 4.0 and b >= 5.5 and b > a + 3.0
    assert calls == ["a", "b"] * 8  # one warm-up round, then seven alternating rounds


class _TwoHeads(nn.Module):
    """A map and a score from separate convs on separate inputs: the score's conv feeds only the second output."""

    def __init__(self) -> None:
        super().__init__()
        self.map = nn.Conv2d(3, 4, 3, padding=1)
        self.score = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return self.map(x), self.score(y).mean((1, 2, 3))


def test_sensitivity_counts_every_output(tmp_path):
    """Ranked on the first output alone, a node that only feeds the second (an image score) looked
    harmless, so mixed precision kept the wrong nodes fp32 (the defect model: -6 % image AUROC)."""
    torch.manual_seed(0)
    model = _TwoHeads().eval()
    example = (torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16))
    fp32 = export_onnx(model, example, tmp_path / "two.onnx")
    batches = [(torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)) for _ in range(3)]
    scores = node_sensitivity(fp32, batches, tmp_path)
    convs = [name for name in scores if "conv" in name.lower()]
    assert len(convs) == 2
    assert all(scores[name] > 1e-6 for name in convs)  # the score's conv counts too (first output alone: 0)


def test_weighted_only_int8_quantizes_the_convs_and_nothing_else(trained):
    """The Conv-only candidate: every weighted node int8, the other arithmetic (attention gates, adds) fp32."""
    import onnx

    from common.compress.quantize import nodes_with_weights, quantize_weighted_int8

    prepared, batches = trained["prepared"], trained["batches"]
    weighted = nodes_with_weights(prepared)
    assert len(weighted) >= 4 and set(weighted) <= set(weighted_nodes(prepared))
    out = quantize_weighted_int8(prepared, trained["tmp"] / "conv_only.onnx", batches)
    graph = onnx.load(str(out)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[0] in dequantized and n.input[1] in dequantized for n in convs)

    def quantized_gates(g) -> int:  # sigmoid gate outputs that are quantized (full static INT8 does that)
        gates = {n.output[0] for n in g.node if n.op_type == "Sigmoid"}
        return sum(n.op_type == "QuantizeLinear" and n.input[0] in gates for n in g.node)

    assert quantized_gates(graph) == 0  # the attention gates stay fp32
    full = quantize_static_int8(prepared, trained["tmp"] / "full_for_gates.onnx", batches)
    assert quantized_gates(onnx.load(str(full)).graph) > 0
    assert quantization_summary(out)["int8_initializers"] >= len(weighted)
    reference = _first_outputs(trained["fp32"], batches)
    err = relative_error(reference, _first_outputs(out, batches))
    assert 0 < err < 0.05, f"relative output error {err:.3g}"
