"""Inspection metrics, the same for the learned model and the classical baseline.

- image_auroc: ranking of parts by anomaly score (good vs defective), threshold-free.
- pixel_auroc: ranking of pixels by anomaly map against the ground-truth masks.
- aupro: area under the per-region-overlap curve up to 30 % false-positive rate, normalised to 1,
  exactly as MVTec's reference evaluation (Bergmann et al., IJCV 2021): unlike pixel AUROC, a small
  defect counts as much as a big one.
- f1_image: F1 of the OK/NG decision at the threshold calibrated on good parts (what the line does).
- box_precision / box_recall: reported defect boxes against ground-truth regions (IoU >= cfg.box_iou).
- image_auroc_<kind>: good parts against each defect kind (e.g. stains, the low-contrast case);
  pixel_auroc_<kind>, aupro_<kind>: the same two pixel metrics on the good parts + that kind only.

`evaluate` only calls `model.eval()` and `model(x)`, so it also scores an ONNX Runtime wrapper.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

from .config import InspectConfig
from .data import InspectionData, to_tensor
from .postprocess import box_iou, decide, mask_boxes


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC, or NaN-free 0.5 when only one class is present (tiny sets)."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return 0.5
    return float(roc_auc_score(labels, scores))


@torch.no_grad()
def predict(model, data: InspectionData, cfg: InspectConfig) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(image scores (N,), map logits (N, S, S), (image threshold, pixel threshold)) from the model."""
    model.eval()
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    scores, logits, thresholds = [], [], None
    for batch in data.batches(cfg.infer_batch):
        out_logits, out_score, out_thresholds = model(batch.to(device))
        scores.append(out_score.float().cpu().numpy())
        logits.append(out_logits[:, 0].float().cpu().numpy())
        thresholds = out_thresholds[0].float().cpu().numpy()
    return np.concatenate(scores), np.concatenate(logits), (float(thresholds[0]), float(thresholds[1]))


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct anomaly score, from (0, 0) to (1, 1), as MVTec's reference code builds it.

    Every ground-truth region (8-connected component of a mask) weighs the same whatever its size:
    lowering the threshold past a pixel adds 1/|region| / n_regions to the PRO if the pixel is in a
    region, and 1/n_ok to the FPR if it is defect-free. Pixels are swept from the highest score down;
    tied scores enter together (one curve point per distinct score). Good images belong in `maps`
    with empty masks: their pixels count towards the FPR.
    """
    from scipy import ndimage

    masks = np.asarray(masks, bool)
    fp_step = (~masks).astype(np.float64)
    pro_step = np.zeros(masks.shape, np.float64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), int))
        if count:
            sizes = np.bincount(labels.ravel())
            pro_step[i][mask] = 1.0 / sizes[labels[mask]]
        n_regions += count
    n_ok = float(fp_step.sum())
    if n_regions == 0 or n_ok == 0:
        raise ValueError("PRO needs at least one defect region and one defect-free pixel")
    scores = np.asarray(maps, np.float64).ravel()
    order = np.argsort(-scores, kind="stable")
    fpr = np.cumsum(fp_step.ravel()[order]) / n_ok
    pro = np.cumsum(pro_step.ravel()[order]) / n_regions
    last_of_tie = np.append(np.diff(scores[order]) != 0, True)
    fpr, pro = np.minimum(fpr[last_of_tie], 1.0), np.minimum(pro[last_of_tie], 1.0)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], pro, [1.0]])


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) for x in [0, x_max]; y at x_max interpolated between its neighbours.

    `x` is non-decreasing (a curve may rise vertically at one x: the last point there counts).
    """
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max:
        nxt = int(np.flatnonzero(~inside)[0])
        y_end = ys[-1] + (y[nxt] - ys[-1]) * (x_max - xs[-1]) / (x[nxt] - xs[-1])
        xs, ys = np.append(xs, x_max), np.append(ys, y_end)
    return float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3) -> float:
    """Area under PRO(FPR) for FPR in [0, max_fpr], divided by max_fpr (MVTec AD's AU-PRO; 0 if undefined).

    Exact, as MVTec's evaluation code (Bergmann et al., IJCV 2021) computes it: every distinct score
    is a threshold, no sampling of FPRs. tests/test_aupro.py checks it against a threshold-by-threshold
    implementation.
    """
    masks = np.asarray(masks, bool)
    if not masks.any() or masks.all():
        return 0.0
    fpr, pro = pro_curve(maps, masks)
    return area_up_to(fpr, pro, max_fpr) / max_fpr


