"""From the detector's output grid to candidates: peak decoding, distance NMS, false-positive reduction.

Why a second stage: the heatmap's main confusions are vessels seen end-on and crossings, which look
like blobs in a small window but are tubes over a larger one. Shape features at the candidate's own
scale (Hessian eigenvalue ratio: ~1 for a sphere, ~0 for a tube), its contrast to the surrounding
shell, its predicted size, how uniform its core is and how much aerated lung surrounds it, combined by
a strongly regularised logistic model fitted on the training scans' candidates, push such false
positives down the ranking. The last two features and the regularisation were chosen on held-out
validation phantoms (README): with the detector score and size alone the fit can reward large
low-contrast blobs. The logistic weights live in the model's buffers.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from verticals.medical.model import N_FP_FEATURES


def decode(out: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(5,d,h,w) raw output -> centres (N,3 zyx on the model grid), scores, diameters (mm), best first."""
    heat = 1.0 / (1.0 + np.exp(-out[0].astype(np.float64)))
    peaks = (heat == ndimage.maximum_filter(heat, size=3, mode="constant")) & (heat >= cfg.score_threshold)
    idx = np.argwhere(peaks)
    scores = heat[peaks]
    order = np.argsort(-scores, kind="stable")[: cfg.max_candidates * 4]
    idx, scores = idx[order], scores[order]
    offsets = out[1:4][:, idx[:, 0], idx[:, 1], idx[:, 2]].T if len(idx) else np.zeros((0, 3))
    centres = (idx + np.clip(offsets, -1.0, 1.0)) * cfg.stride
    diam = np.exp(np.clip(out[4][idx[:, 0], idx[:, 1], idx[:, 2]], 0.0, 4.5)) if len(idx) else np.zeros(0)
    return centres.astype(np.float64), scores, diam.astype(np.float64)


def distance_nms(xyz: np.ndarray, scores: np.ndarray, diam: np.ndarray, min_mm: float) -> np.ndarray:
    """Indices kept by greedy distance NMS: a candidate closer than max(min_mm, kept radius) is dropped."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        if all(np.linalg.norm(xyz[i] - xyz[j]) >= max(min_mm, diam[j] / 2) for j in kept):
            kept.append(int(i))
    return np.array(kept, dtype=int)


def _hessian_blobness(crop: np.ndarray, sigma: float) -> float:
    """|lambda_min| / |lambda_max| of the Hessian at the crop centre (1: sphere, 0: tube or plate)."""
    c = tuple(s // 2 for s in crop.shape)
    h = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            h[a, b] = h[b, a] = ndimage.gaussian_filter(crop, sigma, order=order, mode="nearest")[c]
    eig = np.sort(np.abs(np.linalg.eigvalsh(h)))
    return float(eig[0] / max(eig[2], 1e-9))


# aerated lung in the default HU window [-1000, 400] -> [0, 1]: about -945..-580 HU (as train._lung_points)
LUNG_RANGE = (0.04, 0.3)


def _lung_context(image: np.ndarray, c: np.ndarray, r: float) -> float:
    """Fraction of aerated-lung voxels in a ring 1 to 4 voxels beyond 1.5 radii from the centre."""
    inner, outer = r * 1.5 + 1, r * 1.5 + 4
    half = int(np.ceil(outer)) + 1
    shape = np.array(image.shape)
    ci = np.clip(np.round(c).astype(int), 0, shape - 1)
    lo, hi = np.maximum(ci - half, 0), np.minimum(ci + half + 1, shape)
    crop = image[tuple(slice(a, b) for a, b in zip(lo, hi))]
    zz, yy, xx = np.meshgrid(*[np.arange(a, b) - cc for a, b, cc in zip(lo, hi, c)], indexing="ij")
    dist = np.sqrt(zz**2 + yy**2 + xx**2)
    ring = crop[(dist > inner) & (dist <= outer)]
    return float(((ring > LUNG_RANGE[0]) & (ring < LUNG_RANGE[1])).mean()) if ring.size else 0.0


def candidate_features(image: np.ndarray, centres: np.ndarray, scores: np.ndarray, diam: np.ndarray, spacing: float):
    """(N, N_FP_FEATURES): logit score, log diameter, core intensity, core-shell contrast, blobness,
    core standard deviation, lung context (see `_lung_context`)."""
    feats = np.zeros((len(scores), N_FP_FEATURES))
    shape = np.array(image.shape)
    for n, (c, s, d) in enumerate(zip(centres, scores, diam)):
        r = max(d / 2 / spacing, 1.0)
        half = int(np.ceil(2 * r)) + 2
        ci = np.clip(np.round(c).astype(int), 0, shape - 1)
        lo, hi = np.maximum(ci - half, 0), np.minimum(ci + half + 1, shape)
        crop = image[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float64)
        zz, yy, xx = np.meshgrid(*[np.arange(a, b) - cc for a, b, cc in zip(lo, hi, c)], indexing="ij")
        dist = np.sqrt(zz**2 + yy**2 + xx**2)
        core = crop[dist <= max(r * 0.6, 1.0)]
        shell = crop[(dist > r * 1.2) & (dist <= r * 1.2 + 2)]
        core_mean = float(core.mean()) if core.size else 0.0
        shell_mean = float(shell.mean()) if shell.size else core_mean
        padded = np.pad(crop, [(max(0, half - (ci[k] - lo[k])), max(0, half + 1 - (hi[k] - ci[k]))) for k in range(3)],
                        mode="edge")  # fmt: skip
        feats[n] = [
            np.log(s / max(1 - s, 1e-6)),
            np.log(max(d, 1.0)),
            core_mean,
            core_mean - shell_mean,
            _hessian_blobness(padded, max(r / np.sqrt(3), 0.7)),
            float(core.std()) if core.size else 0.0,
            _lung_context(image, c, r),
        ]
    return feats


def rescore(feats: np.ndarray, scores: np.ndarray, weights: np.ndarray, bias: float, fitted: bool) -> np.ndarray:
    """Final probabilities: the logistic FP model when fitted, else the detector's scores."""
    if not fitted or len(scores) == 0:
        return scores
    return 1.0 / (1.0 + np.exp(-(feats @ weights + bias)))


def calibrate(probs: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """Platt scaling: sigmoid(a * logit(p) + b) with (a, b) = `calibration` ((1, 0) leaves p unchanged)."""
    a, b = float(calibration[0]), float(calibration[1])
    if len(probs) == 0 or (a == 1.0 and b == 0.0):
        return probs
    p = np.clip(np.asarray(probs, np.float64), 1e-6, 1 - 1e-6)
    return 1.0 / (1.0 + np.exp(-(a * np.log(p / (1 - p)) + b)))


def fit_fp_model(feats: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Logistic regression (standardised, folded back into raw weights); None without both classes.

    C=0.1: the candidates come from the detector's own training scans, where it is more confident
    than on new scans; strong regularisation keeps the weights from over-trusting that (on held-out
    validation phantoms C=0.1 beat C=1 and C=10 for every feature set tried).
    """
    if len(labels) < 8 or labels.min() == labels.max():
        return None
    from sklearn.linear_model import LogisticRegression

    mean, std = feats.mean(0), feats.std(0) + 1e-6
    clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=1000).fit((feats - mean) / std, labels)
    w = clf.coef_[0] / std
    return w, float(clf.intercept_[0] - (w * mean).sum())
