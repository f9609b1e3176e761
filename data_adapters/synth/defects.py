"""Defects painted onto good parts, each with its exact pixel mask.

The kinds mirror what inspection lines reject and what the anomaly-detection literature uses to
test models: scratches and cracks (thin, long), holes and spots (compact, high contrast), stains
(large, soft-edged, LOW contrast: the hard case for template matching), Perlin-noise patches of a
foreign material (DRAEM, Zavrtanik et al. 2021), cut-paste patches (CutPaste, Li et al. 2021) and
missing threads in woven fabric. Every function takes a float RGB image in [0, 1] and returns
(defective image, mask) with mask uint8 {0, 255}.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

DEFECT_KINDS = ("scratch", "crack", "hole", "stain", "perlin", "cutpaste", "missing_thread")


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2D gradient (Perlin) noise in about [-1, 1]; `res` is the number of lattice cells per axis."""
    h, w = shape
    ry, rx = res
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    ys = np.linspace(0, ry, h, endpoint=False)
    xs = np.linspace(0, rx, w, endpoint=False)
    yi, xi = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - yi)[:, None], (xs - xi)[None, :]

    def dot(oy: int, ox: int) -> np.ndarray:
        cy, cx = yi[:, None] + oy, xi[None, :] + ox
        return gy[cy, cx] * (fy - oy) + gx[cy, cx] * (fx - ox)

    fade_y = 6 * fy**5 - 15 * fy**4 + 10 * fy**3
    fade_x = 6 * fx**5 - 15 * fx**4 + 10 * fx**3
    top = dot(0, 0) + fade_x * (dot(0, 1) - dot(0, 0))
    bottom = dot(1, 0) + fade_x * (dot(1, 1) - dot(1, 0))
    return (np.sqrt(2) * (top + fade_y * (bottom - top))).astype(np.float32)


def perlin_mask(
    shape: tuple[int, int], rng: np.random.Generator, min_frac: float = 0.005, max_frac: float = 0.12
) -> np.ndarray:
    """A blob-shaped binary mask from thresholded Perlin noise, covering a bounded area fraction."""
    for _ in range(20):
        scale = int(2 ** rng.integers(1, 4))
        noise = perlin_noise(shape, (scale, scale), rng)
        threshold = rng.uniform(0.35, 0.6)
        mask = noise > threshold
        if min_frac <= mask.mean() <= max_frac:
            return mask.astype(np.float32)
    # a fallback ellipse keeps the contract "a mask is never empty"
    return _ellipse_mask(shape, rng, 0.05, 0.12).astype(np.float32)


