"""Anatomy and acquisition variety for ct_phantom.py (`synth --variety`): what its defaults fix.

Why: the detector trained on ct_phantom.py's defaults scored CPM 0.83 on them and 0.32 on the
independent generator ct_holdout.py. On held-out scans of another seed (README, "Why the held-out
generator's nodules are missed") its top false positives were bone at the lung's edge (ribs at
200-400 HU, which the default phantom does not have: its chest wall is uniform soft tissue) and its
misses were nodules among thick vessels and subsolid ones. This module adds, drawn from its own
random stream so the default phantoms stay bit-identical:
- ribs (arcs along the inside of the chest wall, slanted, indenting the lung), sternum, a table;
- hilar vessels of real calibre (4-7 mm radius at the hilum) branching into the lung, sometimes
  contrast-enhanced (100-250 HU), and interlobar fissures;
- parenchyma density (-900..-780 HU), a gravity gradient and correlated texture;
- nodules touching vessels, spiculated and lobulated solid ones;
- slice thickness 1-5 mm as the average of thin sub-slices (partial volume), a reconstruction
  kernel (in-plane blur) with noise correlated to match, and a global HU offset.
None of the parameters or code were taken from ct_holdout.py, which stays the final judge only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

THICKNESSES = (1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
KERNELS = ((1.0, 1.4, 8.0, 18.0), (0.6, 0.9, 12.0, 30.0), (0.3, 0.5, 25.0, 50.0))  # psf mm, noise corr px, HU


def parenchyma(vol: np.ndarray, lung: np.ndarray, sp, vrng: np.random.Generator) -> None:
    """Lung density level, an anterior-posterior gradient and smooth texture (before vessels are drawn)."""
    level = vrng.uniform(-900, -780)
    field = ndimage.gaussian_filter(
        vrng.normal(0, 1, vol.shape).astype(np.float32), [vrng.uniform(1.0, 2.5) / s for s in sp]
    )
    field *= vrng.uniform(8, 35) / max(float(field.std()), 1e-6)
    gradient = np.linspace(-1, 1, vol.shape[1], dtype=np.float32)[None, :, None] * vrng.uniform(0, 40)
    vol[lung] = (level + field + gradient)[lung]


def ribs(vol: np.ndarray, lung: np.ndarray, sp, vrng: np.random.Generator, centre_yx, half_yx, tube) -> None:
    """Ribs as slanted arcs just inside the chest wall (they indent the lung) and a sternum."""
    size_z = vol.shape[0] * sp[0]
    before = vol.copy()
    hu = vrng.uniform(250, 700)
    inset = vrng.uniform(0.0, 10.0)
    for level in np.arange(vrng.uniform(-10, 10), size_z + 40, vrng.uniform(20, 30)):
        r = vrng.uniform(3.5, 5.5)
        for side in (-1, 1):
            t = np.linspace(0.1, 0.8, 12) * np.pi
            pts = np.stack([level - 25 * (1 - np.cos(t)) / 2, centre_yx[0] + np.cos(t) * (half_yx[0] - inset),
                            centre_yx[1] + side * np.sin(t) * (half_yx[1] - inset)], 1)  # fmt: skip
            for a, b in zip(pts[:-1], pts[1:]):
                tube(vol, sp, a, b, r, hu)
    front = np.array([0.0, centre_yx[0] - half_yx[0] + 6, centre_yx[1]])
    tube(vol, sp, front, front + np.array([size_z, 0.0, 0.0]), vrng.uniform(5.0, 8.0), vrng.uniform(250, 500))
    lung &= vol == before


def hilar_vessels(vol, lung, sp, vrng: np.random.Generator, hila: list[np.ndarray], tube) -> np.ndarray:
    """Thick vessel trunks from each hilum (radius 4-7 mm) branching by Murray's law into the lung."""
    value = vrng.uniform(100, 250) if vrng.random() < 0.3 else vrng.uniform(25, 60)
    before = vol.copy()
    for side, hilum in zip((-1, 1), hila):
        stack = [
            (hilum, np.array([vrng.normal(0, 0.8), vrng.normal(0, 0.6), side * 1.0]), vrng.uniform(4.0, 7.0), 0)
            for _ in range(int(vrng.integers(3, 6)))
        ]
        while stack:
            start, d, r, depth = stack.pop()
            d = d / np.linalg.norm(d)
            end = start + d * r * vrng.uniform(4, 8)
            tube(vol, sp, start, end, r, value, lung if depth > 0 else None)
            if r < 1.0 or depth >= 6:
                continue
            f = vrng.uniform(0.5, 0.8)
            r1 = r * (f**3 / (f**3 + (1 - f) ** 3)) ** (1 / 3)
            r2 = (r**3 - r1**3) ** (1 / 3)
            for rc in (r1, r2):
                stack.append((end, d + vrng.normal(0, 0.5, 3), rc, depth + 1))
    return (vol != before) & lung


