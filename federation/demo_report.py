"""The demo's report: one Markdown and one HTML page built from the same blocks.

report.md links its figures relatively; report.html embeds them (data: URIs) so it can be mailed alone.

Both pages say plainly what ran, what each number means, and which verticals were skipped and why,
so a reader of the report alone can tell what the demo did and did not show.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from common import atomic, runs

TITLES = {
    "medical": "Hospitals: federated lung-nodule detection in CT",
    "finance": "Banks: federated fraud detection",
    "manufacturing": "Factories: federated visual defect inspection",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def _blocks(result: dict[str, Any], out: Path) -> list[tuple[str, Any]]:
    """("h1"|"h2"|"p"|"table"|"img", payload) blocks shared by both renderers."""
    mode = "quick smoke run (one round, tiny data)" if result["quick"] else "full demo"
    blocks: list[tuple[str, Any]] = [
        ("h1", "fedsite demo"),
        (
            "p",
            f"{mode}, seed {result['seed']}, {result['seconds']:.0f} s in total. All data is synthetic and was "
            "made on this machine; each simulated site kept its own data and sent only model updates.",
        ),  # fmt: skip
    ]
    rows = [
        [s["vertical"], s["status"], f"{s.get('seconds', 0):.0f} s", s.get("reason", "")] for s in result["sections"]
    ]
    blocks.append(("table", (["vertical", "status", "time", "note"], rows)))
    for section in result["sections"]:
        blocks.append(("h2", TITLES.get(section["vertical"], section["vertical"])))
        if section["status"] != "ok":
            blocks.append(("p", f"Skipped: {section.get('reason', 'not available')}."))
            continue
        summary = section["summary"]
        metric = summary["headline"]
        rel_run = Path(section["run_dir"]).relative_to(out).as_posix()
        blocks.append(("p", f"{len(summary['global_test'])} sites, {summary['rounds']} round(s), "
                            f"{summary['bytes'] / 1e6:.1f} MB of model traffic. Global model's {metric} (mean of the "
                            f"sites' own scores, last round): {_fmt(summary['global_val'])}. Run directory: "
                            f"`{rel_run}` (history.json, global_model/, report.md)."))  # fmt: skip
        sites = sorted(summary["global_test"])
        matrix_rows = [[name, *(_fmt(row.get(s)) for s in sites)] for name, row in summary["cross_site"].items()]
        blocks.append(("p", f"Test {metric} on each site's held-out data (rows: model; columns: site data):"))
        blocks.append(("table", (["model", *sites], matrix_rows)))
        if "froc" in section:
            froc = section["froc"]
            blocks.append(("p", f"LUNA16 FROC of the federated detector on {froc['n_scans']} held-out scans "
                                f"({froc['n_nodules']} nodules): CPM {_fmt(froc['cpm'])}."))  # fmt: skip
            points = list(froc["froc"].items())
            blocks.append(
                ("table", (["FPs/scan", *[k for k, _ in points]], [["sensitivity", *[_fmt(v) for _, v in points]]]))
            )
            rows = [[d["seriesuid"][-24:], d["status"], str(d["n_candidates"])] for d in section["detections"]]
            blocks.append(("p", "Detection on the held-out series (overlays below show the top candidates):"))
            blocks.append(("table", (["series (end of UID)", "status", "candidates"], rows)))
        if "thresholds" in section:
            blocks.append(("p", f"The federated fraud model on a held-out bank it never saw (AUPRC "
                                f"{_fmt(section['heldout_auprc'])}): how many alerts a day each threshold "
                                "costs and what it catches (PR curve below)."))  # fmt: skip
            columns = ["threshold", "alerts_per_day", "precision", "recall"]
            rows = [[_fmt(float(r[c])) if c != "alerts_per_day" else f"{float(r[c]):.1f}" for c in columns]
                    for r in section["thresholds"]]  # fmt: skip
            blocks.append(("table", (["threshold", "alerts/day", "precision", "recall"], rows)))
        if "confusion" in section:
            c = section["confusion"]
            blocks.append(("p", f"The federated defect model on held-out parts at its threshold "
                                f"{_fmt(c['threshold'])}: {c['escapes']} escape(s) of {c['n_defective']} defective "
                                f"parts, {c['false_rejects']} false reject(s) of {c['n_good']} good parts. Contact "
                                "sheet of the annotated parts (heat map, defect boxes, OK/NG and score) and ROC "
                                "below."))  # fmt: skip
        for figure in section["figures"]:
            if Path(figure).exists():
                blocks.append(("img", Path(figure).relative_to(out).as_posix()))
    return blocks


def _markdown(blocks: list[tuple[str, Any]]) -> str:
    lines: list[str] = []
    for kind, payload in blocks:
        if kind == "h1":
            lines += [f"# {payload}", ""]
        elif kind == "h2":
            lines += [f"## {payload}", ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "img":
            lines += [f"![{Path(payload).stem}]({payload})", ""]
        elif kind == "table":
            header, rows = payload
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    """The image as a data: URI, so report.html is one self-contained file that can be mailed."""
    import base64

    kind = "png" if path.suffix.lower() == ".png" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html(blocks: list[tuple[str, Any]], out: Path) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fedsite demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px}"
        "img{max-width:100%;margin:.5em 0;border:1px solid #ddd}</style></head><body>"
    ]
    for kind, payload in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "img":
            src = _data_uri(out / payload)
            parts.append(f"<img src='{src}' alt='{html.escape(payload)}' title='{html.escape(payload)}'>")
        elif kind == "table":
            header, rows = payload
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(out: Path, result: dict[str, Any]) -> None:
    """DIR/report.md, DIR/report.html and DIR/demo.json (the numbers behind them), atomically."""
    blocks = _blocks(result, out)
    atomic.write_text(out / "report.md", _markdown(blocks))
    atomic.write_text(out / "report.html", _html(blocks, out))
    plain = [
        {k: (str(v) if isinstance(v, Path) else v) for k, v in s.items() if k != "figures"} for s in result["sections"]
    ]
    runs.write_json(out / "demo.json", {**result, "sections": plain})
