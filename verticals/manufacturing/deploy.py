"""The deployment path: ONNX export, static INT8 by measurement, and an ONNX Runtime module.

docs/architecture.md records static INT8 (QDQ, calibrated) 1.4-2.6x faster than fp32 for 2D convs on
this CPU class, but "choose per model by measurement": `prepare_deployment` exports fp32, quantizes
the convolutions with calibration images, times both at the inspection batch size and keeps INT8
only when it is faster AND its image scores stay within `max_score_drift` of fp32 on the same
images. The choice and the timings go into the model directory's metadata.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.export import export_onnx, run_session, session

from .anomalies import synthesize_anomaly
from .config import InspectConfig
from .data import InspectionData, split_holdout, to_tensor

FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"


class OrtModel(nn.Module):
    """An ONNX Runtime session behind the nn.Module call interface (Task.evaluate accepts it)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = session(self.path, threads=threads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = run_session(self.session, [x.detach().cpu().float().numpy()])
        return tuple(torch.from_numpy(o) for o in outputs)


_FIXED_CONVS = ("grain_kernels", "grain_input.")


def quantize_int8(fp32_path: Path, out_path: Path, calibration: list[np.ndarray]) -> Path:
    """Static QDQ INT8 of the Conv nodes (per-channel weights), calibrated on real good images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.items = iter([{name: batch} for batch in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    name = graph.input[0].name
    # the grain stage's fixed ridge filters compare few-percent differences: INT8 would erase them
    # (and so are the grain-residual input's orientation and bar filters)
    fixed = [n.name for n in graph.node if n.op_type == "Conv" and any(k in n.input[1] for k in _FIXED_CONVS)]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantize the raw graph if it fails
            prepared = fp32_path
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=fixed,
        )
    return out_path


def median_latency_ms(model: Any, batch: torch.Tensor, repeats: int = 7) -> float:
    """Median wall time of one forward at `batch` (after one warm-up), in milliseconds."""
    times = []
    with torch.no_grad():
        model(batch)
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def prepare_deployment(
    model: nn.Module,
    cfg: InspectConfig,
    calibration: list[torch.Tensor],
    out_dir: Path,
    *,
    max_score_drift: float = 0.05,
) -> dict[str, Any]:
    """Write model.onnx (and model.int8.onnx when kept) into `out_dir`; return the measured choice."""
    model = model.eval().cpu()
    out_dir.mkdir(parents=True, exist_ok=True)
    example = calibration[0][: cfg.infer_batch]
    fp32_path = export_onnx(model, (example,), out_dir / FP32_NAME)
    fp32 = OrtModel(fp32_path)
    timing_batch = torch.cat(calibration)[: cfg.infer_batch]
    report: dict[str, Any] = {
        "batch": int(timing_batch.shape[0]),
        "latency_ms": {
            "torch": median_latency_ms(model, timing_batch),
            "ort_fp32": median_latency_ms(fp32, timing_batch),
        },
        "chosen": "ort_fp32",
    }
    if cfg.int8 == "off":
        return report
    int8_path = out_dir / INT8_NAME
    try:
        quantize_int8(fp32_path, int8_path, [c.numpy() for c in calibration])
        int8 = OrtModel(int8_path)
    except Exception as exc:  # quantization is an optimisation: record why it was skipped
        report["int8_error"] = f"{type(exc).__name__}: {exc}"
        int8_path.unlink(missing_ok=True)
        return report
    report["latency_ms"]["ort_int8"] = median_latency_ms(int8, timing_batch)
    with torch.no_grad():
        drift = max(float((fp32(c)[1] - int8(c)[1]).abs().max()) for c in calibration)
    report["int8_score_drift"] = drift
    faster = report["latency_ms"]["ort_int8"] < 0.9 * report["latency_ms"]["ort_fp32"]
    if cfg.int8 == "on" or (faster and drift <= max_score_drift):
        report["chosen"] = "ort_int8"
    else:
        int8_path.unlink(missing_ok=True)
    return report


def load_backend(model_dir: Path, torch_model: nn.Module, cfg: InspectConfig, backend: str, workdir: Path):
    """(module, name) for `backend` in {auto, torch, ort_fp32, ort_int8}.

    auto takes what training measured as fastest; a model directory without ONNX files (for example
    a federated global model) is exported on the fly into `workdir`, never into the model directory.
    """
    fp32_path, int8_path = model_dir / FP32_NAME, model_dir / INT8_NAME
    if backend == "torch":
        return torch_model.eval(), "torch"
    if backend == "auto":
        backend = "ort_int8" if int8_path.is_file() else "ort_fp32"
    if backend == "ort_int8":
        if not int8_path.is_file():
            from common.errors import UserError

            raise UserError(f"{model_dir}: no {INT8_NAME} (INT8 was not faster when measured at training)")
        return OrtModel(int8_path), "ort_int8"
    if not fp32_path.is_file():
        example = torch.rand(1, 3, cfg.image_size, cfg.image_size)
        fp32_path = export_onnx(torch_model.eval().cpu(), (example,), workdir / FP32_NAME)
    return OrtModel(fp32_path), "ort_fp32"


def calibration_images(data: InspectionData, cfg: InspectConfig, seed: int, n: int = 8) -> list[torch.Tensor]:
    """The first `n` parts of `data` and the same parts with synthetic anomalies, for INT8 calibration.

    Calibrating on good parts alone sets the output's quantization range to "no defect" and clips
    every defect logit at that range's top (measured: all NG scores stuck at 0.50); the range must
    include defects, so half the calibration images carry one.
    """
    rng = np.random.default_rng([seed, 17])
    good = data.images[:n]
    bad = [synthesize_anomaly(img.astype(np.float32) / 255.0, rng)[0] for img in good]
    bad_u8 = np.clip(np.stack(bad) * 255 + 0.5, 0, 255).astype(np.uint8)
    mixed = np.concatenate([good, bad_u8])
    return [to_tensor(mixed[i : i + cfg.infer_batch]) for i in range(0, len(mixed), cfg.infer_batch)]


def calibration_set(data: InspectionData, cfg: InspectConfig) -> list[torch.Tensor]:
    """The INT8 calibration images of a training set: its held-out good parts (all of it when too
    small to hold any out), half of them with a synthetic anomaly, seeded by `cfg.seed`.

    One definition for `train` (deployment) and `TASK.calibration_batches` (`fedsite compress`), so
    both quantize a model alike.
    """
    _, holdout = split_holdout(data, cfg.holdout)
    return calibration_images(holdout if holdout is not None else data, cfg, cfg.seed)
