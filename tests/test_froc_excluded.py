"""LUNA16's annotations_excluded.csv: hits on excluded findings are neither TP nor FP, as the script does.

The reference below re-implements noduleCADEvaluationLUNA16.py's loop literally (candidates2 copy,
'Included'/'Excluded' states, -1 diameters as 10 mm, sklearn's roc_curve, interpolation on 10001
points from 1/8 to 8 FP/scan, the seven rates picked out); fedsite's scorer must give its CPM.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import sklearn.metrics as skl

from common.cli import main
from verticals.medical.evaluate import match_scan, score, summarise


def _luna16_script_cpm(cands: dict, included: dict, excluded: dict, scans: list | None = None) -> float:
    """The script's evaluateCAD + computeFROC, kept to its control flow (Python 3, numpy arrays)."""
    gt, prob, excl = [], [], []
    scans = scans or sorted(set(cands) | set(included))
    for uid in scans:
        xyz, p = cands.get(uid, (np.zeros((0, 3)), np.zeros(0)))
        candidates = {i: (xyz[i], p[i]) for i in range(len(p))}
        candidates2 = dict(candidates)
        annots = [(c, d, "Included") for c, d in included.get(uid, [])]
        annots += [(c, d, "Excluded") for c, d in excluded.get(uid, [])]
        for centre, diameter, state in annots:
            diameter = 10.0 if diameter < 0 else diameter
            found, matches = False, []
            for key, (cxyz, cp) in candidates.items():
                if float(np.sum((np.asarray(centre) - cxyz) ** 2)) < (diameter / 2.0) ** 2:
                    if state == "Included":
                        found = True
                        matches.append(cp)
                        candidates2.pop(key, None)
                    elif key in candidates2:
                        del candidates2[key]
            if state == "Included":
                gt.append(1.0)
                prob.append(max(matches) if found else -1e9)
                excl.append(not found)
        for _, cp in candidates2.values():
            gt.append(0.0)
            prob.append(cp)
            excl.append(False)
    keep = ~np.array(excl)
    g, pr = np.array(gt)[keep], np.array(prob)[keep]
    fpr, tpr, _ = skl.roc_curve(g, pr)
    detected, total = g.sum(), np.sum(gt)
    fps = fpr * (len(pr) - detected) / len(scans)
    sens = tpr * detected / total
    grid = np.linspace(0.125, 8, num=10001)
    interp = np.interp(grid, fps, sens)
    return float(np.mean([interp[np.argmin(np.abs(grid - r))] for r in (0.125, 0.25, 0.5, 1, 2, 4, 8)]))


