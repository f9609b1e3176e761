"""De-identify a whole folder: DICOM copies, rewritten annotation CSVs, crosswalk and audit beside it.

Why a module apart from the profile: a hospital's folder holds more than images (annotations,
candidates, DICOMDIR indexes, README files, truncated copies), and each needs its own, reported
handling. The profile itself (`deidentify.py`) only ever sees one dataset.

Outputs (the input is never modified):
- OUT/<same relative path> for every DICOM image, de-identified;
- OUT/<same relative path> for every CSV with a `seriesuid` column whose other columns are known
  geometry/label columns, with seriesuid rewritten to the new UIDs (annotations follow the scans);
- OUT.crosswalk.csv beside OUT (mode 0600): original -> replacement for every UID and patient ID.
  It re-identifies the data, so it stays at the site;
- OUT.audit.csv beside OUT: one line per input file, what was removed/emptied/dummied/replaced
  (attribute keywords and counts, never values), or why the file was not copied.
"""

from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path
from typing import Any

from common import atomic
from common.errors import UserError
from common.progress import log, track
from data_adapters.deidentify import Audit, SiteKey, deidentify_dataset
from data_adapters.dicom_header import DICOMDIR_SOP_CLASS, dcmread, pixel_bytes_problem, walk_files

# Columns a seriesuid-keyed CSV may carry to be copied (LUNA16 annotations, fedsite candidates):
# none of them can hold a name, a date or an identifier.
SAFE_CSV_COLUMNS = frozenset({
    "seriesuid", "coordx", "coordy", "coordz", "diameter_mm", "kind", "juxtapleural", "probability", "class",
    "label", "volume",
})  # fmt: skip
AUDIT_HEADER = ["path", "status", "removed", "emptied", "dummied", "uids_replaced", "private_removed", "reason"]


def load_secret(path: str | os.PathLike[str] | None) -> tuple[bytes, Path, bool]:
    """(secret bytes, its file, whether it was created now). A missing default file is created (0600)."""
    explicit = path is not None or "FEDSITE_DEID_SECRET_FILE" in os.environ
    default = Path.home() / ".config" / "fedsite" / "deid-secret"
    file = Path(path or os.environ.get("FEDSITE_DEID_SECRET_FILE") or default).expanduser()
    if not file.exists():
        if explicit:
            raise UserError(f"{file}: secret file not found (omit --secret-file to create the default one)")
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        return file.read_text().strip().encode(), file, True
    try:
        secret = file.read_bytes().strip()
    except OSError as exc:
        raise UserError(f"{file}: site secret not readable ({exc.strerror})") from None
    if len(secret) < 16:
        raise UserError(f"{file}: site secret is {len(secret)} bytes; it must hold at least 16")
    return secret, file, False


def _sidecar(out: Path, suffix: str) -> Path:
    return out.parent / f"{out.name}.{suffix}"


def _map_series_id(value: str, key: SiteKey) -> str:
    """A seriesuid as fedsite writes it: the UID, or UID#Key=value for one volume of a split series."""
    uid, sep, rest = value.partition("#")
    return key.uid(uid, "SeriesInstanceUID") + sep + rest if uid else value


