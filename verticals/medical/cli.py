"""`fedsite dicom ...` and `fedsite medical ...`: parse options, call verticals.medical.api, map outcomes.

Heavy imports (torch, pydicom, MONAI) happen inside the commands so `fedsite --help` stays fast.
Exit codes: UserError -> 2, PartialSuccess (raised after every output is written) -> 3.
"""

from __future__ import annotations

from pathlib import Path

import typer

from common.cli import QUICK_SYNTH_HELP, QUICK_TRAIN_HELP
from common.errors import PartialSuccess, UserError
from common.strict_json import to_json

app = typer.Typer(no_args_is_help=True, help="CT lung-nodule detection: synth, train, detect, evaluate.")
dicom_app = typer.Typer(no_args_is_help=True, help="DICOM series: inspect geometry and QC, de-identify.")

GAP_POLICY = typer.Option(
    "reject", "--gaps", help="Series with gaps/uneven spacing: 'reject' or 'split' (keep the longest run)."
)

MAX_SKIPPED = typer.Option(
    10, "--max-skipped", min=0, help="Skipped files listed by name in the table (the rest are counted)."
)


def _check_gap_policy(value: str) -> str:
    if value not in ("reject", "split"):
        raise UserError(f"--gaps {value!r}: expected 'reject' or 'split'")
    return value


@dicom_app.command("inspect")
def inspect(
    directory: Path = typer.Argument(..., help="Folder to search for DICOM series (any nesting, any file names)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON report instead of a table."),
    gaps: str = GAP_POLICY,
    max_skipped: int = MAX_SKIPPED,
) -> None:
    """List every DICOM series under DIRECTORY: folder, geometry, HU range, QC status (exit 3 if any rejected).

    Hidden folders and files (.git, .venv, dotfiles) are not searched.
    """
    _inspect(directory, as_json, gaps, max_skipped, volumes=False)


@app.command("inspect")
def inspect_volumes(
    directory: Path = typer.Argument(
        ..., help="Folder of volumes (.mhd/.raw, .mha, .nii, .nii.gz, .nrrd, .nhdr) and/or DICOM series."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON report instead of a table."),
    gaps: str = GAP_POLICY,
    max_skipped: int = MAX_SKIPPED,
) -> None:
    """List every volume file and DICOM series under DIRECTORY, as `fedsite dicom inspect` does (exit 3 on rejects)."""
    _inspect(directory, as_json, gaps, max_skipped, volumes=True)


def _inspect(directory: Path, as_json: bool, gaps: str, max_skipped: int, *, volumes: bool) -> None:
    from verticals.medical.api import inspect_directory
    from verticals.medical.inspect_table import render

    report = inspect_directory(directory, gap_policy=_check_gap_policy(gaps), volumes=volumes)
    if as_json:
        print(to_json(report))
    else:
        what = "Volumes and DICOM series" if volumes else "DICOM series"
        print(render(report, directory, max_skipped=max_skipped, what=what))
    if not report["series"]:
        what = "volume file or DICOM series" if volumes else "DICOM series"
        raise UserError(f"{directory}: no {what} found ({len(report['skipped'])} file(s) skipped)")
    bad = sum(r["status"] != "ok" for r in report["series"]) + len(report["skipped"])
    if bad:
        raise PartialSuccess(f"{bad} series/files rejected or skipped (listed in the report)", rejected=bad)


@dicom_app.command("deidentify")
def deidentify(
    in_dir: Path = typer.Argument(..., help="Folder of DICOM files (never modified)."),
    out_dir: Path = typer.Argument(..., help="Where the de-identified copies go (same relative paths)."),
    secret_file: Path | None = typer.Option(
        None,
        "--secret-file",
        help="The site secret that keys the new UIDs (same secret, same UIDs). "
        "Default: ~/.config/fedsite/deid-secret, created on first use.",
    ),
) -> None:
    """Copy every DICOM file with the PS3.15 Basic Application Level Confidentiality Profile applied.

    Writes OUT_DIR.crosswalk.csv (old -> new UIDs; keep it at the site) and OUT_DIR.audit.csv (one
    line per file) beside OUT_DIR; annotations.csv/candidates CSVs are copied with the new UIDs.
    Exit 3 when a DICOM file could not be copied; other files are listed, not counted as failures.
    """
    from verticals.medical.api import deidentify_directory

    result = deidentify_directory(in_dir, out_dir, secret_file=secret_file)
    print(to_json(result))
    if result["failed"]:
        raise PartialSuccess(
            f"{len(result['failed'])} DICOM file(s) not copied (listed above and in {result['audit']})",
            rejected=len(result["failed"]),
        )


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder for the DICOM series and annotations.csv."),
    scans: int | None = typer.Option(
        None, "--scans", min=1, help="Number of series to write [default: 16; 6 with --quick]."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same phantoms)."),
    scale: str | None = typer.Option(
        None, "--scale", help="tiny | small | full (full: ~192x192x72 voxels) [default: full; small with --quick]."
    ),
    site: int = typer.Option(0, "--site", min=0, help="Site index: changes scanner and nodule prevalence."),
    n_sites: int = typer.Option(1, "--sites", min=1, help="Number of sites the index refers to."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_SYNTH_HELP),
    variety: float = typer.Option(
        0.0,
        "--variety",
        min=0.0,
        max=1.0,
        help="Fraction of scans with ribs, hilar vessels, fissures, 1-5 mm slices, kernels (ct_variety.py).",
    ),
) -> None:
    """Write synthetic chest-CT DICOM series with nodules, and annotations.csv (LUNA16 format)."""
    from verticals.medical.api import synth_dataset

    scale = scale or ("small" if quick else "full")
    scans = scans or (6 if quick else 16)

    if scale not in ("tiny", "small", "full"):
        raise UserError(f"--scale {scale!r}: expected tiny, small or full")
    path = synth_dataset(out, scans, seed=seed, site=site, n_sites=n_sites, scale=scale, variety=variety)
    print(f"wrote {scans} series and {path / 'annotations.csv'}")


