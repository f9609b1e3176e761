"""The Python API behind every `fedsite dicom ...` / `fedsite medical ...` command (the demo calls these).

Each function does the whole job of one command and returns plain data; the CLI only parses options,
calls one of these and maps the outcome to exit codes. Outputs are written atomically.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from common.progress import log, track
from data_adapters.synth.ct_phantom import synth_dataset
from verticals.medical.config import MedicalConfig
from verticals.medical.evaluate import evaluate_candidates

CANDIDATE_HEADER = ["seriesuid", "coordX", "coordY", "coordZ", "probability", "diameter_mm"]
MASS_HEADER = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "volume_ml", "mean_hu"]
MASS_FIELDS = ("diameter_mm", "volume_ml", "mean_hu", "wall_contact")

__all__ = [
    "deidentify_directory",
    "detect_directory",
    "evaluate_candidates",
    "inspect_directory",
    "synth_dataset",
    "train_model",
]


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    return path


def inspect_directory(root: str | Path, *, gap_policy: str = "reject", volumes: bool = False) -> dict[str, Any]:
    """{"series": [record, ...], "skipped": [{"path", "reason"}, ...]} for every series under `root`.

    With `volumes`, volume files (MetaImage, NIfTI, NRRD) are listed too, in the same record shape.
    """
    from data_adapters import dicom
    from data_adapters import volumes as volume_files

    reader = volume_files.read_volumes if volumes else dicom.read_series
    series, skipped = reader(_require_dir(root, "folder"), gap_policy=gap_policy, load=False)
    records = []
    for s in track(series, "inspecting series"):
        if s.status == "ok":
            volume_files.load_volume(s)
        records.append(s.record())
        s.hu = None
    return {"series": records, "skipped": skipped}


def deidentify_directory(
    in_dir: str | Path, out_dir: str | Path, *, secret_file: str | Path | None = None
) -> dict[str, Any]:
    """Copy every DICOM file under `in_dir` into `out_dir` with the PS3.15 basic profile applied.

    UIDs are keyed hashes under the site secret (`secret_file`, default ~/.config/fedsite/deid-secret);
    the crosswalk and the audit are written beside `out_dir` (data_adapters/deid_folder.py).
    """
    from data_adapters.deid_folder import deidentify_tree

    return deidentify_tree(_require_dir(in_dir, "input folder"), out_dir, secret_file=secret_file)


def train_model(
    data: str | Path,
    annotations: str | Path,
    out: str | Path,
    cfg: MedicalConfig | None = None,
    *,
    seed: int = 0,
    export: bool = True,
) -> dict[str, Any]:
    """Train the detector on every series under `data` and write a model directory (with model.onnx) at `out`."""
    import torch

    from common import runs
    from common.device import seed_everything, set_threads
    from common.export import export_onnx
    from verticals.medical.data import MedicalData
    from verticals.medical.preprocess import load_cases
    from verticals.medical.task import TASK

    cfg = cfg or MedicalConfig()
    set_threads(None)
    seed_everything(seed)
    data = _require_dir(data, "data folder")
    cases, rejected, skipped = load_cases(data, annotations, cfg, "all")
    if not cases:
        raise UserError(f"{data}: no usable CT series found ({len(rejected)} rejected, {len(skipped)} files skipped)")
    if not any(len(c.diameters) for c in cases):
        raise UserError(f"{annotations}: no annotated nodule matches a series under {data}")
    log(f"medical: training on {len(cases)} series, {sum(len(c.diameters) for c in cases)} nodules")
    model = TASK.build_model(cfg)
    start = time.perf_counter()
    metrics = TASK.fit(model, MedicalData(cases, rejected, skipped), cfg)
    metrics["train_seconds"] = time.perf_counter() - start
    extra_files = {}
    if export:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model.cpu().eval(), TASK.example_input(cfg), Path(tmp) / "model.onnx")
            extra_files["model.onnx"] = onnx_path.read_bytes()
    with torch.no_grad():
        runs.save_model(
            out,
            "medical",
            model,
            cfg,
            metrics=metrics,
            seed=seed,
            data_fingerprint=runs.fingerprint(data),
            extra={"n_series": len(cases), "rejected_series": rejected, "skipped_files": skipped},
            extra_files=extra_files,
        )
    return {"out": str(out), "metrics": metrics, "rejected": rejected, "skipped": skipped}


SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"


def shipped_model() -> Path:
    """The pretrained model directory shipped with the package (weights/MODEL_CARD.md says how it was built)."""
    if not (SHIPPED_WEIGHTS / "model.pt").exists():
        raise UserError(f"{SHIPPED_WEIGHTS}: no shipped weights in this installation; pass --model MODEL_DIR")
    return SHIPPED_WEIGHTS


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name


def _runner_for(loaded, cfg, use_onnx: bool, tmp: Path):
    """ONNX Runtime on the model's exported graph (exported now if missing), torch when asked or on failure."""
    from verticals.medical.infer import onnx_runner, torch_runner

    if use_onnx:
        try:
            onnx_path = loaded.path / "model.onnx"
            if not onnx_path.exists():
                from common.export import export_onnx
                from verticals.medical.task import TASK

                onnx_path = export_onnx(loaded.model, TASK.example_input(cfg), tmp / "model.onnx")
            return onnx_runner(onnx_path), "onnxruntime"
        except Exception as exc:  # keep detecting with torch, and say so in the report
            log(f"medical: ONNX Runtime unavailable ({type(exc).__name__}); using torch")
    return torch_runner(loaded.model), "torch"


