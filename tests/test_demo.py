"""`fedsite demo --quick`: every step of the demo once (one round, tiny data); the full demo runs in the benchmark."""

from __future__ import annotations

import json
import re

import pytest

from common.cli import main
from common.registry import available_tasks


@pytest.mark.slow
def test_quick_demo_writes_both_reports_with_every_vertical(tmp_path):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--out", str(out), "--seed", "1"])
    landed = set(available_tasks())
    assert code == (0 if landed == {"medical", "finance", "manufacturing"} else 3)
    summary = json.loads((out / "demo.json").read_text())
    statuses = {s["vertical"]: s["status"] for s in summary["sections"]}
    assert statuses == {v: ("ok" if v in landed else "skipped") for v in ("medical", "finance", "manufacturing")}
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "</html>" in page
    for vertical in landed:
        run = out / vertical
        assert (run / "history.json").exists() and (run / "global_model" / "model.pt").exists()
        assert f"]({vertical}/curves.png)" in markdown and f"title='{vertical}/curves.png'" in page
    # self-contained: every image embedded, no reference to any other file
    assert re.findall(r"(?:src|href)=['\"](?!data:)", page) == []
    assert page.count("src='data:image/png;base64,") == markdown.count("![")
    if "finance" in landed:
        assert "alerts/day" in page and (out / "finance" / "evaluation" / "pr_curve.png").exists()
        assert "](finance/evaluation/pr_curve.png)" in markdown
    if "manufacturing" in landed:
        sheet = out / "manufacturing" / "evaluation" / "contact_sheet.png"
        assert "](manufacturing/evaluation/contact_sheet.png)" in markdown and "escape(s)" in page
        assert len(list((out / "manufacturing" / "evaluation" / "annotated").glob("*.png"))) > 0 and sheet.exists()
    if "medical" in landed:
        assert (out / "medical" / "froc" / "froc.png").exists()
        assert (out / "medical" / "detections" / "candidates.csv").exists()
        overlays = list((out / "medical" / "detections" / "overlays").rglob("*.png"))
        assert overlays and "LUNA16 FROC" in markdown
        assert any(o.relative_to(out).as_posix() in markdown for o in overlays)


def test_demo_refuses_an_unknown_engine(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--engine", "warp"]) == 2
