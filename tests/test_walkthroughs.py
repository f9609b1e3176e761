"""The README's walkthroughs run as written (at --quick), in a fresh folder, through the installed CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> list[str]:
    """The commands of the first ```bash block after `heading` (comments stripped)."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index(heading) :]
    body = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    return [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]


@pytest.mark.slow
def test_fraud_analyst_walkthrough_runs_as_written(tmp_path):
    commands = _block("### A fraud analyst")
    assert len(commands) == 4 and all(c.startswith("fedsite finance ") for c in commands)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in commands:
        proc = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"
    header = (tmp_path / "scored" / "scores.csv").read_text().splitlines()[0]
    assert header == "txn_id,fraud_probability,reason_1,reason_2,reason_3"
    assert (tmp_path / "report" / "pr_curve.png").is_file() and (tmp_path / "report" / "thresholds.csv").is_file()
    assert (tmp_path / "fraud-model" / "model.onnx").is_file()


def _run_block(heading: str, cwd: Path, prefix: str, count: int) -> None:
    """Run a walkthrough's commands in `cwd` (HOME there too: the de-identification secret lands in it)."""
    commands = _block(heading)
    assert len(commands) == count and all(c.startswith(prefix) for c in commands), commands
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "HOME": str(cwd)}
    env.pop("FEDSITE_DEID_SECRET_FILE", None)
    for command in commands:
        proc = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, f"{command}: {proc.stderr[-2000:]}"


@pytest.mark.slow
def test_hospital_it_lead_walkthrough_runs_as_written(tmp_path):
    import csv

    _run_block("### A hospital's IT lead", tmp_path, "fedsite ", 5)
    crosswalk = list(csv.DictReader((tmp_path / "deid.crosswalk.csv").open()))
    assert crosswalk and all(r[k] for r in crosswalk for k in r)
    new_uids = {v for r in crosswalk for v in list(r.values())[1:]}
    annotated = {r["seriesuid"] for r in csv.DictReader((tmp_path / "deid" / "annotations.csv").open())}
    assert annotated and annotated <= new_uids  # the annotations follow the new UIDs
    report = json.loads((tmp_path / "findings" / "report.json").read_text())
    assert [s["status"] for s in report["series"]] == ["ok"] * 3 and report["n_candidates"] > 0
    assert {s["seriesuid"] for s in report["series"]} <= new_uids  # detection ran on the de-identified copy
    history = json.loads((tmp_path / "federation" / "history.json").read_text())
    assert [r["sites"][k]["status"] for r in history["rounds"] for k in r["sites"]] == ["ok", "ok"]
    assert (tmp_path / "federation" / "report.md").is_file()


@pytest.mark.slow
def test_quality_engineer_walkthrough_runs_as_written_and_on_a_video(tmp_path):
    import csv

    import cv2

    _run_block("### A quality engineer", tmp_path, "fedsite manufacturing ", 3)
    results = list(csv.DictReader((tmp_path / "inspected" / "results.csv").open()))
    assert len(results) == 20 and {r["status"] for r in results} == {"ok"}
    defective = [r["is_defective"] == "1" for r in results if not r["image"].startswith("good/")]
    good = [r["is_defective"] == "1" for r in results if r["image"].startswith("good/")]
    assert sum(defective) > len(defective) / 2 and sum(good) < len(good) / 2  # a model, not a constant
    assert (tmp_path / "inspected" / "contact_sheet.png").is_file()
    # "or a video file": the same command on a video made of the test images
    frames = sorted((tmp_path / "parts" / "test").rglob("*.png"))[:8]
    first = cv2.imread(str(frames[0]))
    video = cv2.VideoWriter(str(tmp_path / "line.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, first.shape[1::-1])
    for frame in frames:
        video.write(cv2.resize(cv2.imread(str(frame)), first.shape[1::-1]))
    video.release()
    command = _block("### A quality engineer")[2].replace("parts/test", "line.avi").replace("inspected", "video")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(csv.DictReader((tmp_path / "video" / "results.csv").open()))) == 8