def detect_directory(
    data: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    use_onnx: bool = True,
    overlays: int = 3,
    gap_policy: str = "reject",
) -> dict[str, Any]:
    """Detect nodules in every CT series and volume file under `data`; writes candidates.csv, report.json, overlays/."""
    from common import atomic, runs
    from common.device import set_threads
    from data_adapters import volumes
    from verticals.medical.infer import fp_params

    data = _require_dir(data, "data folder").resolve()
    out_path = Path(out_dir).resolve()
    if out_path == data or data in out_path.parents:
        raise UserError(f"{out_dir}: output must not be inside the input folder {data}")
    set_threads(None)
    loaded = runs.load_model(model_dir, expect="medical")
    cfg = loaded.cfg
    series_list, skipped = volumes.read_volumes(data, gap_policy=gap_policy, load=False)
    rows, mass_rows, records = [], [], []
    with tempfile.TemporaryDirectory() as scratch, atomic.atomic_dir(out_path) as tmp:
        runner, runner_name = _runner_for(loaded, cfg, use_onnx, Path(scratch))
        fp = fp_params(loaded.model)
        for series in track(series_list, "detecting"):
            record = {"seriesuid": series.seriesuid, "status": series.status, "reasons": list(series.reasons)}
            if series.status == "ok":
                try:
                    record.update(_detect_one(series, runner, cfg, fp, tmp, overlays, rows, mass_rows))
                except Exception as exc:  # one series' failure never costs the others their results
                    series.reject(f"could not be processed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
                series.hu = None
                record["status"], record["reasons"] = series.status, list(series.reasons)
            records.append(record)
        atomic.write_csv(tmp / "candidates.csv", CANDIDATE_HEADER, rows)
        atomic.write_csv(tmp / "masses.csv", MASS_HEADER, mass_rows)
        report = {
            "model": str(model_dir),
            "runner": runner_name,
            "series": records,
            # paths relative to the input folder: the report may be shared, the site's folder layout need not be
            "skipped": [{**item, "path": _relative(item["path"], data)} for item in skipped],
            "n_candidates": len(rows),
            "n_masses": len(mass_rows),
        }
        runs.write_json(tmp / "report.json", report)
    return report


def _detect_one(series, runner, cfg, fp, tmp: Path, overlays: int, rows: list, mass_rows: list) -> dict[str, Any]:
    """Read, preprocess and detect one QC-passed series; append its candidate and mass rows; return its record."""
    from data_adapters import dicom, volumes
    from verticals.medical.infer import detect_case
    from verticals.medical.overlays import write_mask_overlay, write_overlays
    from verticals.medical.preprocess import case_from_series

    t0 = time.perf_counter()
    volumes.load_volume(series)
    t1 = time.perf_counter()
    if series.status != "ok":
        return {}
    case = case_from_series(series, cfg, keep_hu=True)
    t2 = time.perf_counter()
    found = detect_case(case, runner, cfg, fp)
    src_vox = dicom.world_to_voxel(series, found["xyz"]) if len(found["xyz"]) else np.zeros((0, 3))
    pngs = write_overlays(
        tmp / "overlays" / series.seriesuid, series.hu, series.spacing_zyx, src_vox,
        found["diameter_mm"], found["probability"], overlays,
    )  # fmt: skip
    if overlays and found["anatomy"] is not None:
        mask = found["anatomy"]
        pngs.append(write_mask_overlay(
            tmp / "overlays" / series.seriesuid / "lung_mask.png",
            case.image * np.float32(cfg.hu_max - cfg.hu_min) + np.float32(cfg.hu_min),
            mask.region, mask.lungs, found["zyx"], found["probability"], [m["zyx"] for m in found["masses"]],
        ))  # fmt: skip
    masses = [
        {"xyz": [round(float(v), 3) for v in m["xyz"]], **{k: round(float(m[k]), 3) for k in MASS_FIELDS}}
        for m in found["masses"]
    ]
    new_rows = [
        [series.seriesuid, *(f"{v:.3f}" for v in xyz), f"{p:.6f}", f"{d:.2f}"]
        for xyz, p, d in zip(found["xyz"], found["probability"], found["diameter_mm"])
    ]
    rows.extend(new_rows)  # only once the whole series succeeded
    mass_rows.extend(
        [series.seriesuid, *(f"{v:.3f}" for v in m["xyz"]), *(f"{m[k]:.1f}" for k in MASS_HEADER[4:])] for m in masses
    )
    return {
        "shape_zyx": list(series.hu.shape),
        "spacing_zyx": [float(v) for v in series.spacing_zyx],
        "n_candidates": len(new_rows),
        "lung_mask": found["lung_mask"],
        "masses": masses,
        "overlays": [str(Path(p).relative_to(tmp)) for p in pngs],
        "timings": {
            "read_s": t1 - t0,
            "preprocess_s": t2 - t1,
            "network_s": found["seconds_network"],
            "postprocess_s": found["seconds_postprocess"],
            "total_s": time.perf_counter() - t0,
        },
    }


LIDC_HEADER = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "n_readers"]


