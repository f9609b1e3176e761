"""Batch and streaming inspection: images, folders and video through ONNX Runtime to verdicts on disk.

`Inspector` turns RGB images of any size into Verdicts (resize -> model -> OpenCV post-processing
at the image's own size). `inspect` runs it over a file, a folder tree or a video and writes the
contract's outputs: results.csv, defects.csv, annotated/<relative path>.png, plus contact_sheet.png
and summary.json (backend, throughput, rejected inputs). The output folder appears complete or not
at all. Corrupt or unsupported inputs are listed and the rest is inspected; the caller turns a
non-empty rejection list into exit code 3.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from common import atomic, runs
from common.errors import UserError
from common.progress import log, track
from data_adapters.images import InputItem, iter_inputs

from .annotate import annotate, contact_sheet, legend, thumbnail
from .config import InspectConfig
from .data import resize_rgb, to_tensor
from .deploy import load_backend
from .postprocess import Verdict, decide, display_score
from .roi import locate_part, shift_verdict

# anomaly_score: postprocess.display_score (0.5 at the threshold); raw_score: the model's own score
RESULT_HEADER = ["image", "anomaly_score", "is_defective", "num_defects", "status", "reason", "raw_score"]
DEFECT_HEADER = ["image", "x", "y", "w", "h", "area_px", "score"]


class Inspector:
    """A model (torch or ONNX Runtime) plus the post-processing: images in, verdicts out."""

    def __init__(self, module: Any, cfg: InspectConfig, backend: str = "torch") -> None:
        self.module = module
        self.cfg = cfg
        self.backend = backend
        self.model_seconds = 0.0
        self.thresholds = (0.5, 0.5)

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[Verdict]:
        """Verdicts for uint8 RGB images of any sizes (boxes in each image's own pixels)."""
        if not images:
            return []
        cfg = self.cfg
        rois = [locate_part(img, cfg.roi_margin, cfg.roi_min_area_frac) if cfg.roi else None for img in images]
        crops = [roi.crop(img) if roi is not None else img for roi, img in zip(rois, images)]
        batch = to_tensor(np.stack([resize_rgb(img, cfg.image_size) for img in crops]))
        start = time.perf_counter()
        logits, scores, thresholds = self.module(batch)
        self.model_seconds += time.perf_counter() - start
        self.thresholds = (float(thresholds[0, 0]), float(thresholds[0, 1]))
        logits_np, scores_np = logits[:, 0].float().numpy(), scores.float().numpy()
        verdicts = []
        for i, (roi, crop, img) in enumerate(zip(rois, crops, images)):
            verdict = decide(logits_np[i], float(scores_np[i]), self.thresholds, cfg, image_shape=crop.shape[:2])
            verdicts.append(shift_verdict(verdict, roi, img.shape[:2]) if roi is not None else verdict)
        return verdicts


def open_inspector(model_dir: str | Path, backend: str = "auto", workdir: Path | None = None) -> Inspector:
    """An Inspector for a trained model directory (backend: auto, torch, ort_fp32, ort_int8)."""
    loaded = runs.load_model(model_dir, expect="manufacturing")
    work = workdir or Path(tempfile.mkdtemp(prefix="fedsite-mfg-"))
    module, name = load_backend(Path(model_dir), loaded.model, loaded.cfg, backend, work)
    return Inspector(module, loaded.cfg, name)


def _chunks(items: Iterable[InputItem], size: int) -> Iterator[list[InputItem]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _annotated_name(name: str) -> str:
    path = Path(name)
    return (path.with_suffix(".png") if path.suffix else path.with_name(path.name + ".png")).as_posix()


def _write_png(path: Path, image_bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image_bgr):
        raise OSError(f"{path}: could not write PNG")


def inspect(
    source: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    backend: str = "auto",
    video_every: int = 1,
    write_annotated: bool = True,
    sheet_limit: int = 48,
) -> dict[str, Any]:
    """Inspect `source` (image, folder or video) and write the outputs to `out_dir`; return the summary."""
    if not Path(source).exists():
        raise UserError(f"{source}: no such file or folder")
    src, dst = Path(source).resolve(), Path(out_dir).resolve()
    if dst == src or (src.is_dir() and src in dst.parents):
        raise UserError(f"--out {out_dir}: must not be INPUT or inside it (inputs are never overwritten or re-read)")
    with tempfile.TemporaryDirectory(prefix="fedsite-mfg-") as work:
        inspector = open_inspector(model_dir, backend, Path(work))
        cfg = inspector.cfg
        results: list[list[Any]] = []
        defect_rows: list[list[Any]] = []
        rejected: list[dict[str, str]] = []
        tiles: list[tuple[bool, float, str, np.ndarray]] = []
        inspected = defective = 0
        start = time.perf_counter()
        with atomic.atomic_dir(out_dir) as tmp:
            items = track(iter_inputs(source, video_every), "manufacturing: inspecting")
            for chunk in _chunks(items, cfg.infer_batch):
                good = [item for item in chunk if item.ok]
                verdicts = dict(zip((id(i) for i in good), inspector([i.image for i in good])))
                for item in chunk:
                    if not item.ok:
                        results.append([item.name, "", "", "", "rejected", item.reason, ""])
                        rejected.append({"image": item.name, "reason": item.reason or "unreadable"})
                        continue
                    verdict = verdicts[id(item)]
                    inspected += 1
                    defective += verdict.is_defective
                    results.append(
                        [
                            item.name,
                            f"{display_score(verdict.anomaly_score, inspector.thresholds[0]):.6f}",
                            int(verdict.is_defective),
                            len(verdict.defects),
                            "ok",
                            "",
                            f"{verdict.anomaly_score:.6f}",
                        ]
                    )
                    for d in verdict.defects:
                        defect_rows.append([item.name, d.x, d.y, d.w, d.h, d.area_px, f"{d.score:.6f}"])
                    if write_annotated:
                        drawn = annotate(item.image, verdict, inspector.thresholds[0])
                        _write_png(tmp / "annotated" / _annotated_name(item.name), drawn)
                        if len(tiles) < 4 * sheet_limit:
                            tiles.append((verdict.is_defective, verdict.anomaly_score, item.name, thumbnail(drawn)))
            seconds = time.perf_counter() - start
            atomic.write_csv(tmp / "results.csv", RESULT_HEADER, results)
            atomic.write_csv(tmp / "defects.csv", DEFECT_HEADER, defect_rows)
            tiles.sort(key=lambda t: (not t[0], -t[1]))  # NG first, most anomalous first
            key = legend(inspector.thresholds[0])
            sheet = contact_sheet([(name, tile) for _, _, name, tile in tiles[:sheet_limit]], key=key)
            _write_png(tmp / "contact_sheet.png", sheet)
            summary = {
                "backend": inspector.backend,
                "images": inspected,
                "defective": defective,
                "rejected": rejected,
                "seconds": seconds,
                "images_per_s": inspected / seconds if seconds > 0 else 0.0,
                "model_images_per_s": inspected / inspector.model_seconds if inspector.model_seconds > 0 else 0.0,
                "image_threshold": inspector.thresholds[0],
            }
            runs.write_json(tmp / "summary.json", summary)
    log(
        f"manufacturing: {inspected} images ({defective} NG, {len(rejected)} rejected) via {summary['backend']}: "
        f"{summary['images_per_s']:.1f} images/s end to end, {summary['model_images_per_s']:.1f} images/s model"
    )
    return summary
