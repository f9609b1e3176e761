"""Defect-free product surfaces: procedural materials and the texture photographs in scikit-image.

An inspection model must learn "normal" for one product line, so each category here is a family
of images that differ only the way real parts do: a small shift, a brightness change, sensor noise.
A `Lighting` (one per site) changes gain, colour cast and an illumination gradient, which is what
differs between factories that make the same part; it is what makes federated sites heterogeneous.

Images are float32 RGB in [0, 1], shape (H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PROCEDURAL = ("metal", "fabric", "wood", "tile")
PHOTO = ("brick", "grass", "gravel")
CATEGORIES = PROCEDURAL + PHOTO


@dataclass(frozen=True)
class Lighting:
    """How one production line lights its parts."""

    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gradient: float = 0.0  # relative brightness change across the image
    angle: float = 0.0  # direction of the gradient, radians

    @staticmethod
    def for_site(site: int) -> Lighting:
        """Site 0 is neutral; later sites get warmer/cooler casts and stronger side light."""
        if site == 0:
            return Lighting()
        rng = np.random.default_rng(7919 * site)
        tint = tuple(float(v) for v in 1.0 + rng.uniform(-0.08, 0.08, 3))
        return Lighting(
            gain=float(rng.uniform(0.85, 1.1)),
            tint=tint,  # type: ignore[arg-type]
            gradient=float(rng.uniform(0.05, 0.2)),
            angle=float(rng.uniform(0, 2 * np.pi)),
        )


def _smooth_noise(rng: np.random.Generator, size: int, sigma_x: float, sigma_y: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT)
    return noise / (noise.std() + 1e-6)


def _metal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed metal: fine streaks along x, a soft sheen, bluish grey."""
    streaks = _smooth_noise(rng, size, sigma_x=size / 6, sigma_y=0.7)
    sheen = _smooth_noise(rng, size, sigma_x=size / 3, sigma_y=size / 3)
    gray = 0.55 + 0.035 * streaks + 0.03 * sheen
    return np.stack([gray * 0.97, gray, gray * 1.04], axis=-1)


def _fabric(rng: np.random.Generator, size: int, period: float | None = None) -> np.ndarray:
    """Plain-weave fabric: warp and weft threads of a fixed pitch, over/under alternating."""
    period = period or size / 24
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase_x, phase_y = rng.uniform(0, period, 2)
    u = (xx + phase_x) / period
    v = (yy + phase_y) / period
    warp = np.abs(np.sin(np.pi * u)) ** 0.6
    weft = np.abs(np.sin(np.pi * v)) ** 0.6
    over = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    threads = over * warp + (1 - over) * weft
    gray = 0.3 + 0.45 * threads + 0.02 * _smooth_noise(rng, size, 2, 2)
    return np.stack([gray * 0.9, gray * 0.95, gray * 1.05], axis=-1)


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wood grain: growth rings distorted by low-frequency noise, warm brown."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    warp = _smooth_noise(rng, size, size / 8, size / 8)
    rings = np.sin(2 * np.pi * (9 * yy + 0.35 * warp + rng.uniform(0, 1)) + 0.5 * np.sin(3 * xx))
    fibre = _smooth_noise(rng, size, sigma_x=size / 10, sigma_y=0.8)
    gray = 0.5 + 0.09 * rings + 0.03 * fibre
    return np.stack([gray * 1.15, gray * 0.85, gray * 0.55], axis=-1)


def _tile(rng: np.random.Generator, size: int) -> np.ndarray:
    """Ceramic tiles in a grid with grout lines and slight per-tile shade differences."""
    pitch = size / 4
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ox, oy = rng.uniform(0, pitch, 2)
    gx = (xx + ox) % pitch
    gy = (yy + oy) % pitch
    grout = ((gx < 4) | (gy < 4)).astype(np.float32)
    tile_id = np.floor((xx + ox) / pitch) * 7 + np.floor((yy + oy) / pitch) * 13
    shade = 0.02 * np.sin(tile_id * 1.7)
    speckle = 0.02 * _smooth_noise(rng, size, 1.2, 1.2)
    gray = (0.72 + shade + speckle) * (1 - grout) + 0.35 * grout
    gray = cv2.GaussianBlur(gray, (0, 0), 0.8)
    return np.stack([gray * 1.02, gray, gray * 0.93], axis=-1)


_PHOTO_CACHE: dict[str, np.ndarray] = {}


def photo_texture(name: str) -> np.ndarray:
    """A scikit-image texture photograph (ships inside the wheel: nothing is downloaded) in [0, 1]."""
    if name not in _PHOTO_CACHE:
        import skimage.data

        _PHOTO_CACHE[name] = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return _PHOTO_CACHE[name]


def _photo(rng: np.random.Generator, size: int, name: str) -> np.ndarray:
    """A crop of the photograph at a small random offset (the per-part shift), resized to `size`."""
    src = photo_texture(name)
    crop = int(src.shape[0] * 0.8)
    y, x = rng.integers(0, src.shape[0] - crop + 1, 2)
    patch = cv2.resize(src[y : y + crop, x : x + crop], (size, size), interpolation=cv2.INTER_AREA)
    return np.stack([patch] * 3, axis=-1)


def render_surface(category: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One defect-free part of `category`, before lighting and sensor noise."""
    if category == "metal":
        return _metal(rng, size)
    if category == "fabric":
        return _fabric(rng, size)
    if category == "wood":
        return _wood(rng, size)
    if category == "tile":
        return _tile(rng, size)
    if category in PHOTO:
        return _photo(rng, size, category)
    raise ValueError(f"unknown surface category '{category}' (known: {', '.join(CATEGORIES)})")


def apply_lighting(image: np.ndarray, lighting: Lighting, rng: np.random.Generator, noise: float = 0.012) -> np.ndarray:
    """Site lighting, then the per-part brightness jitter and sensor noise; clipped to [0, 1]."""
    size_y, size_x = image.shape[:2]
    yy, xx = np.mgrid[0:size_y, 0:size_x].astype(np.float32)
    ramp = (np.cos(lighting.angle) * xx / size_x + np.sin(lighting.angle) * yy / size_y) - 0.5
    light = lighting.gain * (1 + lighting.gradient * ramp) * rng.uniform(0.95, 1.05)
    out = image * light[..., None] * np.asarray(lighting.tint, dtype=np.float32)
    out = out + rng.normal(0, noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


def good_part(category: str, rng: np.random.Generator, size: int, lighting: Lighting | None = None) -> np.ndarray:
    """A complete defect-free image as a camera on the line would see it."""
    return apply_lighting(render_surface(category, rng, size), lighting or Lighting(), rng)