@app.command("train")
def train(
    data: Path = typer.Option(..., "--data", help="Folder of DICOM series and/or volume files (.mhd, .nii.gz, ...)."),
    annotations: Path = typer.Option(
        ..., "--annotations", help="annotations.csv (seriesuid,coordX,coordY,coordZ,diameter_mm)."
    ),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML file overriding the defaults ([medical] table or top level)."
    ),
    sets: list[str] = typer.Option([], "--set", help="key=value config override (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_TRAIN_HELP),
) -> None:
    """Train the nodule detector (and its false-positive reduction stage); writes model.onnx too.

    --quick trains the small preset (5 mm grid, 32^3 windows), sized for `synth --quick` data."""
    from common.config import resolve
    from verticals.medical.api import train_model
    from verticals.medical.config import PRESETS, MedicalConfig

    cfg = resolve(MedicalConfig, config, sets, section="medical", base=PRESETS["small" if quick else "default"])
    result = train_model(data, annotations, out, cfg, seed=seed)
    print(to_json({"out": result["out"], "metrics": result["metrics"]}))
    bad = len(result["rejected"]) + len(result["skipped"])
    if bad:
        raise PartialSuccess(f"{bad} series/files rejected or skipped (listed in {out}/metadata.json)", rejected=bad)


@app.command("detect")
def detect(
    data: Path = typer.Argument(..., help="Folder of DICOM series and/or volume files (.mhd, .nii.gz, .nrrd...)."),
    model: Path | None = typer.Option(
        None, "--model", help="Model directory from `fedsite medical train` (default: the shipped weights)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder: candidates.csv, masses.csv, report.json, overlays/."),
    overlays: int = typer.Option(3, "--overlays", min=0, help="Overlay PNGs per series (top candidates)."),
    runtime: str = typer.Option("onnx", "--runtime", help="onnx (ONNX Runtime, default) or torch."),
    gaps: str = GAP_POLICY,
) -> None:
    """Detect nodule candidates (and masses > 30 mm) in every CT series under DATA (exit 3 when some were rejected)."""
    from verticals.medical.api import detect_directory, shipped_model

    model = model if model is not None else shipped_model()
    if runtime not in ("onnx", "torch"):
        raise UserError(f"--runtime {runtime!r}: expected onnx or torch")
    report = detect_directory(
        data, model, out, use_onnx=runtime == "onnx", overlays=overlays, gap_policy=_check_gap_policy(gaps)
    )
    done = [s for s in report["series"] if s["status"] == "ok"]
    print(f"{len(done)} series processed, {report['n_candidates']} candidates -> {out / 'candidates.csv'}")
    bad = len(report["series"]) - len(done) + len(report["skipped"])
    if bad:
        raise PartialSuccess(f"{bad} series/files rejected or skipped (listed in {out / 'report.json'})", rejected=bad)
    if not report["series"]:
        raise UserError(f"{data}: no DICOM series found")


