"""The patch memory beside the segmenter: nearest-neighbour distance to good parts (PatchCore-style).

Why: on stochastic photographed textures (grass, gravel) the DRAEM-style segmenter, trained on
synthetic anomalies, also fires on normal texture and misses thin grey scratches and moved patches
of the same texture. A memory of what good parts look like, patch by patch, does not depend on how
the synthetic anomalies were drawn: a patch far from every good patch is anomalous. It is fit on the
training images after the network (nothing downloaded, nothing learned by gradient):

1. grey 5x5 patches of the normalised input at a quarter of `image_size` (`model.patch_features`);
2. greedy k-centre coreset (Sener & Savarese 2018, as PatchCore) down to `memory_size` patches;
3. on the held-out good parts: distance location (99th percentile) and scale (std), so the memory's
   logits are (d - loc) / scale, comparable across categories;
4. its weight against the segmenter, chosen from `memory_weights` on a VALIDATION set built from the
   held-out good parts and the same parts with synthetic anomalies (anomalies.py): the weight with
   the best mean of image and pixel AUROC. The test split is never seen.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from .anomalies import synthesize_anomaly
from .config import InspectConfig
from .data import InspectionData, to_tensor
from .model import DefectNet, patch_features


@torch.no_grad()
def _features(model: DefectNet, images: np.ndarray, batch: int = 8) -> torch.Tensor:
    device = model.memory.device
    out = []
    for i in range(0, len(images), batch):
        xn = model.normalise(to_tensor(images[i : i + batch]).to(device))
        if model.stride > 1:
            xn = F.avg_pool2d(xn, model.stride)
        out.append(patch_features(xn, model.memory_patch, model.memory_pool))
    return torch.cat(out)


def greedy_coreset(points: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """`size` rows of `points` chosen farthest-first: the memory covers rare good patches too."""
    if len(points) <= size:
        return torch.cat([points, points[torch.from_numpy(rng.integers(0, len(points), size - len(points)))]])
    chosen = [int(rng.integers(len(points)))]
    nearest = torch.cdist(points, points[chosen[0]][None]).squeeze(1)
    for _ in range(size - 1):
        nxt = int(torch.argmax(nearest))
        chosen.append(nxt)
        nearest = torch.minimum(nearest, torch.cdist(points, points[nxt][None]).squeeze(1))
    return points[torch.as_tensor(chosen)]


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if labels.min() != labels.max() else 0.5


@torch.no_grad()
def validation_set(
    holdout: InspectionData, seed: int, copies: int = 2, oriented: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8, labels, masks) = held-out good parts + `copies` synthetic-anomaly versions of each."""
    rng = np.random.default_rng([seed, 29])
    images, labels, masks = (
        [*holdout.images],
        [0] * len(holdout),
        [np.zeros(holdout.images.shape[1:3], bool)] * len(holdout),
    )
    for _ in range(copies):
        for img in holdout.images:
            bad, mask = synthesize_anomaly(img.astype(np.float32) / 255.0, rng, oriented=oriented)
            images.append(np.clip(bad * 255 + 0.5, 0, 255).astype(np.uint8))
            labels.append(1)
            masks.append(mask > 0.5)
    return np.stack(images), np.asarray(labels), np.stack(masks)


@torch.no_grad()
def fit_memory(
    model: DefectNet,
    train: InspectionData,
    holdout: InspectionData | None,
    cfg: InspectConfig,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Fill the model's memory from `train`, calibrate it and choose its weight on `holdout` (+ anomalies)."""
    if model.memory_size <= 0:
        return {}
    model.eval()
    rng = np.random.default_rng([seed, 31])
    feats = _features(model, train.images)
    points = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    if len(points) > 65536:  # bound the coreset's cost (O(points x size))
        points = points[torch.from_numpy(rng.choice(len(points), 65536, replace=False))]
    bank = greedy_coreset(points, model.memory_size, rng)
    model.memory.copy_(bank)
    model.memory_norm.copy_((bank * bank).sum(1))
    good = holdout if holdout is not None else train
    dist_good = torch.cat([_memory_z(model, good.images[i : i + 8], raw=True) for i in range(0, len(good), 8)])
    loc = float(torch.quantile(dist_good.flatten()[::3], 0.99))
    scale = max(float(dist_good.std()), 1e-3)
    model.memory_affine.copy_(torch.tensor([loc, scale, 0.0]))
    weights = [float(w) for w in str(cfg.memory_weights).split(",") if w.strip()]
    if holdout is None or len(weights) < 2:
        model.memory_affine[2] = weights[-1] if weights else 1.0
        return {"memory_weight": float(model.memory_affine[2])}
    images, labels, masks = (
        validation if validation is not None else validation_set(holdout, seed, oriented=cfg.oriented_anomalies)
    )
    seg_t = torch.cat(
        [model.segment(to_tensor(images[i : i + 8]).to(model.memory.device))[0] for i in range(0, len(images), 8)]
    )
    mem_t = _up_z(model, images, seg_t)  # the memory's logits at weight 1
    small_masks = F.adaptive_avg_pool2d(torch.from_numpy(masks).float()[:, None], seg_t.shape[-2:]).numpy() > 0.5
    results = {}
    for w in weights:
        fused = seg_t + w * mem_t
        image = _auroc(labels, model.image_score(fused).cpu().numpy())
        pixel = _auroc(small_masks.ravel(), torch.sigmoid(fused).cpu().numpy().ravel())
        results[w] = (image + pixel) / 2
    best = max(results, key=lambda w: (round(results[w], 4), -abs(w - 1.0)))
    model.memory_affine[2] = best
    out = {"memory_weight": best, "memory_loc": loc, "memory_scale": scale}
    out.update({f"val_auroc_w{w:g}": v for w, v in results.items()})
    return out


@torch.no_grad()
def _memory_z(model: DefectNet, images: np.ndarray, raw: bool = False) -> torch.Tensor:
    xn = model.normalise(to_tensor(images).to(model.memory.device))
    if model.stride > 1:
        xn = F.avg_pool2d(xn, model.stride)
    d = model.memory_distance(xn)
    return d if raw else ((d - model.memory_affine[0]) / model.memory_affine[1]).clamp_min(0)


@torch.no_grad()
def _up_z(model: DefectNet, images: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    z = torch.cat([_memory_z(model, images[i : i + 8]) for i in range(0, len(images), 8)])
    return F.interpolate(z, size=like.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def choose_blur(
    model: DefectNet, validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None, cfg: InspectConfig
) -> tuple[float, dict[str, float]]:
    """The map smoothing (from `blur_candidates`) with the best pixel AUROC on the validation set.

    Large soft defects (stains) want a wide Gaussian, thin ones a narrow one; the choice is made on
    held-out good parts + synthetic anomalies, never on the test split. Returns (sigma, report).
    """
    from .postprocess import smooth

    candidates = [float(v) for v in str(cfg.blur_candidates).split(",") if v.strip()]
    if validation is None or len(candidates) < 2:
        return cfg.blur_sigma, {}
    images, _, masks = validation
    model.eval()
    device = next(model.parameters()).device
    probs = []
    for i in range(0, len(images), 8):
        logits = model(to_tensor(images[i : i + 8]).to(device))[0]
        probs.extend(torch.sigmoid(logits[:, 0]).cpu().numpy())
    results = {}
    for sigma in candidates:
        maps = np.stack([smooth(p, sigma) for p in probs])
        results[sigma] = _auroc(masks.ravel(), maps.ravel())
    best = max(results, key=lambda s: (round(results[s], 4), -s))
    return best, {f"val_pixel_auroc_blur{s:g}": v for s, v in results.items()}
