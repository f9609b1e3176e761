"""Training on good parts only, then calibrating the thresholds the line will run with.

Each step draws random crops of good images, pastes synthetic anomalies into most of them
(anomalies.py), and trains the reconstruction branch to return the clean crop and the segmenter to
find the pasted region (focal + soft Dice loss, as in DRAEM). After training, the thresholds are
set on held-out good images: the image threshold to a target false-reject rate, the pixel threshold
to a target false-positive pixel rate. They are stored as buffers in the model.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from common.device import select_device
from common.progress import track
from common.task import FitContext, added_loss, fit_optimizer, fit_schedule

from .anomalies import synthesize_anomaly
from .config import InspectConfig
from .data import InspectionData, split_holdout, to_tensor
from .memory import choose_blur, fit_memory, validation_set
from .model import DefectNet


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al., 2017): defects are a few percent of pixels; easy background is down-weighted."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean() * 10.0


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice over the images that hold an anomaly (good crops have nothing to overlap)."""
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    has = tgt.sum(1) > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    inter = (prob * tgt).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.sum(1) + tgt.sum(1) + 1)
    return dice[has].mean()


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up (BatchNorm statistics settle first), then cosine decay to 5 %."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def _batch(images: np.ndarray, cfg: InspectConfig, rng: np.random.Generator):
    """Random crops (+ horizontal flips and brightness jitter), anomalies pasted into some of them."""
    size = images.shape[1]
    crop = min(cfg.crop, size)
    clean, dirty, masks = [], [], []
    for _ in range(cfg.batch_size):
        img = images[int(rng.integers(len(images)))]
        y, x = (int(v) for v in rng.integers(0, size - crop + 1, 2))
        part = img[y : y + crop, x : x + crop].astype(np.float32) / 255.0
        if rng.random() < 0.5:
            part = part[:, ::-1]
        part = np.clip(part * rng.uniform(0.95, 1.05), 0, 1).astype(np.float32)
        if rng.random() < cfg.anomaly_prob:
            bad, mask = synthesize_anomaly(part, rng, oriented=cfg.oriented_anomalies, blob_soft=cfg.blob_soft)
        else:
            bad, mask = part, np.zeros(part.shape[:2], np.float32)
        clean.append(part)
        dirty.append(bad)
        masks.append(mask)
    as_t = lambda arrs: torch.from_numpy(np.ascontiguousarray(np.stack(arrs))).permute(0, 3, 1, 2)  # noqa: E731
    return as_t(clean), as_t(dirty), torch.from_numpy(np.stack(masks))[:, None]


@torch.no_grad()
def set_normalisation(model: DefectNet, images: np.ndarray) -> None:
    """Per-channel mean/std of the good images, kept in the model's buffers."""
    flat = images.reshape(-1, 3).astype(np.float64) / 255.0
    model.mean.copy_(torch.tensor(flat.mean(0), dtype=torch.float32).view(1, 3, 1, 1))
    model.std.copy_(torch.tensor(np.maximum(flat.std(0), 0.02), dtype=torch.float32).view(1, 3, 1, 1))
    if model.grain_input is not None:  # the grain-residual maps in units of their spread on good parts
        device = model.mean.device
        x = model.normalise(to_tensor(images[:32]).to(device))
        maps = model.grain_input(F.avg_pool2d(x, model.stride) if model.stride > 1 else x)
        std = maps.transpose(0, 1).flatten(1).std(1).clamp_min(1e-4)
        model.grain_input_scale.copy_(std.view(1, -1, 1, 1))


