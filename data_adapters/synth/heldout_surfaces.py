"""A second, independent inspection-data generator, kept aside as a check (never used for tuning).

Why a second generator: a model tuned on `surfaces.py` + `defects.py` can learn the quirks of that
one renderer (its stroke shading, its blob shapes). This file is written apart from those two (no
shared texture or defect code) with other materials and other defect renderers, so a figure on it
says something about surfaces the model was not tuned to. Directional textures carry their grain
angle, and the thin defects (scratch, thin line) are drawn ALONG or ACROSS it at low contrast, as
on real brushed metal and wood, where they are hardest to see.

Surfaces: brushed and machined (turned) metal, wood grain, leather, painted and cast surfaces.
Defects: crack, hole, stain, scratch, thin_line (a missing fibre / grain line). MVTec AD layout:
DIR/train/good, DIR/test/good, DIR/test/<kind>, DIR/ground_truth/<kind>/<name>_mask.png.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from common.atomic import atomic_path
from data_adapters.synth.inspection import SCALES, Scale, _write_png

HELDOUT_SURFACES = ("brushed", "machined", "wood", "leather", "painted", "cast")
# real photographs shipped inside scikit-image (CC0, from cc0textures.com / DeviantArt), as good parts
PHOTO_SURFACES = ("photo-brick", "photo-grass", "photo-gravel")
HELDOUT_KINDS = ("crack", "hole", "stain", "scratch", "thin_line")


def _band_noise(rng: np.random.Generator, size: int, lo: float, hi: float) -> np.ndarray:
    """Band-pass noise (difference of box-filtered noise), zero mean, unit std."""
    n = rng.standard_normal((size, size)).astype(np.float32)
    a = cv2.blur(n, (max(1, int(lo)),) * 2)
    b = cv2.blur(n, (max(1, int(hi)),) * 2)
    out = a - b
    return out / (out.std() + 1e-6)


def _motion(noise: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Smear `noise` along `angle` (radians, image x axis = 0) with a line kernel: grain."""
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    d = np.array([np.cos(angle), np.sin(angle)]) * c
    cv2.line(k, (int(round(c - d[0])), int(round(c - d[1]))), (int(round(c + d[0])), int(round(c + d[1]))), 1.0, 1)
    out = cv2.filter2D(noise, -1, k / k.sum(), borderType=cv2.BORDER_WRAP)
    return out / (out.std() + 1e-6)


