"""The README's walkthroughs run as written (at --quick), in a fresh folder, through the installed CLI."""

from __future__ import annotations

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