def fit(
    model: DefectNet,
    data: InspectionData,
    cfg: InspectConfig,
    *,
    epochs: int | None = None,
    context: FitContext | None = None,
) -> dict[str, float]:
    """Train in place on `data` (good images), then calibrate thresholds on its held-out part."""
    device = select_device()
    model.to(device)
    train, holdout = split_holdout(data, cfg.holdout)
    if float(model.calibrated) == 0.0:
        set_normalisation(model, train.images)
    steps = (epochs if epochs is not None else cfg.epochs) * cfg.steps_per_epoch
    rng = np.random.default_rng([cfg.seed, len(data), int(model.calibrated.item() * 7)])
    opt = fit_optimizer(
        context, lambda: torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    )
    sched = fit_schedule(
        context,
        lambda total: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, max(1, total // 10), total)),
        max(steps, 1),
    )
    model.train()
    start = time.perf_counter()
    totals = {"loss": 0.0, "seg_loss": 0.0, "recon_loss": 0.0}
    done = 0
    for _ in track(range(steps), "manufacturing: training", total=steps):
        clean, dirty, mask = (t.to(device) for t in _batch(train.images, cfg, rng))
        logits, _, recon = model.segment(dirty)
        target = F.adaptive_avg_pool2d(mask, logits.shape[-2:])
        target = (target > 0.5).float()
        seg = focal_loss(logits, target) + dice_loss(logits, target)
        loss = seg
        rec = torch.zeros((), device=device)
        if recon is not None:
            clean_small = F.adaptive_avg_pool2d(model.normalise(clean), recon.shape[-2:])
            rec = F.mse_loss(recon, clean_small)
            loss = loss + cfg.recon_weight * rec
        if context is not None and (context.proximal is not None or context.extra_loss is not None):
            outputs = (F.interpolate(logits, size=dirty.shape[-2:], mode="bilinear"), model.image_score(logits))
            loss = loss + added_loss(model, (dirty,), outputs, context)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        totals["loss"] += loss.item()
        totals["seg_loss"] += seg.item()
        totals["recon_loss"] += rec.item()
        done += 1
        if cfg.max_train_seconds > 0 and time.perf_counter() - start > cfg.max_train_seconds:
            break
    metrics = {k: v / max(done, 1) for k, v in totals.items()}
    metrics["train_seconds"] = time.perf_counter() - start
    metrics["train_steps"] = float(done)
    seed = cfg.seed
    choosing = cfg.memory_size > 0 or cfg.grain or "," in str(cfg.blur_candidates)
    validation = None
    if holdout is not None and choosing:
        validation = validation_set(holdout, seed, oriented=cfg.oriented_anomalies, blob_soft=cfg.blob_soft)
    metrics.update(fit_memory(model, train, holdout, cfg, seed, validation))
    sigma, report = choose_blur(model, validation, cfg)
    metrics.update(report)
    metrics.update(calibrate(model, holdout if holdout is not None else train, replace(cfg, blur_sigma=sigma)))
    metrics["blur_sigma"] = sigma  # api.train stores it in the model directory's config
    return metrics


@torch.no_grad()
def good_maps(model: DefectNet, data: InspectionData, cfg: InspectConfig) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and defect-probability maps (N, S, S) of `data` under `model` (eval mode)."""
    from .postprocess import smooth

    model.eval()
    device = next(model.parameters()).device
    scores, maps = [], []
    for i in range(0, len(data), cfg.infer_batch):
        logits, score, _ = model(to_tensor(data.images[i : i + cfg.infer_batch]).to(device))
        scores.append(score.cpu().numpy())
        prob = torch.sigmoid(logits[:, 0]).cpu().numpy()
        maps.extend(smooth(p, cfg.blur_sigma) for p in prob)
    return np.concatenate(scores), np.stack(maps)


@torch.no_grad()
def calibrate(model: DefectNet, good: InspectionData, cfg: InspectConfig) -> dict[str, float]:
    """Set image and pixel thresholds from good parts the model did not train on."""
    scores, maps = good_maps(model, good, cfg)
    image_t = float(np.quantile(scores, 1 - cfg.target_frr))
    pixel_t = max(float(np.quantile(maps, 1 - cfg.pixel_fpr)), cfg.min_pixel_threshold)
    model.image_threshold.fill_(image_t)
    model.pixel_threshold.fill_(min(pixel_t, 0.99))
    model.calibrated.fill_(1.0)
    return {"image_threshold": image_t, "pixel_threshold": float(model.pixel_threshold)}
