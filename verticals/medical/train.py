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

from common.progress import log, track
from common.task import FitContext, added_loss, fit_optimizer, fit_schedule
from verticals.medical import postprocess
from verticals.medical.data import MedicalData
from verticals.medical.infer import detect_case, hits, torch_runner
from verticals.medical.preprocess import Case


def sample_patch(
    case: Case, cfg, rng: np.random.Generator, positive: bool, size: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A patch of `size` voxels (default (P,P,P)), its nodule centres (patch voxels) and diameters;
    zero-padded at borders."""
    p = np.array(size if size is not None else (cfg.patch,) * 3)
    shape = np.array(case.image.shape)
    if positive and len(case.diameters):
        centre = case.nodules_vox[rng.integers(len(case.diameters))]
        start = np.round(centre - rng.uniform(0.2 * p, 0.8 * p)).astype(int)
    elif rng.random() < 0.5 and len(lung := _lung_points(case)):
        # half the negatives centre on lung tissue, where the vessels that mimic nodules are
        start = np.round(lung[rng.integers(len(lung))] - rng.uniform(0.3 * p, 0.7 * p)).astype(int)
    else:
        start = np.array(
            [rng.integers(-q // 4, max(int(s) - 3 * q // 4, -q // 4 + 1)) for s, q in zip(shape, p.tolist())]
        )
    patch = np.zeros(tuple(p), np.float32)
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


def augment(patch, centres, rng: np.random.Generator, cfg=None):
    """Random flips on each axis and an in-plane transpose (centres move with the voxels), then (with
    `cfg`) the tissues' HU levels and the parenchyma's texture, then the acquisition randomised (see
    `randomise_tissue`, `randomise_texture`, `acquisition`)."""
    p = patch.shape[0]
    centres = centres.copy()
    for axis in range(3):
        if rng.random() < 0.5:
            patch = np.flip(patch, axis)
            centres[:, axis] = (p - 1) - centres[:, axis]
    if rng.random() < 0.5:
        patch = patch.transpose(0, 2, 1)
        centres = centres[:, [0, 2, 1]]
    patch = np.ascontiguousarray(patch)
    if cfg is not None:
        patch = randomise_tissue(patch, rng, cfg.aug_tissue_hu, cfg.hu_min, cfg.hu_max)
        patch = randomise_texture(patch, rng, cfg.aug_texture_hu, cfg.hu_min, cfg.hu_max)
    return acquisition(patch, rng), centres


def sample_scaled_patch(
    case: Case, cfg, rng: np.random.Generator, positive: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`sample_patch` seen through a random per-axis zoom in `cfg.aug_scale`, resampled to (P,P,P).

    Why: ct_phantom.py draws round nodules of 4-30 mm and vessels of one calibre law; a zoom of
    0.75-1.35 shows the detector nodules of 3-40 mm, ellipsoids (the axes zoom independently by up to
    +-12 % around the common factor) and other vessel calibres. Centres follow the voxels; the
    diameter target scales by the geometric mean of the three zooms.
    """
    from scipy import ndimage

    p = cfg.patch
    lo, hi = getattr(cfg, "aug_scale", (1.0, 1.0))
    if lo == hi == 1.0:
        return sample_patch(case, cfg, rng, positive)
    zoom = rng.uniform(lo, hi) * rng.uniform(0.88, 1.12, 3)
    size = tuple(int(max(round((p - 1) / z) + 1, 4)) for z in zoom)
    patch, centres, diam = sample_patch(case, cfg, rng, positive, size)
    factors = np.array([(p - 1) / (q - 1) for q in size])  # ndimage.zoom maps voxel 0 and q-1 onto 0 and p-1
    patch = ndimage.zoom(patch, p / np.array(size), order=1, mode="nearest", grid_mode=False)
    return patch.astype(np.float32), centres * factors, diam * float(np.prod(factors) ** (1 / 3))


# HU knots of the tissue map: air, aerated lung, dense lung, ground glass, soft tissue, bone
_TISSUE_KNOTS = np.array([-1000.0, -900.0, -800.0, -650.0, -450.0, -100.0, 50.0, 400.0])


def randomise_tissue(
    patch: np.ndarray, rng: np.random.Generator, std_hu: float, hu_min: float, hu_max: float
) -> np.ndarray:
    """Move each tissue's HU level independently: a monotone piecewise-linear map of HU (80 % of patches).

    Why: the phantoms paint lung at -860 HU and solid nodules at -20..60 HU, so a detector can key on
    those exact levels and their exact contrast; real lungs are -900..-750 HU by inspiration and age,
    nodules -100..+100 HU, ground glass anywhere in -750..-300. The map keeps the order of tissues
    (monotone), moves every interior knot by N(0, std_hu) and leaves air and the window ends fixed.
    """
    if std_hu <= 0 or rng.random() >= 0.8:
        return patch
    out_knots = _TISSUE_KNOTS + np.concatenate([[0.0], rng.normal(0, std_hu, len(_TISSUE_KNOTS) - 2), [0.0]])
    out_knots = np.maximum.accumulate(np.maximum(out_knots, _TISSUE_KNOTS[0]))  # monotone, above air
    span = hu_max - hu_min
    x = (_TISSUE_KNOTS - hu_min) / span
    y = (out_knots - hu_min) / span
    return np.clip(np.interp(patch, x, y), 0.0, 1.0).astype(np.float32)


def randomise_texture(
    patch: np.ndarray, rng: np.random.Generator, max_hu: float, hu_min: float, hu_max: float
) -> np.ndarray:
    """Add a smooth random texture (correlation 1.4-4 mm on the 2 mm grid) to aerated lung (70 % of patches).

    Why: ct_phantom.py's parenchyma is flat -860 HU plus white noise; real parenchyma has small
    vessels, lobular structure and mottling a detector must learn to ignore. Only voxels below -500 HU
    get it (fading in between -500 and -650 HU), so nodules, vessels and the wall keep their shape.
    """
    from scipy import ndimage

    if max_hu <= 0 or rng.random() >= 0.7:
        return patch
    field = ndimage.gaussian_filter(rng.normal(0, 1, patch.shape).astype(np.float32), rng.uniform(0.7, 2.0))
    field /= max(float(field.std()), 1e-6)
    hu = patch * np.float32(hu_max - hu_min) + np.float32(hu_min)
    weight = np.clip((-500.0 - hu) / 150.0, 0.0, 1.0)
    amplitude = rng.uniform(0.2, 1.0) * max_hu / (hu_max - hu_min)
    return np.clip(patch + field * weight * np.float32(amplitude), 0.0, 1.0).astype(np.float32)


def fade_nodules(
    patch: np.ndarray,
    centres: np.ndarray,
    diam_vox: np.ndarray,
    rng: np.random.Generator,
    prob: float,
    hu_min: float,
    hu_max: float,
) -> np.ndarray:
    """Turn some nodules of a patch into faint subsolid ones: contrast to the lung around them cut to
    15-70 % at the centre and half that at the edge, half of them keeping a solid core of 20-50 % of
    the radius (each nodule with probability `prob`).

    Why: ct_phantom.py's subsolid nodules are uniform balls of -650..-450 HU with a sharp edge, the
    part-solid ones with a solid core of 55 % of the radius at their centre; a second generator's
    part-solid and ground-glass nodules of 5-16 mm with centres of -650..-340 HU and soft edges never
    fired (README, "Where the held-out recall is lost"). Fading a nodule the network already knows
    shows it faint ones at every size, at the same place and with the same target.
    `diam_vox` are diameters in patch voxels; the background level is the median of the lung-density
    voxels in a shell around the nodule (aerated lung, -860 HU, when there are none).
    """
    if prob <= 0 or not len(centres):
        return patch
    span = hu_max - hu_min
    lung_max = (-500.0 - hu_min) / span
    out = patch.copy()
    shape = np.array(patch.shape)
    for c, d in zip(centres, diam_vox):
        if rng.random() >= prob:
            continue
        r = max(float(d) / 2, 1.0)
        residual, core = rng.uniform(0.15, 0.7), (rng.uniform(0.2, 0.5) if rng.random() < 0.5 else 0.0)
        reach = int(np.ceil(1.25 * r + 3))
        lo = np.maximum(np.floor(c).astype(int) - reach, 0)
        hi = np.minimum(np.floor(c).astype(int) + reach + 1, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        dist = np.sqrt(sum((g - float(ci)) ** 2 for g, ci in zip(grid, c)))
        region = out[box]
        shell = region[(dist > 1.25 * r) & (region < lung_max)]
        background = float(np.median(shell)) if shell.size >= 8 else (-860.0 - hu_min) / span
        # kept share of the excess: `residual` at the centre falling to half of it at the edge (a soft,
        # dome-like profile), back to 1 between r and 1.25 r (vessels outside the nodule stay)
        kept = residual * (1.0 - 0.5 * np.minimum(dist / r, 1.0) ** 2)
        weight = np.clip((1.25 * r - dist) / (0.25 * r), 0.0, 1.0)
        if core > 0:
            weight = weight * np.clip((dist - core * r) / max(0.2 * r, 0.5), 0.0, 1.0)
        excess = np.maximum(region - background, 0.0)
        out[box] = region - (weight * (1.0 - kept) * excess).astype(np.float32)
    return out


def _linear_weights(pos: np.ndarray, n: int) -> np.ndarray:
    """(len(pos), n) matrix of linear interpolation weights at fractional positions `pos` of n samples."""
    lo = np.clip(np.floor(pos).astype(int), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    w = np.zeros((len(pos), n))
    np.add.at(w, (np.arange(len(pos)), lo), 1 - frac)
    np.add.at(w, (np.arange(len(pos)), hi), frac)
    return w


def acquisition(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Domain randomisation of what the phantoms fix: slice thickness, kernel, noise, HU scale and offset.

    Why: the phantoms have 2.3-2.8 mm slices, one PSF and white noise; real chest CT comes with
    0.625-5 mm slices, soft to sharp kernels and correlated noise. On the detector's 2 mm grid:
    - thick slices (half the patches): the patch is sampled along z every f = 1.25-3 voxels (a 2.5-6 mm
      slice after the box average of its thickness) and linearly interpolated back, as the
      preprocessing does with a real thick-slice series;
    - kernel (a third): in-plane Gaussian blur of 0.3-0.8 voxels;
    - noise (half): Gaussian noise of 7-45 HU, correlated over ~1 voxel half the time;
    - intensity: gain 0.9-1.1 and an offset of about +-14 HU (as before).
    """
    from scipy import ndimage

    p = patch.shape[0]
    if rng.random() < 0.5:
        f = rng.uniform(1.25, 3.0)
        thick = ndimage.uniform_filter1d(patch, size=max(int(round(f)), 1), axis=0, mode="nearest")
        n = max(int(round((p - 1) / f)) + 1, 2)
        pos = np.clip(np.linspace(0, p - 1, n) + rng.uniform(-0.5, 0.5) * (p - 1) / (n - 1), 0, p - 1)
        # sample the slices at `pos`, then interpolate them back onto the grid: one (p, p) linear map on z
        back = _linear_weights(np.interp(np.arange(p), pos, np.arange(n)), n) @ _linear_weights(pos, p)
        patch = np.tensordot(back.astype(np.float32), thick, axes=(1, 0))
    if rng.random() < 1 / 3:
        patch = ndimage.gaussian_filter(patch, (0, *[rng.uniform(0.3, 0.8)] * 2))
    if rng.random() < 0.5:
        noise = rng.normal(0, 1, patch.shape).astype(np.float32)
        if rng.random() < 0.5:
            noise = ndimage.gaussian_filter(noise, 0.7)
            noise /= max(float(noise.std()), 1e-6)
        patch = patch + noise * np.float32(rng.uniform(0.005, 0.032))
    gain = rng.uniform(0.9, 1.1)
    return np.clip(patch * gain + rng.normal(0, 0.01), 0.0, 1.0).astype(np.float32)


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
    for epoch in track(range(n_epochs), "medical: training epochs", total=n_epochs):
        losses = []
        for _ in range(cfg.steps_per_epoch):
            xs, heats, regs, masks = [], [], [], []
            for _ in range(cfg.batch_size):
                positive = bool(has_pos) and rng.random() < cfg.positive_fraction
                case = has_pos[rng.integers(len(has_pos))] if positive else cases[rng.integers(len(cases))]
                patch, centres, diam = sample_scaled_patch(case, cfg, rng, positive)
                fade = getattr(cfg, "aug_nodule_fade", 0.0)
                if fade > 0:
                    diam_vox = diam / float(np.mean(case.spacing_zyx))
                    patch = fade_nodules(patch, centres, diam_vox, rng, fade, cfg.hu_min, cfg.hu_max)
                patch, centres = augment(patch, centres, rng, cfg)
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
        if (epoch + 1) * 10 // n_epochs != epoch * 10 // n_epochs:  # the loss at each ~10 % of training
            log(f"medical: epoch {epoch + 1}/{n_epochs} loss {last:.4f}")
    model.eval()
    return {"loss": last, "steps": float(n_epochs * cfg.steps_per_epoch)}


def fit(model, data: MedicalData, cfg, *, epochs=None, context: FitContext | None = None) -> dict[str, float]:
    """The whole training of one site: the detector, then (when `cfg.fp_reduction`) its FP stage, both on
    all but a held-out share of the scans, on which the final probabilities are then calibrated."""
    from verticals.medical.calibrate import fit_calibration, split_for_calibration

    train, held_out = split_for_calibration(data.cases, cfg.calibration_fraction)
    metrics = fit_detector(model, train, cfg, epochs=epochs, context=context)
    if cfg.fp_reduction:
        metrics.update(fit_fp_reduction(model, train, cfg))
    if held_out:
        metrics.update(fit_calibration(model, held_out, cfg))
    return metrics


def fit_fp_reduction(model, cases: list[Case], cfg) -> dict[str, float]:
    """Fit the logistic FP stage into the model's buffers from its candidates on the training cases.

    Candidates are labelled by the LUNA16 hit rule (closer to a nodule's centre than its radius).
    """
    runner = torch_runner(model)
    model.eval()
    feats, labels = [], []
    for case in cases:
        found = detect_case(case, runner, cfg, report_all=True, masses=False, extra_scales=False)
        if not len(found["score"]):
            continue
        feats.append(found["features"])
        labels.append(hits(case, found["xyz"]).astype(int))
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
