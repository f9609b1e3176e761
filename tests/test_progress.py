"""Progress in a log: one line per ~10 % with an ETA, never one per step."""

from __future__ import annotations

import re
import time

from common import progress


def test_a_long_loop_logs_about_ten_lines_with_eta(capsys):
    progress.set_quiet(False)
    items = list(progress.track(range(5000), "work", total=5000))
    lines = capsys.readouterr().err.strip().splitlines()
    assert items == list(range(5000))
    assert 9 <= len(lines) <= 11  # 5,000 steps, ~10 lines
    assert lines[0].startswith("work: 500/5000 (10 %)") and "ETA" in lines[0]
    assert lines[-1].startswith("work: 5000/5000 (100 %)") and "ETA" not in lines[-1]
    percents = [int(re.search(r"\((\d+) %\)", line).group(1)) for line in lines]
    assert percents == sorted(percents)


def test_few_steps_log_each_and_unknown_totals_log_by_time(capsys, monkeypatch):
    list(progress.track(range(3), "rounds", total=3))
    assert len(capsys.readouterr().err.strip().splitlines()) == 3  # fewer steps than tenths: one each
    monkeypatch.setattr(progress, "UNKNOWN_TOTAL_EVERY_S", 0.05)

    def slow():
        for i in range(5):
            time.sleep(0.03)
            yield i

    list(progress.track(slow(), "reading"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert 1 <= len(lines) <= 3 and all(line.startswith("reading: ") for line in lines)


def test_a_stage_says_when_it_starts_and_how_long_it_took(capsys):
    with progress.stage("exporting"):
        time.sleep(0.01)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "exporting ..." and re.fullmatch(r"exporting: done in \d+\.\ds", lines[1])


def test_training_stages_report_progress_with_eta(tmp_path, capsys):
    """medical train's epochs, finance's featurising and tree-head fit: none of them is silent."""
    from common.cli import main

    progress.set_quiet(False)
    data = tmp_path / "ct"
    assert main(["medical", "synth", "--out", str(data), "--scans", "3", "--scale", "tiny"]) == 0
    sets = ["spacing_mm=5", "channels=8,16,24,32", "patch=32", "window=32", "epochs=4", "steps_per_epoch=1"]
    args = ["medical", "train", "--data", str(data), "--annotations", str(data / "annotations.csv")]
    assert main([*args, "--out", str(tmp_path / "m"), *(x for s in sets for x in ("--set", s))]) == 0
    err = capsys.readouterr().err
    assert re.search(r"medical: training epochs: 1/4 \(25 %\), [\d.]+s, ETA \d+s", err), err[-2000:]
    assert "medical: training epochs: 4/4 (100 %)" in err and "medical: epoch 4/4 loss" in err
    bank = tmp_path / "bank"
    assert main(["finance", "synth", "--out", str(bank), "--accounts", "60", "--days", "4"]) == 0
    tiny = ["history=8", "tcn_channels=8", "tcn_levels=2", "gnn_hidden=16", "head_hidden=32", "epochs=1"]
    args = ["finance", "train", "--data", str(bank / "transactions.csv"), "--out", str(tmp_path / "f")]
    assert main([*args, *(x for s in tiny for x in ("--set", s))]) == 0
    err = capsys.readouterr().err
    assert re.search(r"finance: featurising \d+ transactions: 1/1 \(100 %\)", err), err[-2000:]
    assert re.search(r"finance: fitting the boosted-tree head on \d+ rows: done in \d+\.\ds", err), err[-2000:]
