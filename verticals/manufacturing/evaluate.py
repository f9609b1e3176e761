"""Inspection metrics, the same for the learned model and the classical baseline.

- image_auroc: ranking of parts by anomaly score (good vs defective), threshold-free.
- pixel_auroc: ranking of pixels by anomaly map against the ground-truth masks.
- aupro: area under the per-region-overlap curve up to 30 % false-positive rate, normalised to 1
  (Bergmann et al., MVTec AD, 2021): unlike pixel AUROC, a small defect counts as much as a big one.
- f1_image: F1 of the OK/NG decision at the threshold calibrated on good parts (what the line does).
- box_precision / box_recall: reported defect boxes against ground-truth regions (IoU >= cfg.box_iou).
- image_auroc_<kind>: good parts against each defect kind (e.g. stains, the low-contrast case).

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


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3, steps: int = 61) -> float:
    """Normalised area under PRO(FPR) for FPR in [0, max_fpr]; maps and masks are (N, H, W)."""
    import cv2

    good_pixels = maps[~masks]
    if good_pixels.size == 0 or not masks.any():
        return 0.0
    ids, values, sizes = [], [], []
    next_id = 0
    for m, heat in zip(masks, maps):
        if not m.any():
            continue
        count, labels = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            sel = labels == label
            values.append(heat[sel])
            ids.append(np.full(int(sel.sum()), next_id))
            sizes.append(int(sel.sum()))
            next_id += 1
    region_values = np.concatenate(values)
    region_ids = np.concatenate(ids)
    region_sizes = np.asarray(sizes, np.float64)
    fprs = np.linspace(0, max_fpr, steps)
    thresholds = np.quantile(good_pixels, 1 - fprs)
    pros = []
    for t in thresholds:
        hit = region_values >= t
        overlap = np.bincount(region_ids[hit], minlength=next_id) / region_sizes
        pros.append(overlap.mean())
    actual_fpr = np.array([(good_pixels >= t).mean() for t in thresholds])
    order = np.argsort(actual_fpr)
    x, y = np.clip(actual_fpr[order], 0, max_fpr), np.asarray(pros)[order]
    return float(np.trapezoid(y, x) / max_fpr)


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
    return out


def evaluate(model, data: InspectionData, cfg: InspectConfig) -> dict[str, float]:
    """Metrics of a model (torch module or ONNX Runtime wrapper) on a labelled test split."""
    scores, logits, thresholds = predict(model, data, cfg)
    maps, boxes = model_maps_and_boxes(scores, logits, thresholds, cfg)
    return metrics_from(scores, maps, thresholds[0], boxes, data, cfg)


__all__ = ["aupro", "evaluate", "metrics_from", "predict", "to_tensor"]