def _rewrite_csv(path: Path, target: Path, key: SiteKey) -> str | None:
    """Copy a seriesuid-keyed CSV with new UIDs; a reason string when it is not one we may copy."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        return f"CSV not readable ({type(exc).__name__})"
    if not rows or "seriesuid" not in [c.strip() for c in rows[0]]:
        return "CSV without a seriesuid column: not copied"
    header = [c.strip() for c in rows[0]]
    unknown = [c for c in header if c.lower() not in SAFE_CSV_COLUMNS]
    if unknown:
        return f"CSV with columns that may identify a patient ({', '.join(unknown[:4])}): not copied"
    col = header.index("seriesuid")
    body = [[_map_series_id(v, key) if i == col else v for i, v in enumerate(r)] for r in rows[1:] if r]
    atomic.write_csv(target, header, body)
    return None


def _classify(ds) -> str | None:
    """Why a readable DICOM file is not copied as an image, or None when it is one."""
    meta = getattr(ds, "file_meta", None)
    sop_class = str(getattr(meta, "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return "dicomdir"
    if "PixelData" not in ds and ("Rows" in ds or "Columns" in ds):
        return "no PixelData although the header describes an image (truncated copy?): not copied"
    return None


def deidentify_tree(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    secret_file: str | os.PathLike[str] | None = None,
    secret: bytes | None = None,
) -> dict[str, Any]:
    """De-identify every DICOM file under `in_dir` into `out_dir` (same relative paths); see module doc.

    Returns the report: written, failed (files that should have been copied and were not),
    other_files (listed, not failures), crosswalk/audit paths, the secret file used.
    """
    from pydicom.errors import InvalidDicomError

    src, dst = Path(in_dir).resolve(), Path(out_dir).resolve()
    if dst == src or src in dst.parents:
        raise UserError(f"{out_dir}: output must not be inside the input folder {in_dir}")
    files, unreadable = walk_files(src)
    if not files and not unreadable:
        raise UserError(f"{in_dir}: no files to de-identify (the folder is empty)")
    secret_path, created = None, False
    if secret is None:
        secret, secret_path, created = load_secret(secret_file)
        if created:
            log(f"created a new site secret at {secret_path} (keep it: the same secret gives the same UIDs)")
    key = SiteKey(secret)
    written, failed, other, audit_rows, csvs = 0, list(unreadable), [], [], []
    base = src if src.is_dir() else src.parent
    for item in unreadable:
        audit_rows.append([item["path"], "failed", "", "", "", 0, 0, item["reason"]])
    for path in track(files, "de-identifying"):
        rel = path.relative_to(base)
        if path.suffix.lower() == ".csv":
            csvs.append(path)
            continue
        notes: list[str] = []
        try:
            ds = dcmread(path, notes=notes)
        except InvalidDicomError:
            other.append({"path": str(rel), "reason": "not a DICOM file: not copied"})
            audit_rows.append([str(rel), "not copied", "", "", "", 0, 0, "not a DICOM file"])
            continue
        except Exception as exc:
            reason = f"unreadable DICOM ({type(exc).__name__}): not copied"
            failed.append({"path": str(rel), "reason": reason})
            audit_rows.append([str(rel), "failed", "", "", "", 0, 0, reason])
            continue
        kind = _classify(ds)
        if any("End of file reached" in n for n in notes) or len(ds) == 0:
            kind = "truncated file (it ends inside an element or before the pixel data's delimiter): not copied"
        if kind is None and "PixelData" in ds:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            problem = pixel_bytes_problem(ds, path, frames)
            kind = f"{problem}: not copied" if problem else None
        if kind == "dicomdir":
            reason = (
                "DICOMDIR index not copied: it repeats patient names, IDs and dates, and its record offsets "
                "do not survive de-identification (rebuild one from the copies if a viewer needs it)"
            )
            other.append({"path": str(rel), "reason": reason})
            audit_rows.append([str(rel), "not copied", "", "", "", 0, 0, reason])
            continue
        if kind is not None:
            failed.append({"path": str(rel), "reason": kind})
            audit_rows.append([str(rel), "failed", "", "", "", 0, 0, kind])
            continue
        try:
            audit = deidentify_dataset(ds, key, Audit())
            with atomic.atomic_path(dst / rel) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
        except Exception as exc:
            reason = f"could not de-identify ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
            failed.append({"path": str(rel), "reason": reason})
            audit_rows.append([str(rel), "failed", "", "", "", 0, 0, reason])
            continue
        written += 1
        audit_rows.append([str(rel), "de-identified", *audit.row().values(), ""])
    if not written:
        raise UserError(
            f"{in_dir}: no DICOM image could be de-identified ({len(failed)} failed, {len(other)} other files)"
        )
    rewritten = []
    for path in csvs:  # after the images: every UID the CSVs refer to has been seen
        rel = path.relative_to(base)
        reason = _rewrite_csv(path, dst / rel, key)
        if reason is None:
            rewritten.append(str(rel))
            audit_rows.append([str(rel), "rewritten", "", "", "", 0, 0, "seriesuid -> new UIDs"])
        else:
            other.append({"path": str(rel), "reason": reason})
            audit_rows.append([str(rel), "not copied", "", "", "", 0, 0, reason])
    crosswalk = _sidecar(dst, "crosswalk.csv")
    rows = sorted([k, o, n] for (k, o), n in key.crosswalk.items())
    atomic.write_csv(crosswalk, ["attribute", "original", "replacement"], rows, private=True)  # 0600 from byte one
    audit_path = _sidecar(dst, "audit.csv")
    atomic.write_csv(audit_path, AUDIT_HEADER, audit_rows)
    return {
        "written": written,
        "csv_rewritten": rewritten,
        "failed": failed,
        "other_files": other,
        "crosswalk": str(crosswalk),
        "audit": str(audit_path),
        "secret_file": str(secret_path) if secret_path else None,
    }
