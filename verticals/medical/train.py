"""Patch training of the centre-heatmap detector, then fitting its false-positive reduction stage.

Why patches: whole chest volumes do not fit a CPU batch, and nodules are rare; sampling patches
that contain a nodule with probability `positive_fraction` balances the classes. Targets follow
CenterNet (Zhou et al., 2019): a Gaussian per nodule (sigma from its radius) on the stride-2 grid,
penalty-reduced focal loss for the heatmap, L1 on offset and log-diameter at the centre voxels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from common.progress import log
from common.task import FitContext, added_loss, fit_optimizer, fit_schedule
from verticals.medical import postprocess
from verticals.medical.data import MedicalData
from verticals.medical.infer import detect_case, torch_runner
from verticals.medical.preprocess import Case


def sample_patch(
    case: Case, cfg, rng: np.random.Generator, positive: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (P,P,P) patch, its nodule centres (patch voxels) and diameters; zero-padded at borders."""
    p = cfg.patch
    shape = np.array(case.image.shape)
    if positive and len(case.diameters):
        centre = case.nodules_vox[rng.integers(len(case.diameters))]
        start = np.round(centre - rng.uniform(0.2 * p, 0.8 * p, 3)).astype(int)
    elif rng.random() < 0.5 and len(lung := _lung_points(case)):
        # half the negatives centre on lung tissue, where the vessels that mimic nodules are
        start = np.round(lung[rng.integers(len(lung))] - rng.uniform(0.3 * p, 0.7 * p, 3)).astype(int)
    else:
        start = np.array([rng.integers(-p // 4, max(int(s) - 3 * p // 4, -p // 4 + 1)) for s in shape])
    patch = np.zeros((p, p, p), np.float32)
    lo, hi = np.maximum(start, 0), np.minimum(start + p, shape)
    if np.all(hi > lo):
        patch[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))] = case.image[
            tuple(slice(a, b) for a, b in zip(lo, hi))
        ]
    centres = case.nodules_vox - start if len(case.diameters) else np.zeros((0, 3))
    return patch, centres, case.diameters.copy()


def _lung_points(case: Case) -> np.ndarray:
    """Voxels (every 4th per axis) with aerated-lung density, cached on the case."""
    cached = getattr(case, "_lung_points", None)
    if cached is None:
        sub = case.image[::4, ::4, ::4]
        cached = np.argwhere((sub > 0.04) & (sub < 0.3)) * 4  # about -950..-580 HU in the default window
        case._lung_points = cached
    return cached


def augment(patch, centres, rng: np.random.Generator):
    """Random flips on each axis and an in-plane transpose; centres move with the voxels."""
    p = patch.shape[0]
    centres = centres.copy()
    for axis in range(3):
        if rng.random() < 0.5:
            patch = np.flip(patch, axis)
            centres[:, axis] = (p - 1) - centres[:, axis]
    if rng.random() < 0.5:
        patch = patch.transpose(0, 2, 1)
        centres = centres[:, [0, 2, 1]]
    gain = rng.uniform(0.9, 1.1)
    return np.ascontiguousarray(patch * gain + rng.normal(0, 0.01)), centres


def make_targets(centres: np.ndarray, diameters: np.ndarray, cfg, spacing_mm: float) -> dict[str, np.ndarray]:
    """Heatmap (1,S,S,S), regression targets (4,S,S,S) and their mask on the stride-2 grid."""
    s = cfg.patch // cfg.stride
    heat = np.zeros((s, s, s), np.float32)
    reg = np.zeros((4, s, s, s), np.float32)
    mask = np.zeros((s, s, s), np.float32)
    grid = np.arange(s, dtype=np.float32)
    for c_in, d in zip(centres, diameters):
        c = c_in / cfg.stride
        o = np.round(c).astype(int)
        if np.any(o < -2) or np.any(o > s + 1):
            continue
        sigma = max(cfg.heatmap_sigma_scale * (d / 2) / (spacing_mm * cfg.stride), cfg.min_sigma_vox)
        gz, gy, gx = (np.exp(-((grid - c[k]) ** 2) / (2 * sigma**2)) for k in range(3))
        heat = np.maximum(heat, gz[:, None, None] * gy[None, :, None] * gx[None, None, :])
        if np.all(o >= 0) and np.all(o < s):
            heat[tuple(o)] = 1.0
            reg[:3, o[0], o[1], o[2]] = c - o
            reg[3, o[0], o[1], o[2]] = math.log(d)
            mask[tuple(o)] = 1.0
    return {"heat": heat[None], "reg": reg, "mask": mask[None]}


def detection_loss(out: torch.Tensor, heat: torch.Tensor, reg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet focal loss on the heatmap + L1 on offset/log-diameter at nodule centres."""
    logits = out[:, :1]
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = -(torch.log(prob) * (1 - prob) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - prob) * prob**2 * (1 - heat) ** 4 * (1 - pos)).sum()
    n_pos = pos.sum().clamp(min=1.0)
    n_mask = mask.sum().clamp(min=1.0)
    reg_loss = (F.l1_loss(out[:, 1:], reg, reduction="none") * mask).sum() / n_mask
    return (pos_loss + neg_loss) / n_pos + reg_loss


def fit_detector(model, cases: list[Case], cfg, *, epochs=None, context: FitContext | None = None, device=None):
    """Train `model` in place on patches from `cases`; returns {"loss": mean of the last epoch, ...}."""
    from common.device import select_device

    device = device or select_device()
    model.to(device).train()
    rng = np.random.default_rng(cfg.seed)
    opt = fit_optimizer(
        context, lambda: torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    )
    n_epochs = epochs if epochs is not None else cfg.epochs
    total_steps = max(n_epochs * cfg.steps_per_epoch, 1)
    sched = fit_schedule(
        context,
        lambda total: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15),
        total_steps,
    )
    has_pos = [c for c in cases if len(c.diameters)]
    last = float("nan")
    for epoch in range(n_epochs):
        losses = []
        for _ in range(cfg.steps_per_epoch):
            xs, heats, regs, masks = [], [], [], []
            for _ in range(cfg.batch_size):
                positive = bool(has_pos) and rng.random() < cfg.positive_fraction
                case = has_pos[rng.integers(len(has_pos))] if positive else cases[rng.integers(len(cases))]
                patch, centres, diam = sample_patch(case, cfg, rng, positive)
                patch, centres = augment(patch, centres, rng)
                t = make_targets(centres, diam, cfg, float(np.mean(case.spacing_zyx)))
                xs.append(patch[None])
                heats.append(t["heat"])
                regs.append(t["reg"])
                masks.append(t["mask"])
            x = torch.from_numpy(np.stack(xs)).to(device)
            out = model(x)
            loss = detection_loss(out, *(torch.from_numpy(np.stack(v)).to(device) for v in (heats, regs, masks)))
            loss = loss + added_loss(model, (x,), out, context)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        last = float(np.mean(losses))
        log(f"medical: epoch {epoch + 1}/{n_epochs} loss {last:.4f}")
    model.eval()
    return {"loss": last, "steps": float(n_epochs * cfg.steps_per_epoch)}


def fit(model, data: MedicalData, cfg, *, epochs=None, context: FitContext | None = None) -> dict[str, float]:
    """The whole training of one site: the detector, then (when `cfg.fp_reduction`) its FP stage."""
    metrics = fit_detector(model, data.cases, cfg, epochs=epochs, context=context)
    if cfg.fp_reduction:
        metrics.update(fit_fp_reduction(model, data.cases, cfg))
    return metrics


def fit_fp_reduction(model, cases: list[Case], cfg) -> dict[str, float]:
    """Fit the logistic FP stage into the model's buffers from its candidates on the training cases.

    Candidates are labelled by the LUNA16 hit rule (closer to a nodule's centre than its radius).
    """
    runner = torch_runner(model)
    model.eval()
    feats, labels = [], []
    for case in cases:
        found = detect_case(case, runner, cfg)
        if not len(found["score"]):
            continue
        nod_xyz = case.to_world(case.nodules_vox) if len(case.diameters) else np.zeros((0, 3))
        dist = np.linalg.norm(found["xyz"][:, None] - nod_xyz[None], axis=-1) if len(case.diameters) else None
        hit = (dist < case.diameters[None] / 2).any(1) if dist is not None else np.zeros(len(found["score"]), bool)
        feats.append(found["features"])
        labels.append(hit.astype(int))
    if not feats:
        return {"fp_fitted": 0.0}
    fitted = postprocess.fit_fp_model(np.concatenate(feats), np.concatenate(labels))
    with torch.no_grad():
        if fitted is None:
            model.fp_fitted.fill_(0.0)
        else:
            model.fp_weights.copy_(torch.as_tensor(fitted[0], dtype=model.fp_weights.dtype))
            model.fp_bias.fill_(fitted[1])
            model.fp_fitted.fill_(1.0)
    return {"fp_fitted": float(fitted is not None), "fp_train_candidates": float(sum(len(v) for v in labels))}