def _brushed(rng: np.random.Generator, s: int) -> tuple[np.ndarray, float]:
    angle = float(rng.normal(0, 0.04))
    grain = _motion(rng.standard_normal((s, s)).astype(np.float32), max(9, s // 3) | 1, angle)
    sheen = cv2.resize(rng.standard_normal((3, 3)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    g = 0.62 + 0.045 * grain + 0.025 * sheen
    return np.stack([g, g * 1.01, g * 1.03], -1), angle


def _machined(rng: np.random.Generator, s: int) -> tuple[np.ndarray, float]:
    """Turned face: fine tool marks on circles around a centre well off the image (nearly straight arcs)."""
    cy, cx = rng.uniform(-3.0, -2.0) * s, rng.uniform(0.3, 0.7) * s
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    pitch = s / rng.uniform(40, 55)
    marks = np.sin(2 * np.pi * r / pitch + rng.uniform(0, 6.28)) + 0.4 * _band_noise(rng, s, 1, 4)
    g = 0.55 + 0.03 * marks
    # the marks' local direction at the centre of the image is tangent to the circle
    angle = float(np.arctan2(s / 2 - cy, s / 2 - cx) + np.pi / 2)
    return np.stack([g * 1.02, g, g * 0.98], -1), angle


def _wood(rng: np.random.Generator, s: int) -> tuple[np.ndarray, float]:
    """Plank grain: wavy stripes along y's normal, warped by smooth noise, plus fibre streaks."""
    angle = float(rng.normal(0, 0.08))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    warp = cv2.resize(rng.standard_normal((4, 4)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    rings = np.sin(2 * np.pi * (across / (s / rng.uniform(9, 14)) + 0.6 * warp))
    fibre = _motion(rng.standard_normal((s, s)).astype(np.float32), max(9, s // 4) | 1, angle)
    t = 0.5 + 0.18 * np.sign(rings) * np.abs(rings) ** 0.5 + 0.05 * fibre
    base = np.array([0.62, 0.43, 0.26], np.float32)
    return np.clip(t[..., None] * base * 1.5, 0, 1), angle


def _leather(rng: np.random.Generator, s: int) -> tuple[np.ndarray, None]:
    """Pebbled grain: shallow creases where band-pass noise crosses zero, over soft mottling."""
    n = _band_noise(rng, s, 2, max(4, s // 20))
    crease = np.exp(-(n**2) / 0.08)
    mottle = _band_noise(rng, s, s // 16, s // 4)
    g = 0.42 - 0.05 * crease + 0.02 * mottle
    return np.stack([g * 1.1, g * 0.85, g * 0.7], -1), None


def _painted(rng: np.random.Generator, s: int) -> tuple[np.ndarray, None]:
    """Sprayed paint: flat colour with a faint orange-peel ripple."""
    colour = np.array([0.16, 0.34, 0.58], np.float32) * rng.uniform(0.97, 1.03)  # one product: one colour
    peel = _band_noise(rng, s, 2, max(6, s // 12))
    return np.clip(colour * (1 + 0.025 * peel[..., None]), 0, 1), None


def _cast(rng: np.random.Generator, s: int) -> tuple[np.ndarray, None]:
    """Sand-cast iron: coarse grit at two scales, dull dark grey."""
    grit = _band_noise(rng, s, 1, 3) + 0.6 * _band_noise(rng, s, 3, 9)
    g = 0.38 + 0.035 * grit
    return np.stack([g, g, g * 1.02], -1), None


def _photo(name: str) -> Callable[[np.random.Generator, int], tuple[np.ndarray, None]]:
    """Good parts as random crops (side 1.5x the output, resized) of one real photograph."""

    def render(rng: np.random.Generator, s: int) -> tuple[np.ndarray, None]:
        import skimage.data

        src = getattr(skimage.data, name)().astype(np.float32) / 255.0
        side = min(min(src.shape[:2]) - 1, int(1.5 * s))
        y, x = (int(v) for v in rng.integers(0, np.array(src.shape[:2]) - side + 1))
        crop = cv2.resize(src[y : y + side, x : x + side], (s, s), interpolation=cv2.INTER_AREA)
        return np.repeat(crop[..., None], 3, -1) if crop.ndim == 2 else crop[..., :3], None

    return render


_SURFACE: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, float | None]]] = {
    "brushed": _brushed,
    "machined": _machined,
    "wood": _wood,
    "leather": _leather,
    "painted": _painted,
    "cast": _cast,
} | {name: _photo(name.split("-", 1)[1]) for name in PHOTO_SURFACES}


def heldout_part(surface: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, float | None]:
    """(float RGB [0,1] good part, grain angle or None) with per-part exposure and sensor noise."""
    image, angle = _SURFACE[surface](rng, size)
    image = image * rng.uniform(0.93, 1.07) + rng.normal(0, 0.008, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), angle


# ---- defects (own renderers; mask True where the part is defective) ----


def _line_mask(s: int, p0: np.ndarray, p1: np.ndarray, width: int, bend: float) -> np.ndarray:
    mid = (p0 + p1) / 2 + bend * np.array([-(p1 - p0)[1], (p1 - p0)[0]])
    ts = np.linspace(0, 1, 16)[:, None]
    pts = ((1 - ts) ** 2 * p0 + 2 * ts * (1 - ts) * mid + ts**2 * p1).round().astype(np.int32)
    m = np.zeros((s, s), np.uint8)
    cv2.polylines(m, [pts], False, 1, width, lineType=cv2.LINE_8)
    return m.astype(bool)


def _stroke_ends(s: int, rng: np.random.Generator, angle: float, frac: tuple[float, float]) -> tuple:
    c = rng.uniform(0.3, 0.7, 2) * s
    half = rng.uniform(*frac) * s / 2
    d = np.array([np.cos(angle), np.sin(angle)]) * half
    return np.clip(c - d, 1, s - 2), np.clip(c + d, 1, s - 2)


def _stroke_angle(grain: float | None, rng: np.random.Generator) -> float:
    """Along the grain (p = 0.5) or across it (+- 90 deg, with a little play); any angle without grain."""
    if grain is None:
        return float(rng.uniform(0, np.pi))
    return grain + (0.0 if rng.random() < 0.5 else np.pi / 2) + float(rng.normal(0, 0.06))


def _scratch(img: np.ndarray, grain: float | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shallow tool scratch: 1-2 px, 6-15 % brighter (burnished) or darker, slightly curved."""
    s = img.shape[0]
    p0, p1 = _stroke_ends(s, rng, _stroke_angle(grain, rng), (0.3, 0.7))
    mask = _line_mask(s, p0, p1, int(rng.integers(1, 3)), rng.normal(0, 0.05))
    delta = rng.uniform(0.06, 0.15) * (1 if rng.random() < 0.6 else -1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.5)
    return np.clip(img * (1 + delta * soft[..., None]), 0, 1), mask


def _thin_line(img: np.ndarray, grain: float | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A missing fibre: along a 1-2 px line the fine texture is gone (locally averaged) and 4-10 % darker."""
    s = img.shape[0]
    p0, p1 = _stroke_ends(s, rng, _stroke_angle(grain, rng), (0.4, 0.8))
    mask = _line_mask(s, p0, p1, int(rng.integers(1, 3)), rng.normal(0, 0.02))
    flat = cv2.blur(img, (7, 7)) * (1 - rng.uniform(0.04, 0.10))
    a = mask.astype(np.float32)[..., None]
    return img * (1 - a) + flat * a, mask


def _crack(img: np.ndarray, grain: float | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A branching random-walk fracture, dark, 1 px with a 2 px trunk."""
    s = img.shape[0]
    mask = np.zeros((s, s), np.uint8)
    pos, heading = rng.uniform(0.3, 0.7, 2) * s, rng.uniform(0, 2 * np.pi)
    pts = [pos.copy()]
    for _ in range(int(s * rng.uniform(0.25, 0.45) / 3)):
        heading += rng.normal(0, 0.45)
        pos = np.clip(pos + 3 * np.array([np.cos(heading), np.sin(heading)]), 1, s - 2)
        pts.append(pos.copy())
    trunk = np.array(pts).round().astype(np.int32)
    cv2.polylines(mask, [trunk], False, 1, 2)
    start = trunk[len(trunk) // 3]
    arm = [start + 3 * k * np.array([np.cos(heading + 1.0), np.sin(heading + 1.0)]) for k in range(6)]
    cv2.polylines(mask, [np.clip(np.array(arm), 1, s - 2).round().astype(np.int32)], False, 1, 1)
    m = mask.astype(bool)
    return np.clip(img * (1 - 0.55 * m[..., None]), 0, 1), m


def _hole(img: np.ndarray, grain: float | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A drilled/porosity hole: dark core shaded towards one side, lighter rim."""
    s = img.shape[0]
    r = rng.uniform(0.015, 0.04) * s + 1.5
    c = rng.uniform(0.2, 0.8, 2) * s
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    d = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2)
    core = d <= r
    rim = (d > r) & (d <= r + 1.5)
    shade = 0.15 + 0.1 * (xx - c[0]) / r
    out = img.copy()
    out[core] = (img[core] * np.clip(shade[core], 0.05, 0.3)[:, None]).astype(np.float32)
    out[rim] = np.clip(img[rim] * 1.15, 0, 1)
    return out, core | rim


def _stain(img: np.ndarray, grain: float | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Oil or water mark: several overlapping soft discs, 6-12 % darker with a slight tint."""
    s = img.shape[0]
    field = np.zeros((s, s), np.float32)
    c = rng.uniform(0.3, 0.7, 2) * s
    for _ in range(int(rng.integers(2, 5))):
        cc = (c + rng.normal(0, 0.05 * s, 2)).astype(int)
        cv2.circle(field, (int(cc[0]), int(cc[1])), int(rng.uniform(0.05, 0.12) * s), 1.0, -1)
    alpha = cv2.GaussianBlur(field, (0, 0), s / 50)
    tint = 1 - rng.uniform(0.06, 0.12) * np.array([1.0, 0.9, 0.7], np.float32)
    return np.clip(img * (1 - alpha[..., None] * (1 - tint)), 0, 1), alpha > 0.5


_DEFECT = {"crack": _crack, "hole": _hole, "stain": _stain, "scratch": _scratch, "thin_line": _thin_line}


def heldout_defect(
    kind: str, image: np.ndarray, grain: float | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(defective float RGB image, uint8 mask {0, 255}) of one `kind` on a good part."""
    out, mask = _DEFECT[kind](image, grain, rng)
    return out.astype(np.float32), mask.astype(np.uint8) * 255


def write_heldout(out: str | Path, surface: str, *, seed: int, scale: str | Scale = "full") -> Path:
    """Write one held-out surface's dataset (MVTec AD layout) under `out`; return `out`."""
    if surface not in _SURFACE:
        known = ", ".join(HELDOUT_SURFACES + PHOTO_SURFACES)
        raise ValueError(f"unknown held-out surface '{surface}' (known: {known})")
    spec = SCALES[scale] if isinstance(scale, str) else scale
    root = Path(out)
    rng = np.random.default_rng([seed, 101])
    for i in range(spec.n_train):
        _write_png(root / "train" / "good" / f"{i:03d}.png", heldout_part(surface, rng, spec.size)[0])
    rng = np.random.default_rng([seed, 102])
    for i in range(spec.n_test_good):
        _write_png(root / "test" / "good" / f"{i:03d}.png", heldout_part(surface, rng, spec.size)[0])
    for k, kind in enumerate(HELDOUT_KINDS):
        rng = np.random.default_rng([seed, 103, k])
        for i in range(spec.n_per_kind):
            image, mask = heldout_defect(kind, *heldout_part(surface, rng, spec.size), rng)
            _write_png(root / "test" / kind / f"{i:03d}.png", image)
            _write_png(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    info = {"generator": "heldout", "surface": surface, "seed": seed, "size": spec.size, "kinds": list(HELDOUT_KINDS)}
    with atomic_path(root / "dataset.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return root