def test_candidates_on_excluded_findings_are_dropped_but_still_hit_nodules():
    nodules, diam = np.array([[0.0, 0, 0]]), np.array([10.0])
    excluded, ex_diam = np.array([[3.0, 0, 0], [40, 0, 0], [80, 0, 0]]), np.array([8.0, -1.0, 6.0])
    cands = np.array([[1.0, 0, 0], [44.9, 0, 0], [80, 2.9, 0], [80, 3.1, 0], [200, 0, 0]])
    probs = np.array([0.5, 0.9, 0.8, 0.7, 0.3])
    tp, fp, _ = match_scan(cands, probs, nodules, diam, excluded, ex_diam)
    assert tp.tolist() == [0.5]  # hits the nodule and an excluded finding: still the true positive
    # 44.9 is inside the 10 mm given to a -1 diameter; 3.1 mm is outside the 6 mm finding's radius
    assert sorted(fp.tolist()) == [0.3, 0.7]
    _, fp_all, _ = match_scan(cands, probs, nodules, diam)
    assert sorted(fp_all.tolist()) == [0.3, 0.7, 0.8, 0.9]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cpm_with_exclusions_equals_the_luna16_script(seed):
    rng = np.random.default_rng(seed)
    included, excluded, cands = {}, {}, {}
    for s in range(6):
        centres = rng.uniform(-100, 100, (int(rng.integers(0, 4)), 3))
        included[f"s{s}"] = [(c, float(rng.uniform(4, 25))) for c in centres]
        ex = rng.uniform(-100, 100, (int(rng.integers(0, 5)), 3))
        excluded[f"s{s}"] = [(c, float(rng.choice([-1.0, rng.uniform(3, 12)]))) for c in ex]
        near = [c + rng.normal(0, 3, 3) for c in np.concatenate([centres, ex])]
        xyz = np.concatenate([np.array(near).reshape(-1, 3), rng.uniform(-100, 100, (int(rng.integers(2, 12)), 3))])
        cands[f"s{s}"] = (xyz, rng.random(len(xyz)))
    ours = summarise(score(cands, included, excluded=excluded)[1], n_bootstrap=0)["cpm"]
    assert ours == pytest.approx(_luna16_script_cpm(cands, included, excluded), abs=1e-3)
    plain = summarise(score(cands, included)[1], n_bootstrap=0)["cpm"]
    assert plain == pytest.approx(_luna16_script_cpm(cands, included, {}), abs=1e-3)
    listed = [*sorted(included), "empty1", "empty2"]  # seriesuids.csv may list scans nothing was found in
    with_empty = summarise(score(cands, included, listed, excluded=excluded)[1], n_bootstrap=0)["cpm"]
    assert with_empty == pytest.approx(_luna16_script_cpm(cands, included, excluded, listed), abs=1e-3)


def test_evaluate_cli_takes_the_excluded_csv(tmp_path, capsys):
    def write(name, header, rows):
        with open(tmp_path / name, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])

    luna = ["seriesuid", "coordX", "coordY", "coordZ"]
    write("ann.csv", [*luna, "diameter_mm"], [["a", 0, 0, 0, 10]])
    write("excluded.csv", [*luna, "diameter_mm"], [["a", 50, 0, 0, -1], ["b", 0, 0, 0, 5]])
    write("cands.csv", [*luna, "probability"], [["a", 0, 1, 0, 0.4], ["a", 51, 0, 0, 0.9], ["a", 90, 0, 0, 0.2]])
    base = ["medical", "evaluate", "--candidates", str(tmp_path / "cands.csv"), "--annotations"]
    base += [str(tmp_path / "ann.csv"), "--bootstrap", "0"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--excluded", str(tmp_path / "excluded.csv")]) == 0
    honoured = json.loads(capsys.readouterr().out)
    assert honoured["n_ignored_candidates"] == 1 and honoured["n_excluded_findings"] == 2
    assert honoured["n_scans"] == plain["n_scans"] == 1 and honoured["n_nodules"] == 1
    # the FP at 0.9 ranked above the nodule: gone, the nodule is found at 1/8 FP per scan
    assert plain["froc"]["0.125"] < 1.0 and honoured["froc"]["0.125"] == 1.0
    write("more_cands.csv", [*luna, "probability"], [["a", 0, 1, 0, 0.4], ["a", 90, 0, 0, 0.2], ["z", 5, 5, 5, 0.99]])
    (tmp_path / "seriesuids.csv").write_text("a\nc\n")  # LUNA16's file: no header
    cand_arg = base.index("--candidates") + 1
    listed = [*base[:cand_arg], str(tmp_path / "more_cands.csv"), *base[cand_arg + 1 :]]
    assert main([*listed, "--scans", str(tmp_path / "seriesuids.csv")]) == 0
    scoped = json.loads(capsys.readouterr().out)
    # scan c counts (FP per scan halves), scan z's 0.99 candidate is left out with z
    assert scoped["n_scans"] == 2 and scoped["froc"]["0.25"] == 1.0
    (tmp_path / "bad.csv").write_text("seriesuid,coordX\na,1\n")
    assert main([*base, "--excluded", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv: missing column(s)" in capsys.readouterr().err