@app.command("evaluate")
def evaluate(
    candidates: Path = typer.Option(..., "--candidates", help="candidates.csv (LUNA16 submission format)."),
    annotations: Path = typer.Option(..., "--annotations", help="annotations.csv (LUNA16 format)."),
    out: Path | None = typer.Option(None, "--out", help="Folder for froc.png and froc.json."),
    excluded: Path | None = typer.Option(
        None,
        "--excluded",
        help="LUNA16 annotations_excluded.csv: candidates hitting these findings count neither as TP nor FP.",
    ),
    scans: Path | None = typer.Option(
        None, "--scans", help="LUNA16 seriesuids.csv: score exactly these scans (default: those named in the CSVs)."
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the CPM 95% interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Score candidates by the LUNA16 protocol: prints CPM, FROC at 1/8..8 FP/scan, counts."""
    from verticals.medical.api import evaluate_candidates

    result = evaluate_candidates(
        candidates, annotations, out, n_bootstrap=bootstrap, seed=seed, excluded_csv=excluded, scans_csv=scans
    )
    print(to_json(result))


@app.command("lidc-annotations")
def lidc_annotations(
    xml_dir: Path = typer.Argument(..., help="Folder of LIDC-IDRI reader XML files (LidcReadMessage), any nesting."),
    data: Path = typer.Option(..., "--data", help="Folder of the DICOM series the XML files annotate."),
    out: Path = typer.Option(..., "--out", help="annotations.csv to write (LUNA16 format, plus n_readers)."),
    excluded_out: Path | None = typer.Option(
        None, "--excluded-out", help="Also write annotations_excluded.csv (findings to ignore in evaluation)."
    ),
    min_readers: int = typer.Option(3, "--min-readers", min=1, help="Readers who must mark a nodule >= 3 mm."),
) -> None:
    """LIDC-IDRI XML -> LUNA16 annotations: nodules >= 3 mm marked by >= 3 readers (exit 3 if XML was skipped)."""
    from verticals.medical.api import lidc_annotations as convert

    result = convert(xml_dir, data, out, excluded_csv=excluded_out, min_readers=min_readers)
    print(to_json(result))
    if result["skipped"]:
        bad = len(result["skipped"])
        raise PartialSuccess(f"{bad} XML file(s) skipped (listed above)", rejected=bad)


@app.command("label-annotations")
def label_annotations(
    labels: list[str] = typer.Argument(
        ..., help="Label masks as SERIESUID=FILE (or FILE: seriesuid = its stem); .nrrd, .nii.gz, .mhd..."
    ),
    out: Path = typer.Option(..., "--out", help="annotations.csv to write (LUNA16 columns, plus extents)."),
) -> None:
    """Lesion label masks -> LUNA16 annotations: one row per connected lesion (centroid, equal-volume diameter)."""
    from verticals.medical.labels import write_label_annotations

    rows = write_label_annotations(labels, out)
    print(f"{len(rows)} lesion(s) from {len(labels)} mask(s) -> {out}")
