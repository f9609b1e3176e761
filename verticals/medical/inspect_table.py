"""`fedsite dicom inspect` as a table a person reads: one row per series, skipped files summarised.

Why not the JSON: an IT lead checking an export wants to see at a glance which folder holds which
series, whether it passed and why not; thousands of skipped files must not bury that, so they are
counted by reason and only the first `max_skipped` are named (`--json` keeps everything).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

COLUMNS = ("folder", "modality", "slices", "shape", "spacing mm", "HU range", "status", "reason")


def _fmt_list(values: list[float] | None, digits: int) -> str:
    if not values:
        return "-"
    return "x".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else str(int(v)) for v in values)


def _row(rec: dict[str, Any]) -> list[str]:
    hu = "-" if rec.get("hu_min") is None else f"{rec['hu_min']:.0f}..{rec['hu_max']:.0f}"
    return [
        rec.get("folder") or ".",
        rec.get("modality") or "?",
        str(rec["n_slices"]) if rec.get("n_slices") else f"({rec.get('files', 0)} files)",
        _fmt_list(rec.get("shape_zyx"), 0),
        _fmt_list(rec.get("spacing_zyx"), 3),
        hu,
        rec.get("status", "?"),
        "; ".join(rec.get("reasons") or []) or "-",
    ]


def _relative(path: str, root: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return path


def render(report: dict[str, Any], root: str | Path, *, max_skipped: int = 10, what: str = "DICOM series") -> str:
    """The report as text: a title line with the folder, a header, aligned rows, a skipped-files summary."""
    rows = [_row(r) for r in sorted(report["series"], key=lambda r: (r.get("folder") or "", r["seriesuid"]))]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(COLUMNS)]
    widths[-1] = len(COLUMNS[-1])  # the reason column is last and unpadded

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    n_ok = sum(r["status"] == "ok" for r in report["series"])
    out = [
        f"{what} under {Path(root).resolve()}: {len(rows)} found, {n_ok} ok, {len(rows) - n_ok} rejected",
        line(COLUMNS),
        line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows]
    skipped = report.get("skipped") or []
    if skipped:
        by_reason = Counter(s["reason"] for s in skipped)
        summary = ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common(5))
        more = len(by_reason) - 5
        out.append(f"skipped {len(skipped)} file(s): {summary}{f', {more} other reason(s)' if more > 0 else ''}")
        for item in skipped[:max_skipped]:
            out.append(f"  {_relative(item['path'], root)}: {item['reason']}")
        if len(skipped) > max_skipped:
            out.append(f"  ... and {len(skipped) - max_skipped} more (--max-skipped N to list more, --json for all)")
    return "\n".join(out)
