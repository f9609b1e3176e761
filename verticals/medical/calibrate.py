"""Calibrated probabilities: Platt scaling of the final score, fitted on scans the model never trained on.

Why: the FP stage is fitted on the training scans' candidates, where the detector is surer than on
new scans, and a phantom-trained detector said p = 1.00 about the blanket of a real patient. A
probability a radiologist reads, and the `min_probability` cut that decides how many candidates a scan
returns, only mean something when they match how often candidates at that value are nodules on
unseen scans. Two parameters (slope, intercept on the logit) are what a handful of held-out scans can
estimate; isotonic regression would need many more positives than a site's held-out quarter has.
"""

from __future__ import annotations

import numpy as np
import torch

from verticals.medical.preprocess import Case, split_of


def split_for_calibration(cases: list[Case], fraction: float) -> tuple[list[Case], list[Case]]:
    """(train, held-out) by the deterministic hash split; no held-out scans below 8 scans or 2 annotated ones."""
    if fraction <= 0 or len(cases) < 8:
        return cases, []
    uids = [c.seriesuid for c in cases]
    held = [c for c in cases if split_of(c.seriesuid, uids, fraction) == "test"]
    if sum(len(c.diameters) > 0 for c in held) < 2:
        return cases, []
    return [c for c in cases if c not in held], held


def fit_platt(probs: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """(slope, intercept) of logistic regression on logit(p); None without both classes."""
    if len(labels) < 8 or labels.min() == labels.max():
        return None
    from sklearn.linear_model import LogisticRegression

    p = np.clip(probs, 1e-6, 1 - 1e-6)
    x = np.log(p / (1 - p))[:, None]
    clf = LogisticRegression(C=10.0, max_iter=1000).fit(x, labels)
    return np.array([float(clf.coef_[0, 0]), float(clf.intercept_[0])])


def fit_calibration(model, cases: list[Case], cfg) -> dict[str, float]:
    """Fit the model's `calibration` buffer on the candidates of held-out `cases` (identity if it cannot)."""
    from verticals.medical.infer import detect_case, fp_params, hits, torch_runner

    model.eval()
    runner = torch_runner(model)
    fp = fp_params(model)[:3]
    probs, labels = [], []
    for case in cases:
        found = detect_case(case, runner, cfg, fp, report_all=True, masses=False, extra_scales=False)
        probs.append(found["probability"])
        labels.append(hits(case, found["xyz"]).astype(int))
    fitted = fit_platt(np.concatenate(probs), np.concatenate(labels)) if probs else None
    with torch.no_grad():
        model.calibration.copy_(torch.as_tensor(fitted if fitted is not None else [1.0, 0.0]))
    return {
        "calibrated": float(fitted is not None),
        "calibration_scans": float(len(cases)),
        "calibration_candidates": float(sum(len(v) for v in labels)),
    }