def lidc_annotations(
    xml_dir: str | Path,
    data: str | Path,
    out_csv: str | Path,
    *,
    excluded_csv: str | Path | None = None,
    min_readers: int = 3,
) -> dict[str, Any]:
    """LIDC-IDRI reader XML under `xml_dir` -> LUNA16 annotations.csv (and annotations_excluded.csv).

    The series the XML files refer to are read under `data` for their geometry (pixel -> world).
    XML files that cannot be used (not a CT read, series not under `data`, malformed) are listed
    under "skipped" with a reason; the others are written.
    """
    from common import atomic
    from data_adapters import dicom, lidc

    xml_dir, data = _require_dir(xml_dir, "XML folder"), _require_dir(data, "DICOM folder")
    candidates = [xml_dir] if xml_dir.is_file() else xml_dir.rglob("*")
    xml_files = sorted(p for p in candidates if p.suffix.lower() == ".xml")
    if not xml_files:
        raise UserError(f"{xml_dir}: no .xml file found")
    series_list, _ = dicom.read_series(data, load=False)
    by_uid = {s.seriesuid: s for s in series_list}
    marks: dict[str, list] = {}
    skipped = []
    for path in track(xml_files, "reading LIDC XML"):
        try:
            uid, findings = lidc.parse_xml(path)
            series = by_uid.get(uid)
            if series is None:
                raise ValueError(f"series {uid} is not under {data}")
            if series.status != "ok":
                raise ValueError(f"series {uid} was rejected: {'; '.join(series.reasons)}")
            locator = lidc.SliceLocator(series)
            marks.setdefault(uid, []).extend(lidc.to_mark(f, locator) for f in findings)
        except ValueError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
    rows, excluded_rows = [], []
    for uid in sorted(marks):
        included, excluded = lidc.consensus(marks[uid], min_readers)
        for table, items in ((rows, included), (excluded_rows, excluded)):
            for xyz, diameter, readers in items:
                table.append([uid, *(f"{v:.3f}" for v in xyz), f"{diameter:.2f}", readers])
    atomic.write_csv(Path(out_csv), LIDC_HEADER, rows)
    if excluded_csv is not None:
        atomic.write_csv(Path(excluded_csv), LIDC_HEADER, excluded_rows)
    return {
        "series": len(marks),
        "nodules": len(rows),
        "excluded": len(excluded_rows),
        "out": str(out_csv),
        "excluded_out": str(excluded_csv) if excluded_csv is not None else None,
        "skipped": skipped,
    }
