"""LUNA16 scoring exactly: hits within the nodule radius, one hit per nodule, FROC at 1/8..8 FP/scan, CPM.

Follows the LUNA16 evaluation script (noduleCADEvaluationLUNA16.py): for each nodule, every candidate
closer to its centre than its radius hits it; the highest-probability one is the nodule's true
positive and the other hits are discarded (neither TP nor FP); candidates hitting no nodule are false
positives, except those hitting an excluded finding (annotations_excluded.csv), which are ignored
(bOtherNodulesAsIrrelevant in the script). The FROC curve starts at (0 FP, 0 sensitivity) like
sklearn's roc_curve does in the script, and sensitivities at the seven FP rates are linearly
interpolated; CPM is their mean. The 95% interval bootstraps scans (resampling with replacement).
tests/test_froc.py cross-checks the curve and score against monai.metrics.froc.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.errors import UserError

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# noduleCADEvaluationLUNA16.py gives excluded findings without a diameter (-1) a 10 mm one.
EXCLUDED_DEFAULT_DIAMETER_MM = 10.0


def match_scan(
    cands_xyz: np.ndarray,
    probs: np.ndarray,
    nodules_xyz: np.ndarray,
    diameters: np.ndarray,
    excluded_xyz: np.ndarray | None = None,
    excluded_diameters: np.ndarray | None = None,
):
    """One scan -> (TP probability per nodule, -inf when missed; FP probabilities; index of each nodule's TP).

    Candidates within the radius of an excluded finding (LUNA16's annotations_excluded.csv: nodules
    < 3 mm, non-nodules, nodules fewer than 3 readers marked) are irrelevant: not false positives,
    and they still count as true positives when they also hit an included nodule, as in the script.
    An excluded finding without a size (diameter < 0) gets the script's 10 mm.
    """
    tp = np.full(len(diameters), -np.inf)
    tp_index = np.full(len(diameters), -1)
    hits = _hits(cands_xyz, nodules_xyz, diameters)
    ignore = hits.any(1)
    if len(probs) and len(diameters):
        for j in range(len(diameters)):
            idx = np.flatnonzero(hits[:, j])
            if idx.size:
                best = idx[np.argmax(probs[idx])]
                tp[j], tp_index[j] = probs[best], best
    if len(probs) and excluded_xyz is not None and len(excluded_xyz):
        ex_diam = np.where(np.asarray(excluded_diameters, float) < 0, EXCLUDED_DEFAULT_DIAMETER_MM, excluded_diameters)
        ignore |= _hits(cands_xyz, excluded_xyz, ex_diam).any(1)
    return tp, probs[~ignore], tp_index


def _hits(cands_xyz: np.ndarray, centres_xyz: np.ndarray, diameters: np.ndarray) -> np.ndarray:
    """(candidates, findings) booleans: candidate strictly closer to the centre than the radius."""
    if not len(cands_xyz) or not len(diameters):
        return np.zeros((len(cands_xyz), len(diameters)), bool)
    dist = np.linalg.norm(cands_xyz[:, None, :] - centres_xyz[None, :, :], axis=-1)
    return dist < (np.asarray(diameters, float)[None, :] / 2.0)


def froc_curve(tp_probs: np.ndarray, fp_probs: np.ndarray, n_nodules: int, n_scans: int):
    """Operating points (FP per scan, sensitivity) at every distinct probability, highest threshold first."""
    thresholds = np.unique(np.concatenate([tp_probs[np.isfinite(tp_probs)], fp_probs]))[::-1]
    fp_sorted, tp_sorted = np.sort(fp_probs), np.sort(tp_probs[np.isfinite(tp_probs)])
    fps = (len(fp_sorted) - np.searchsorted(fp_sorted, thresholds, side="left")) / max(n_scans, 1)
    sens = (len(tp_sorted) - np.searchsorted(tp_sorted, thresholds, side="left")) / max(n_nodules, 1)
    return fps, sens


def froc_points(tp_probs, fp_probs, n_nodules: int, n_scans: int) -> np.ndarray:
    """Sensitivity at FP_RATES, interpolated on the curve that starts at (0, 0)."""
    fps, sens = froc_curve(np.asarray(tp_probs, float), np.asarray(fp_probs, float), n_nodules, n_scans)
    fps, sens = np.concatenate([[0.0], fps]), np.concatenate([[0.0], sens])
    return np.interp(FP_RATES, fps, sens)


def score(
    candidates: dict[str, tuple[np.ndarray, np.ndarray]],
    annotations: dict,
    scans: list[str] | None = None,
    excluded: dict | None = None,
):
    """LUNA16 scoring of candidates {uid: (xyz, prob)} against annotations {uid: [(xyz, diameter)]}.

    `excluded` ({uid: [(xyz, diameter)]}, annotations_excluded.csv) removes the candidates that hit
    those findings from the false positives; it adds no scan and no nodule.
    """
    scans = sorted(set(scans or []) | set(annotations) | set(candidates))
    excluded = excluded or {}
    per_scan = []
    for uid in scans:
        xyz, prob = candidates.get(uid, (np.zeros((0, 3)), np.zeros(0)))
        nxyz, diam = _findings(annotations.get(uid, []))
        exyz, ediam = _findings(excluded.get(uid, []))
        xyz, prob = np.asarray(xyz, float).reshape(-1, 3), np.asarray(prob, float)
        tp, fp, tp_index = match_scan(xyz, prob, nxyz, diam, exyz, ediam)
        per_scan.append((tp, fp, tp_index, xyz, nxyz))
    return scans, per_scan


def _findings(items: list) -> tuple[np.ndarray, np.ndarray]:
    return np.array([n[0] for n in items], float).reshape(-1, 3), np.array([n[1] for n in items], float)


def summarise(per_scan, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """CPM, FROC points, counts, bootstrap 95% CI of CPM, and the median centre error of hits (mm)."""
    tp = np.concatenate([p[0] for p in per_scan]) if per_scan else np.zeros(0)
    fp = np.concatenate([p[1] for p in per_scan]) if per_scan else np.zeros(0)
    points = froc_points(tp, fp, len(tp), len(per_scan))
    errors = [
        float(np.linalg.norm(np.asarray(xyz)[i] - nxyz[j]))
        for (_, _, tp_index, xyz, nxyz) in per_scan
        for j, i in enumerate(tp_index)
        if i >= 0
    ]
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap if len(per_scan) > 1 else 0):
        pick = rng.integers(len(per_scan), size=len(per_scan))
        btp = np.concatenate([per_scan[i][0] for i in pick])
        bfp = np.concatenate([per_scan[i][1] for i in pick])
        if len(btp):
            boot.append(float(froc_points(btp, bfp, len(btp), len(pick)).mean()))
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else [float("nan")] * 2
    return {
        "cpm": float(points.mean()),
        "froc": {_rate_key(r): float(s) for r, s in zip(FP_RATES, points)},
        "n_nodules": int(len(tp)),
        "n_scans": int(len(per_scan)),
        "cpm_ci95": ci,
        "sensitivity_any": float(np.isfinite(tp).mean()) if len(tp) else 0.0,
        "median_centre_error_mm": float(np.median(errors)) if errors else float("nan"),
    }


def _rate_key(rate: float) -> str:
    return str(int(rate)) if rate >= 1 else str(rate)


def _read_luna_csv(path: str | Path, columns: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """{seriesuid: (N, len(columns)) floats} from a LUNA16-style CSV, with file:line errors."""
    path = Path(path)
    rows: dict[str, list[list[float]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"seriesuid", *columns} - set(reader.fieldnames or [])
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            for line, row in enumerate(reader, start=2):
                try:
                    vals = [float(row[k]) for k in columns]
                except (TypeError, ValueError):
                    raise UserError(f"{path}:{line}: {', '.join(columns)} must be numbers") from None
                if not np.all(np.isfinite(vals)):
                    raise UserError(f"{path}:{line}: non-finite value")
                rows.setdefault(row["seriesuid"], []).append(vals)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 CSV file") from None
    return {uid: np.array(v, dtype=np.float64) for uid, v in rows.items()}


def read_candidates(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """candidates.csv (LUNA16 submission format) -> {seriesuid: (xyz (N,3), probability (N,))}."""
    table = _read_luna_csv(path, ("coordX", "coordY", "coordZ", "probability"), "candidates")
    return {uid: (v[:, :3], v[:, 3]) for uid, v in table.items()}


def read_annotations(path: str | Path, what: str = "annotations") -> dict[str, list[tuple[np.ndarray, float]]]:
    """annotations.csv (LUNA16; also annotations_excluded.csv) -> {seriesuid: [(xyz world mm, diameter mm), ...]}."""
    table = _read_luna_csv(path, ("coordX", "coordY", "coordZ", "diameter_mm"), what)
    return {uid: [(row[:3], float(row[3])) for row in v] for uid, v in table.items()}


def read_scan_list(path: str | Path) -> list[str]:
    """LUNA16's seriesuids.csv (one seriesuid per line, no header; a `seriesuid` header is tolerated)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: scan list file not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    uids = [line.split(",")[0].strip() for line in lines if line.strip()]
    uids = uids[1:] if uids and uids[0] == "seriesuid" else uids
    if not uids:
        raise UserError(f"{path}: no seriesuid listed")
    return uids


def evaluate_candidates(
    candidates_csv,
    annotations_csv,
    out_dir=None,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    excluded_csv=None,
    scans_csv=None,
) -> dict:
    """The `fedsite medical evaluate` result; writes froc.png and froc.json under `out_dir` when given.

    `excluded_csv` is LUNA16's annotations_excluded.csv: hits on those findings are ignored.
    `scans_csv` is LUNA16's seriesuids.csv: exactly these scans are scored (a scan without any
    candidate still counts in FP per scan; candidates and nodules of other scans are left out);
    without it, the scans are those named in the annotations or the candidates.
    """
    cands = read_candidates(candidates_csv)
    ann = read_annotations(annotations_csv)
    excluded = read_annotations(excluded_csv, "excluded annotations") if excluded_csv is not None else None
    scans = read_scan_list(scans_csv) if scans_csv is not None else None
    if scans is not None:
        keep = set(scans)
        cands = {uid: v for uid, v in cands.items() if uid in keep}
        ann = {uid: v for uid, v in ann.items() if uid in keep}
    _, per_scan = score(cands, ann, scans, excluded=excluded)
    result = summarise(per_scan, n_bootstrap=n_bootstrap, seed=seed)
    if excluded is not None:
        result["n_excluded_findings"] = sum(len(v) for v in excluded.values())
        result["n_ignored_candidates"] = _count_ignored(cands, ann, excluded)
    if out_dir is not None:
        from common.runs import write_json

        write_json(Path(out_dir) / "froc.json", result)
        plot_froc(per_scan, result, Path(out_dir) / "froc.png")
    return result


def _count_ignored(cands, ann, excluded) -> int:
    """Candidates dropped from the false positives because they hit an excluded finding only."""
    with_ex = sum(len(p[1]) for p in score(cands, ann, excluded=excluded)[1])
    without = sum(len(p[1]) for p in score(cands, ann)[1])
    return int(without - with_ex)


def plot_froc(per_scan, result: dict, path: Path) -> Path:
    """FROC curve on a log FP axis with the seven LUNA16 operating points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.atomic import atomic_path

    tp = np.concatenate([p[0] for p in per_scan]) if per_scan else np.zeros(0)
    fp = np.concatenate([p[1] for p in per_scan]) if per_scan else np.zeros(0)
    fps, sens = froc_curve(tp, fp, len(tp), len(per_scan))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(np.clip(fps, 1e-2, None), sens, drawstyle="steps-post", label="FROC")
    ax.plot(FP_RATES, list(result["froc"].values()), "o", label=f"CPM {result['cpm']:.3f}")
    ax.set(xscale="log", xlim=(0.1, 10), ylim=(0, 1.02), xlabel="false positives per scan", ylabel="sensitivity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