def _ellipse_mask(shape: tuple[int, int], rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    h, w = shape
    center = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
    axes = (max(2, int(rng.uniform(lo, hi) * w)), max(2, int(rng.uniform(lo, hi) * h)))
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def _random_path(shape: tuple[int, int], rng: np.random.Generator, length: float, wiggle: float) -> np.ndarray:
    """Points of a gently curving polyline of about `length` pixels inside the image."""
    h, w = shape
    start = rng.uniform(0.15, 0.85, 2) * (w, h)
    angle = rng.uniform(0, 2 * np.pi)
    steps = 12
    points = [start]
    for _ in range(steps):
        angle += rng.normal(0, wiggle)
        step = np.array([np.cos(angle), np.sin(angle)]) * length / steps
        points.append(np.clip(points[-1] + step, 2, (w - 3, h - 3)))
    return np.round(np.array(points)).astype(np.int32)


def _blend(image: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> np.ndarray:
    return (image * (1 - alpha[..., None]) + target * alpha[..., None]).astype(np.float32)


def scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin bright or dark line, as from a tool slipping over the surface."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    thickness = max(1, round(w / 128))
    cv2.polylines(mask, [_random_path((h, w), rng, rng.uniform(0.25, 0.6) * w, 0.05)], False, 1, thickness)
    shade = 0.92 if rng.random() < 0.5 else 0.12
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6) * 0.8
    return _blend(image, alpha, np.full_like(image, shade)), _to_mask(mask)


def crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, jagged, branching line."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    path = _random_path((h, w), rng, rng.uniform(0.2, 0.45) * w, 0.6)
    cv2.polylines(mask, [path], False, 1, max(1, round(w / 100)))
    branch_at = path[len(path) // 2]
    branch = _random_path((h, w), rng, 0.12 * w, 0.6)
    branch = branch - branch[0] + branch_at
    cv2.polylines(mask, [np.clip(branch, 0, (w - 1, h - 1)).astype(np.int32)], False, 1, max(1, round(w / 160)))
    return _blend(image, mask.astype(np.float32) * 0.85, np.zeros_like(image)), _to_mask(mask)


def hole(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small round hole (dark core, light rim) or a coloured spot."""
    h, w = image.shape[:2]
    mask = _ellipse_mask((h, w), rng, 0.02, 0.05)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    if rng.random() < 0.5:
        target = np.full_like(image, 0.05)
    else:
        target = np.broadcast_to(rng.uniform(0.1, 0.9, 3).astype(np.float32), image.shape)
    return _blend(image, alpha, target), _to_mask(mask)


def stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A large, soft, low-contrast stain: a 8-14 % darkening or tint that a template barely sees."""
    h, w = image.shape[:2]
    blob = perlin_mask((h, w), rng, 0.02, 0.15) if rng.random() < 0.5 else _ellipse_mask((h, w), rng, 0.08, 0.18)
    alpha = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), max(1.0, w / 64))
    strength = rng.uniform(0.08, 0.14) * (1 if rng.random() < 0.7 else -1)
    tint = np.array([1.0, 1.0, 1.0], np.float32) - strength * rng.uniform(0.6, 1.0, 3).astype(np.float32)
    stained = image * (1 - alpha[..., None] * (1 - tint))
    return np.clip(stained, 0, 1).astype(np.float32), _to_mask(alpha > 0.5)


def perlin_patch(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM's anomaly: a Perlin-shaped region replaced by a blend with a foreign texture."""
    h, w = image.shape[:2]
    mask = perlin_mask((h, w), rng, 0.01, 0.1)
    if source is None:
        noise = perlin_noise((h, w), (8, 8), rng)
        source = np.stack([0.5 + 0.4 * noise * rng.uniform(0.5, 1)] * 3, axis=-1) * rng.uniform(0.6, 1.2, 3)
    beta = rng.uniform(0.5, 0.9)
    return np.clip(_blend(image, mask * beta, source), 0, 1).astype(np.float32), _to_mask(mask > 0)


def cutpaste(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste: a rectangle of this same part, colour-jittered and rotated, pasted elsewhere."""
    h, w = image.shape[:2]
    ph, pw = (rng.uniform(0.08, 0.2, 2) * (h, w)).astype(int) + 2
    sy, sx = rng.integers(0, h - ph), rng.integers(0, w - pw)
    patch = image[sy : sy + ph, sx : sx + pw].copy()
    if rng.random() < 0.5:
        patch = np.rot90(patch).copy()
    patch = np.clip(patch * rng.uniform(0.75, 1.25) + rng.uniform(-0.08, 0.08), 0, 1)
    ph, pw = patch.shape[:2]
    ty, tx = rng.integers(0, h - ph), rng.integers(0, w - pw)
    out = image.copy()
    out[ty : ty + ph, tx : tx + pw] = patch
    mask = np.zeros((h, w), np.uint8)
    mask[ty : ty + ph, tx : tx + pw] = 1
    return out.astype(np.float32), _to_mask(mask)


def missing_thread(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A woven thread absent over part of its length: a darker gap band along x or y."""
    h, w = image.shape[:2]
    band = max(2, w // 40)
    mask = np.zeros((h, w), np.uint8)
    start = rng.integers(0, w // 3)
    stop = min(w, start + int(rng.uniform(0.4, 0.8) * w))
    at = rng.integers(band, h - 2 * band)
    if rng.random() < 0.5:
        mask[at : at + band, start:stop] = 1
    else:
        mask[start:stop, at : at + band] = 1
    alpha = mask.astype(np.float32) * 0.75
    return _blend(image, alpha, np.full_like(image, 0.15)), _to_mask(mask)


def _to_mask(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask) > 0).astype(np.uint8) * 255


DEFECTS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": scratch,
    "crack": crack,
    "hole": hole,
    "stain": stain,
    "perlin": perlin_patch,
    "cutpaste": cutpaste,
    "missing_thread": missing_thread,
}


def kinds_for(category: str) -> tuple[str, ...]:
    """Defect kinds that make sense on a category (threads exist only in woven fabric)."""
    return tuple(k for k in DEFECT_KINDS if k != "missing_thread" or category == "fabric")


def add_defect(kind: str, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply defect `kind`; the mask is guaranteed non-empty."""
    out, mask = DEFECTS[kind](image, rng)
    if not mask.any():  # a degenerate draw (e.g. a stain too faint to pass 0.5): retry once with new randomness
        out, mask = DEFECTS[kind](image, rng)
    return out, mask
