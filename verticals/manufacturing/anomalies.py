"""Synthetic anomalies for training on good parts only (DRAEM, CutPaste-scar, intensity blobs).

Real defects are rare and unlabelled, so the model sees good parts with something foreign pasted in
and learns to segment "not like the rest of this part". The foreign material comes from photographs
that ship inside scikit-image and are NOT the inspected textures (astronaut, coffee, moon, cells...),
plus Perlin noise, so nothing is downloaded. Anomaly strength is drawn from a wide range down to
a few percent so the model also learns faint, low-contrast differences. These generators are
written independently of the test defects (data_adapters.synth.defects); they share only the
Perlin-noise primitive, as DRAEM's do with any Perlin-shaped real defect.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_adapters.synth.defects import perlin_mask, perlin_noise

_FOREIGN = ("astronaut", "coffee", "chelsea", "rocket", "moon", "camera", "immunohistochemistry", "hubble_deep_field")
_cache: list[np.ndarray] = []


def foreign_textures() -> list[np.ndarray]:
    """The foreign-material photographs as float RGB [0, 1] (loaded once per process)."""
    if not _cache:
        import skimage.data

        for name in _FOREIGN:
            img = getattr(skimage.data, name)().astype(np.float32) / 255.0
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=-1)
            _cache.append(np.ascontiguousarray(img[..., :3]))
    return _cache


def _foreign_patch(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of a foreign photograph, or Perlin noise colour field, the size of the image."""
    h, w = shape
    if rng.random() < 0.25:
        noise = perlin_noise((h, w), (int(rng.integers(2, 9)),) * 2, rng)
        colour = rng.uniform(0.2, 0.9, 3).astype(np.float32)
        return np.clip(colour * (1 + 0.5 * noise[..., None]), 0, 1)
    src = foreign_textures()[int(rng.integers(len(foreign_textures())))]
    side = int(min(src.shape[:2]) * rng.uniform(0.2, 0.6))
    y = int(rng.integers(0, src.shape[0] - side + 1))
    x = int(rng.integers(0, src.shape[1] - side + 1))
    patch = cv2.resize(src[y : y + side, x : x + side], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        patch = np.clip((patch - patch.mean()) * rng.uniform(0.5, 2.0) + rng.uniform(0.2, 0.8), 0, 1)
    return patch


def _texture_blend(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM: a Perlin-shaped region blended with foreign material at opacity beta."""
    mask = perlin_mask(image.shape[:2], rng, 0.003, 0.15)
    beta = rng.uniform(0.15, 1.0)
    alpha = mask[..., None] * beta
    return image * (1 - alpha) + _foreign_patch(image.shape[:2], rng) * alpha, mask


def _intensity_blob(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged brightness/colour change of 5-30 %: trains sensitivity to faint stains and dents."""
    h, w = image.shape[:2]
    mask = perlin_mask((h, w), rng, 0.01, 0.2)
    alpha = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.5, 2.5) * max(1.0, w / 128))
    gain = 1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.3) * rng.uniform(0.7, 1.0, 3).astype(np.float32)
    out = image * (1 + alpha[..., None] * (gain - 1))
    return out, (alpha > 0.5).astype(np.float32)


def _scar(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste-scar style thin strokes of random colour and length."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        p0 = rng.uniform(0.1, 0.9, 2) * (w, h)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.1, 0.5) * w
        p1 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
        thickness = int(rng.integers(1, max(2, w // 64) + 1))
        cv2.line(mask, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1, thickness)
    colour = rng.uniform(0, 1, 3).astype(np.float32)
    alpha = mask.astype(np.float32)[..., None] * rng.uniform(0.4, 1.0)
    return image * (1 - alpha) + colour * alpha, mask.astype(np.float32)


def _self_patch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A jittered patch of the same part moved elsewhere: breaks structure without foreign colours."""
    h, w = image.shape[:2]
    ph, pw = (rng.uniform(0.05, 0.25, 2) * (h, w)).astype(int) + 2
    sy, sx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    ty, tx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    patch = image[sy : sy + ph, sx : sx + pw] * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    if rng.random() < 0.5:
        patch = patch[::-1, ::-1]
    out = image.copy()
    out[ty : ty + ph, tx : tx + pw] = patch
    mask = np.zeros((h, w), np.float32)
    mask[ty : ty + ph, tx : tx + pw] = 1
    return out, mask


_KINDS = (_texture_blend, _intensity_blob, _scar, _self_patch)
_WEIGHTS = np.array([0.35, 0.35, 0.15, 0.15])


def is_achromatic(image: np.ndarray, tolerance: float = 0.03) -> bool:
    """True for a grey part (photographed texture, grey metal): its channels differ only by noise."""
    return float(np.abs(image - image.mean(-1, keepdims=True)).mean()) < tolerance


def luminance_only(image: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    """Keep the anomaly's brightness change but the part's own colour (and its sensor noise).

    Foreign photographs, random stroke colours and per-channel gains carry chroma; on a grey part
    that is a shortcut (anything coloured is a defect) and the model then misses grey scratches and
    moved patches (measured on grass: scratch image AUROC 0.40, cut-paste 0.73). Matching the
    anomaly to the part's colour statistics forces it to learn structure and brightness.
    """
    lum_in = image.mean(-1, keepdims=True)
    lum_out = anomalous.mean(-1, keepdims=True)
    return image + (lum_out - lum_in) * np.where(lum_in > 1e-3, image / np.maximum(lum_in, 1e-3), 1.0)


def synthesize_anomaly(
    image: np.ndarray, rng: np.random.Generator, matched_prob: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous image, float mask in {0,1}) from a good float RGB image; masks are never empty.

    With probability `matched_prob` (default: 0.8 on grey parts, 0.5 on coloured ones) the anomaly
    keeps the part's own colour and changes brightness/structure only (`luminance_only`).
    """
    image = image.astype(np.float32)
    kind = _KINDS[int(rng.choice(len(_KINDS), p=_WEIGHTS))]
    out, mask = kind(image, rng)
    if matched_prob is None:
        matched_prob = 0.8 if is_achromatic(image) else 0.5
    if rng.random() < matched_prob:
        out = luminance_only(image, out)
    return np.clip(out, 0, 1).astype(np.float32), mask.astype(np.float32)
