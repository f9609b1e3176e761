"""ONNX export: several inputs, tuple and dict outputs, batch-1 examples, static inputs, sizes, parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from common.export import ParityError, export_onnx, onnx_size_bytes, parity, run_session, session


class TwoInputsTupleOut(nn.Module):
    """Like the fraud model: a sequence and a feature vector in, a score and an embedding out."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Conv1d(4, 8, 3, padding=1)
        self.feat = nn.Linear(5, 8)
        self.head = nn.Linear(16, 1)

    def forward(self, seq: torch.Tensor, feat: torch.Tensor):
        emb = torch.cat([self.seq(seq).mean(-1), torch.relu(self.feat(feat))], dim=1)
        return self.head(emb).squeeze(-1), emb


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return {"logits": y[:, :1], "boxes": y[:, 1:]}


class WithStaticInput(nn.Module):
    """A per-item input plus one without a batch axis (like a graph's edge index or a lookup table)."""

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return x @ table


def test_several_inputs_and_tuple_outputs(tmp_path):
    torch.manual_seed(0)
    model = TwoInputsTupleOut().eval()
    path = export_onnx(model, (torch.randn(2, 4, 16), torch.randn(2, 5)), tmp_path / "m.onnx")
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["input_0", "input_1"]
    assert len(sess.get_outputs()) == 2
    assert parity(model, path, (torch.randn(7, 4, 16), torch.randn(7, 5))) <= 1e-4


def test_dict_outputs_compared_leaf_by_leaf(tmp_path):
    torch.manual_seed(0)
    model = DictOut().eval()
    path = export_onnx(model, (torch.randn(2, 1, 6, 6, 6),), tmp_path / "d.onnx")
    outs = run_session(session(path), (torch.randn(3, 1, 6, 6, 6),))
    assert [o.shape for o in outs] == [(3, 1, 6, 6, 6), (3, 3, 6, 6, 6)]
    assert parity(model, path, (torch.randn(3, 1, 6, 6, 6),)) <= 1e-4


def test_batch_one_example_still_gives_dynamic_batch(tmp_path):
    model = TwoInputsTupleOut().eval()
    path = export_onnx(model, (torch.randn(1, 4, 16), torch.randn(1, 5)), tmp_path / "b1.onnx")
    assert parity(model, path, (torch.randn(4, 4, 16), torch.randn(4, 5))) <= 1e-4
    assert parity(model, path, (torch.randn(1, 4, 16), torch.randn(1, 5))) <= 1e-4


def test_static_input_keeps_its_shape(tmp_path):
    model = WithStaticInput().eval()
    table = torch.randn(6, 3)
    path = export_onnx(model, (torch.randn(2, 6), table), tmp_path / "s.onnx", batch_inputs=[True, False])
    shapes = [i.shape for i in session(path).get_inputs()]
    assert not isinstance(shapes[0][0], int) and shapes[1] == [6, 3]
    assert parity(model, path, (torch.randn(9, 6), table)) <= 1e-4


def test_parity_fails_loudly_on_a_different_model(tmp_path):
    torch.manual_seed(0)
    model = TwoInputsTupleOut().eval()
    path = export_onnx(model, (torch.randn(2, 4, 16), torch.randn(2, 5)), tmp_path / "m.onnx")
    with torch.no_grad():
        model.head.bias += 0.5
    with pytest.raises(ParityError, match="differs from torch"):
        parity(model, path, (torch.randn(3, 4, 16), torch.randn(3, 5)))


def test_size_counts_external_weight_files(tmp_path):
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64)).eval()
    inline = export_onnx(model, (torch.randn(2, 64),), tmp_path / "inline.onnx")
    proto = onnx.load(str(inline))
    external = tmp_path / "external.onnx"
    onnx.save_model(proto, str(external), save_as_external_data=True, location="external.onnx.data", size_threshold=0)
    assert (tmp_path / "external.onnx.data").stat().st_size > 64 * 256 * 4
    assert onnx_size_bytes(external) > external.stat().st_size
    assert abs(onnx_size_bytes(external) - onnx_size_bytes(inline)) < 0.1 * onnx_size_bytes(inline)
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_allclose(run_session(session(external), [x])[0], run_session(session(inline), [x])[0])


def test_relative_tolerance_allows_for_large_outputs(tmp_path):
    model = nn.Linear(4, 1).eval()
    with torch.no_grad():
        model.bias.fill_(1000.0)
    path = export_onnx(model, (torch.randn(2, 4),), tmp_path / "big.onnx")
    with torch.no_grad():
        model.bias += 0.01  # 0.01 off on outputs near 1000
    x = (torch.randn(3, 4),)
    with pytest.raises(ParityError, match="tolerance"):
        parity(model, path, x)
    assert parity(model, path, x, atol=1e-4, rtol=1e-4) == pytest.approx(0.01, rel=0.01)