def fissures(vol: np.ndarray, lung: np.ndarray, sp, vrng: np.random.Generator) -> None:
    """One oblique fissure per lung (a 1 mm plate at -700..-450 HU), and sometimes a horizontal one."""
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(vol.shape, sp)], indexing="ij", sparse=True)
    mid_x = vol.shape[2] * sp[2] / 2
    hu = vrng.uniform(-700, -450)
    for side in (-1, 1):
        normal = np.array([1.0, vrng.uniform(-1.4, -0.6), side * vrng.uniform(-0.3, 0.3)])
        normal /= np.linalg.norm(normal)
        p = np.array([vol.shape[0] * sp[0] * vrng.uniform(0.35, 0.65), vol.shape[1] * sp[1] / 2, 0.0])
        dist = (z - p[0]) * normal[0] + (y - p[1]) * normal[1] + x * normal[2] - mid_x * normal[2]
        plate = (np.abs(dist) < vrng.uniform(0.4, 0.8)) & ((x - mid_x) * side > 0) & lung
        vol[plate] = hu
        if side == -1 and vrng.random() < 0.6:
            zh = vol.shape[0] * sp[0] * vrng.uniform(0.4, 0.7)
            vol[(np.abs(z - zh) < 0.6) & ((x - mid_x) < 0) & lung] = hu


def table(vol: np.ndarray, sp, vrng: np.random.Generator, body_bottom_y: float) -> None:
    """The patient table: a bright plate below the body (outside the patient, as on every scan)."""
    y = np.arange(vol.shape[1]) * sp[1]
    top = body_bottom_y + vrng.uniform(3, 15)
    rows = (y > top) & (y < top + vrng.uniform(4, 9))
    vol[:, rows, :] = np.maximum(vol[:, rows, :], vrng.uniform(100, 300))


def spicules(vol: np.ndarray, sp, vrng: np.random.Generator, centre, diameter: float, value: float, tube) -> None:
    """Thin spicules radiating from a solid nodule (lung cancer's corona radiata)."""
    for _ in range(int(vrng.integers(4, 11))):
        u = vrng.normal(0, 1, 3)
        u /= np.linalg.norm(u)
        tube(vol, sp, centre + u * diameter * 0.35, centre + u * diameter * vrng.uniform(0.8, 1.2),
             vrng.uniform(0.5, 1.0), value)  # fmt: skip


def acquire(vol: np.ndarray, sub: int, px: float, vrng: np.random.Generator) -> np.ndarray:
    """Kernel blur, slice profile (mean of `sub` thin sub-slices), correlated noise and an HU offset."""
    psf, corr, lo, hi = KERNELS[int(vrng.integers(len(KERNELS)))]
    vol = ndimage.gaussian_filter(vol, (0.5, psf / px, psf / px))
    nz = vol.shape[0] // sub
    out = vol[: nz * sub].reshape(nz, sub, *vol.shape[1:]).mean(1)
    noise = ndimage.gaussian_filter(vrng.normal(0, 1, out.shape).astype(np.float32), (0, corr, corr))
    out += noise * np.float32(vrng.uniform(lo, hi) / max(float(noise.std()), 1e-6)) + np.float32(vrng.uniform(-15, 15))
    return out.astype(np.float32)
