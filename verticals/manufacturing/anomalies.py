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


def _intensity_blob(
    image: np.ndarray, rng: np.random.Generator, soft_max: float = 2.5
) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged brightness/colour change of 5-30 %: trains sensitivity to faint stains and dents.

    The edge's Gaussian blur is drawn in [0.5, `soft_max`] px (per 128 px of crop): a large
    `soft_max` adds diffuse stains whose edge is no sharper than the texture around it.
    """
    h, w = image.shape[:2]
    mask = perlin_mask((h, w), rng, 0.01, 0.2)
    alpha = cv2.GaussianBlur(mask, (0, 0), rng.uniform(0.5, soft_max) * max(1.0, w / 128))
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


def dominant_orientation(gray: np.ndarray, sigma: float = 1.0) -> tuple[float, float]:
    """(angle of the texture's lines in radians, x axis = 0, in [0, pi); coherence in [0, 1]).

    The structure tensor summed over the whole image: its main eigenvector is the direction of the
    strongest gradient, so the grain (brush marks, wood fibres) runs perpendicular to it. Coherence
    (l1 - l2) / (l1 + l2) is near 0 on isotropic textures, where "along the grain" means nothing.
    """
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), sigma)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    gradient_angle = 0.5 * np.arctan2(2 * jxy, jxx - jyy)
    coherence = np.hypot(jxx - jyy, 2 * jxy) / max(jxx + jyy, 1e-12)
    return float((gradient_angle + np.pi / 2) % np.pi), float(coherence)


def oriented_stroke(
    image: np.ndarray, rng: np.random.Generator, relation: str | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """A thin line (1-3 px) ALONG or ACROSS the part's dominant orientation, in the texture's own contrast.

    Why: thin scratches and missing fibres on brushed metal and wood run with or across the grain and
    differ from it by a few grey levels; random-angle strokes of random colour (`_scar`) teach the
    model to find strokes that stand out, not these. The stroke is filled with either a copy of the
    texture shifted across the line (a fibre out of place), the local mean (a fibre missing), or the
    part darkened/brightened by 4-20 %. Returns (image, mask, stroke angle in radians).
    """
    h, w = image.shape[:2]
    grain, _ = dominant_orientation(image.mean(-1))
    relation = relation or ("along" if rng.random() < 0.5 else "across")
    angle = grain + (np.pi / 2 if relation == "across" else 0.0) + float(rng.normal(0, 0.03))
    centre = rng.uniform(0.25, 0.75, 2) * (w, h)
    half = rng.uniform(0.2, 0.45) * min(h, w)
    d = np.array([np.cos(angle), np.sin(angle)]) * half
    mask = np.zeros((h, w), np.uint8)
    p0, p1 = (tuple(int(round(v)) for v in centre - d), tuple(int(round(v)) for v in centre + d))
    cv2.line(mask, p0, p1, 1, int(rng.integers(1, 4)))
    fill = rng.integers(3)
    if fill == 0:
        shift = np.array([-np.sin(angle), np.cos(angle)]) * rng.uniform(2, 6)
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        source = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    elif fill == 1:
        source = cv2.blur(image, (7, 7)) * rng.uniform(0.92, 1.0)
    else:
        source = image * (1 + rng.choice([-1, 1]) * rng.uniform(0.04, 0.2))
    alpha = mask.astype(np.float32)[..., None]
    return image * (1 - alpha) + source * alpha, mask.astype(np.float32), float(angle % np.pi)


def _oriented(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    out, mask, _ = oriented_stroke(image, rng)
    return out, mask


_KINDS = (_texture_blend, _intensity_blob, _scar, _self_patch, _oriented)
_BASE_WEIGHTS = np.array([0.35, 0.35, 0.15, 0.15, 0.0])


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
    image: np.ndarray,
    rng: np.random.Generator,
    matched_prob: float | None = None,
    oriented: float = 0.0,
    blob_soft: float = 2.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous image, float mask in {0,1}) from a good float RGB image; masks are never empty.

    With probability `matched_prob` (default: 0.8 on grey parts, 0.5 on coloured ones) the anomaly
    keeps the part's own colour and changes brightness/structure only (`luminance_only`). A fraction
    `oriented` of the anomalies are thin strokes along/across the grain (`oriented_stroke`);
    `blob_soft` is the intensity blobs' largest edge blur (`_intensity_blob`).
    """
    image = image.astype(np.float32)
    weights = _BASE_WEIGHTS * (1 - oriented)
    weights[-1] = oriented
    kind = _KINDS[int(rng.choice(len(_KINDS), p=weights / weights.sum()))]
    out, mask = _intensity_blob(image, rng, blob_soft) if kind is _intensity_blob else kind(image, rng)
    if matched_prob is None:
        matched_prob = 0.8 if is_achromatic(image) else 0.5
    if rng.random() < matched_prob:
        out = luminance_only(image, out)
    return np.clip(out, 0, 1).astype(np.float32), mask.astype(np.float32)