def box_scores(
    boxes: list[list[tuple[int, int, int, int]]], data: InspectionData, cfg: InspectConfig
) -> tuple[float, float]:
    """Box precision and recall over every test image whose mask is known (boxes per image)."""
    predicted = matched_pred = total_gt = matched_gt = 0
    for i in np.flatnonzero(data.has_mask):
        pred = boxes[i]
        truth = mask_boxes(data.masks[i])
        predicted += len(pred)
        total_gt += len(truth)
        matched_pred += sum(any(box_iou(p, t) >= cfg.box_iou for t in truth) for p in pred)
        matched_gt += sum(any(box_iou(p, t) >= cfg.box_iou for p in pred) for t in truth)
    precision = matched_pred / predicted if predicted else 1.0
    recall = matched_gt / total_gt if total_gt else 1.0
    return float(precision), float(recall)


def model_maps_and_boxes(
    scores: np.ndarray, logits: np.ndarray, thresholds: tuple[float, float], cfg: InspectConfig
) -> tuple[np.ndarray, list[list[tuple[int, int, int, int]]]]:
    """Smoothed probability maps and the post-processed defect boxes of the model's outputs."""
    maps, boxes = [], []
    for score, lg in zip(scores, logits):
        verdict = decide(lg, float(score), thresholds, cfg)
        maps.append(verdict.heatmap)
        boxes.append([(d.x, d.y, d.w, d.h) for d in verdict.defects])
    return np.stack(maps), boxes


def metrics_from(
    scores: np.ndarray,
    maps: np.ndarray,
    image_threshold: float,
    boxes: list[list[tuple[int, int, int, int]]],
    data: InspectionData,
    cfg: InspectConfig,
) -> dict[str, float]:
    """All metrics from image scores, anomaly maps and boxes (any inspector), headline first."""
    labels = data.labels
    known = data.has_mask
    pixel_truth = data.masks[known]
    pixel_maps = maps[known]
    out = {"image_auroc": _auroc(labels, scores)}
    out["pixel_auroc"] = _auroc(pixel_truth.ravel().astype(np.int8), pixel_maps.ravel())
    out["aupro"] = aupro(pixel_maps, pixel_truth)
    predicted = (scores > image_threshold).astype(int)
    out["f1_image"] = float(f1_score(labels, predicted, zero_division=0.0))
    if labels.min() != labels.max():
        precision, recall, _ = precision_recall_curve(labels, scores)
        out["f1_image_best"] = float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))
    out["box_precision"], out["box_recall"] = box_scores(boxes, data, cfg)
    kinds = np.asarray(data.kinds)
    for kind in sorted(set(data.kinds) - {"good"}):
        sel = (kinds == "good") | (kinds == kind)
        out[f"image_auroc_{kind}"] = _auroc(labels[sel], scores[sel])
        with_mask = sel & known
        if data.masks[with_mask].any():  # per kind, pixels of the good parts and of that kind only
            out[f"pixel_auroc_{kind}"] = _auroc(data.masks[with_mask].ravel().astype(np.int8), maps[with_mask].ravel())
            out[f"aupro_{kind}"] = aupro(maps[with_mask], data.masks[with_mask])
    return out


def evaluate(model, data: InspectionData, cfg: InspectConfig) -> dict[str, float]:
    """Metrics of a model (torch module or ONNX Runtime wrapper) on a labelled test split."""
    scores, logits, thresholds = predict(model, data, cfg)
    maps, boxes = model_maps_and_boxes(scores, logits, thresholds, cfg)
    return metrics_from(scores, maps, thresholds[0], boxes, data, cfg)


__all__ = ["aupro", "evaluate", "metrics_from", "predict", "pro_curve", "to_tensor"]
