"""LUNA16 scoring: hit rule, one hit per nodule, FROC/CPM, cross-checked against monai.metrics.froc."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.metrics.froc import compute_froc_curve_data, compute_froc_score

from common.cli import main
from verticals.medical.evaluate import FP_RATES, froc_curve, froc_points, match_scan, score, summarise


def test_hit_is_strictly_inside_the_radius_and_extra_hits_are_not_false_positives():
    nodules = np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    diam = np.array([10.0, 6.0])
    cands = np.array([[4.9, 0, 0], [0, 2, 0], [50, 3.0, 0], [20, 0, 0]])  # 3.0 == radius of nodule 2: a miss
    probs = np.array([0.9, 0.4, 0.8, 0.3])
    tp, fp, tp_index = match_scan(cands, probs, nodules, diam)
    assert tp[0] == 0.9 and tp_index[0] == 0  # best of the two hits
    assert tp[1] == -np.inf  # distance equal to the radius does not hit
    assert sorted(fp.tolist()) == [0.3, 0.8]  # the second hit on nodule 1 is neither TP nor FP


def test_perfect_and_empty_detectors():
    ann = {"a": [(np.zeros(3), 8.0)], "b": [(np.ones(3) * 30, 12.0)]}
    perfect = {"a": (np.zeros((1, 3)), np.array([0.9])), "b": (np.ones((1, 3)) * 30, np.array([0.8]))}
    result = summarise(score(perfect, ann)[1], n_bootstrap=50)
    assert result["cpm"] == 1.0 and result["n_nodules"] == 2 and result["n_scans"] == 2
    assert result["median_centre_error_mm"] == 0.0
    empty = summarise(score({}, ann)[1], n_bootstrap=0)
    assert empty["cpm"] == 0.0 and list(empty["froc"]) == ["0.125", "0.25", "0.5", "1", "2", "4", "8"]


def test_froc_interpolates_from_the_origin_like_the_luna16_script():
    # one scan, two nodules: TP at 0.9, FP at 0.8, FP at 0.7, TP at 0.6
    tp, fp = np.array([0.9, 0.6]), np.array([0.8, 0.7])
    points = dict(zip(FP_RATES, froc_points(tp, fp, n_nodules=2, n_scans=1)))
    assert points[0.125] == pytest.approx(0.5)  # (0,0.5) is the first operating point
    assert points[1.0] == pytest.approx(0.5)
    assert points[2.0] == pytest.approx(1.0)
    assert points[8.0] == pytest.approx(1.0)


def _random_study(rng, n_scans=12):
    ann, cands = {}, {}
    for s in range(n_scans):
        nod = rng.uniform(0, 200, (rng.integers(1, 4), 3))
        diam = rng.uniform(4, 25, len(nod))
        ann[f"s{s}"] = list(zip(nod, diam))
        near = nod[rng.random(len(nod)) < 0.7] + rng.normal(0, 3, (1, 3))
        far = rng.uniform(0, 200, (rng.integers(0, 12), 3))
        xyz = np.concatenate([near, far]).reshape(-1, 3)
        cands[f"s{s}"] = (xyz, rng.random(len(xyz)))
    return ann, cands


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_and_cpm_match_monai_froc_utilities(seed):
    rng = np.random.default_rng(seed)
    ann, cands = _random_study(rng)
    _, per_scan = score(cands, ann)
    tp = np.concatenate([p[0] for p in per_scan])
    fp = np.concatenate([p[1] for p in per_scan])
    fps, sens = froc_curve(tp, fp, len(tp), len(per_scan))
    m_fps, m_sens = compute_froc_curve_data(fp, tp[np.isfinite(tp)], num_targets=len(tp), num_images=len(per_scan))
    # MONAI (after CAMELYON16) lists thresholds ascending, skips the lowest one and appends (0, 0)
    np.testing.assert_allclose(m_fps, np.append(fps[::-1][1:], 0.0))
    np.testing.assert_allclose(m_sens, np.append(sens[::-1][1:], 0.0))
    # MONAI's interpolation and mean over the full LUNA16 curve (which also starts at (0, 0)) give our CPM
    monai_cpm = compute_froc_score(np.append(fps[::-1], 0.0), np.append(sens[::-1], 0.0), eval_thresholds=FP_RATES)
    assert summarise(per_scan, n_bootstrap=0)["cpm"] == pytest.approx(monai_cpm, abs=1e-12)


def test_bootstrap_interval_brackets_the_cpm():
    ann, cands = _random_study(np.random.default_rng(5), n_scans=20)
    result = summarise(score(cands, ann)[1], n_bootstrap=300, seed=1)
    lo, hi = result["cpm_ci95"]
    assert 0.0 <= lo <= result["cpm"] <= hi <= 1.0 and hi > lo


def _write(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_evaluate_command_prints_contract_json_and_writes_plot(tmp_path, capsys):
    ann = _write(tmp_path / "ann.csv", ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"],
                 [["a", 0, 0, 0, 8], ["a", 40, 0, 0, 10], ["b", 5, 5, 5, 6]])  # fmt: skip
    cands = _write(tmp_path / "cands.csv", ["seriesuid", "coordX", "coordY", "coordZ", "probability"],
                   [["a", 1, 0, 0, 0.9], ["a", 90, 0, 0, 0.8], ["b", 5, 6, 5, 0.7], ["b", 60, 0, 0, 0.1]])  # fmt: skip
    capsys.readouterr()
    assert (
        main(
            ["medical", "evaluate", "--candidates", str(cands), "--annotations", str(ann), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert list(result)[:4] == ["cpm", "froc", "n_nodules", "n_scans"]
    assert result["n_nodules"] == 3 and result["n_scans"] == 2
    assert set(result["froc"]) == {"0.125", "0.25", "0.5", "1", "2", "4", "8"}
    assert result["cpm"] == pytest.approx(np.mean(list(result["froc"].values())))
    assert (tmp_path / "o" / "froc.png").stat().st_size > 1000


def test_evaluate_rejects_malformed_csv_with_file_and_line(tmp_path, capsys):
    ann = _write(tmp_path / "ann.csv", ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], [["a", 0, 0, 0, 8]])
    bad = _write(
        tmp_path / "c.csv", ["seriesuid", "coordX", "coordY", "coordZ", "probability"], [["a", 1, "x", 0, 0.5]]
    )
    assert main(["medical", "evaluate", "--candidates", str(bad), "--annotations", str(ann)]) == 2
    err = capsys.readouterr().err
    assert "c.csv:2" in err and "Traceback" not in err
    wrong = _write(tmp_path / "w.csv", ["uid", "x"], [["a", 1]])
    assert main(["medical", "evaluate", "--candidates", str(wrong), "--annotations", str(ann)]) == 2
    assert "missing column" in capsys.readouterr().err


def test_froc_json_is_strict_json_when_a_figure_is_undefined(tmp_path, capsys):
    """No nodules: the CI and centre error are undefined; they must be null, never the NaN token."""
    ann = tmp_path / "annotations.csv"
    ann.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    cand = tmp_path / "candidates.csv"
    cand.write_text("seriesuid,coordX,coordY,coordZ,probability\n1.2.3,0,0,0,0.9\n")
    out = tmp_path / "froc"
    assert main(["medical", "evaluate", "--candidates", str(cand), "--annotations", str(ann), "--out", str(out)]) == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"non-JSON token {token}")

    printed = json.loads(capsys.readouterr().out, parse_constant=refuse)
    written = json.loads((out / "froc.json").read_text(), parse_constant=refuse)
    assert written["cpm_ci95"] == [None, None] and printed["median_centre_error_mm"] is None
