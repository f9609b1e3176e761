"""A second, independent chest-CT phantom generator, for held-out scoring only (never used to tune).

Why a second generator: a detector tuned on one generator learns that generator's shortcuts (its
ellipsoid lungs, its vessel trees, its fixed slice thickness). Scoring it on anatomy and acquisition
built a different way is the closest thing to a new hospital that can be made offline. Written apart
from ct_phantom.py, sharing only the DICOM writer; its scans must not be used to choose anything.

What differs from ct_phantom.py:
- body: a superellipse cross-section varying with height, subcutaneous fat of varied thickness,
  breasts in some patients, ribs as slanted arcs, sternum, vertebrae, descending aorta, the patient
  table under the body and a blanket with folds over it (outside the patient, as on real scans);
- lungs: per-slice outlines with random harmonic deformations, an apex taper and diaphragm domes
  (the right one higher), a heart indenting the left lung, hilar lymph nodes and pulmonary arteries at
  the mediastinal border, oblique (and on the right horizontal) fissures, parenchyma with a
  gravity-dependent density gradient and correlated texture;
- vessels: persistent random walks from the hilum that taper exponentially and bifurcate by
  Murray's law (r^3 = r1^3 + r2^3), painted as chains of spheres;
- nodules: solid (round, lobulated or spiculated), part-solid (eccentric solid core), ground-glass
  (soft edge), juxtapleural (centre 0.1-0.6 radii inside the pleura), juxtavascular and
  perifissural (flattened); 4-30 mm; in some scans a lung mass of 32-55 mm (masses.csv, not a nodule);
- acquisition: slice thickness 0.625-5 mm simulated as the average of thin sub-slices (partial
  volume), a reconstruction kernel (in-plane PSF and noise correlation), noise rising for thin
  slices, a global HU offset, and sometimes a reconstruction circle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from common import atomic
from data_adapters.synth.ct_phantom import write_series

THICKNESSES = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
KERNELS = {  # name: (in-plane PSF sigma mm, noise correlation sigma px, noise HU range at 2.5 mm)
    "soft": (0.9, 1.2, (8.0, 20.0)),
    "standard": (0.6, 0.8, (12.0, 30.0)),
    "sharp": (0.35, 0.4, (25.0, 55.0)),
}


def _paint_spheres(vol, sp, centres, radii, values, mask=None) -> None:
    """Paint spheres (mm centres zyx, mm radii) with `values` into `vol`, only where `mask` if given."""
    shape = np.array(vol.shape)
    for c, r, v in zip(centres, radii, values):
        lo = np.maximum(np.floor((c - r) / sp).astype(int), 0)
        hi = np.minimum(np.ceil((c + r) / sp).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        inside = ((zz * sp[0] - c[0]) ** 2 + (yy * sp[1] - c[1]) ** 2 + (xx * sp[2] - c[2]) ** 2) <= r * r
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        if mask is not None:
            inside = inside & mask[sl]
        vol[sl][inside] = v


def _walk(rng, start, direction, radius, length, step) -> tuple[np.ndarray, np.ndarray]:
    """A persistent random walk (points, radii), radius tapering exponentially along the path."""
    pts, rad = [], []
    p, d = np.array(start, float), np.array(direction, float) / np.linalg.norm(direction)
    s = 0.0
    while s < length:
        pts.append(p.copy())
        rad.append(radius * np.exp(-s / (4.0 * length)))
        d = d + rng.normal(0, 0.12, 3)
        d /= np.linalg.norm(d)
        p = p + d * step
        s += step
    return np.array(pts), np.array(rad)


class _Anatomy:
    """Random patient anatomy in mm; per-slice outlines are evaluated on demand."""

    def __init__(self, rng: np.random.Generator, extent_z: float):
        self.rng = rng
        self.z_top = extent_z
        self.a = rng.uniform(140, 185)  # body half width (x)
        self.b = rng.uniform(95, 130)  # body half depth (y)
        self.p = rng.uniform(2.2, 3.2)  # superellipse exponent
        self.cy = rng.uniform(-10, 10)
        self.fat = rng.uniform(6, 35)
        self.breasts = rng.random() < 0.45
        self.breast_r = rng.uniform(45, 80)
        self.breast_x = rng.uniform(55, 95)
        # lungs: centre x, half-width, half-depth, apex, base (dome top) per side (-1 right, +1 left in LPS x)
        self.lung = {}
        for side in (-1, 1):
            self.lung[side] = {
                "cx": side * rng.uniform(0.42, 0.5) * self.a,
                "ax": rng.uniform(0.28, 0.36) * self.a,
                "ay": rng.uniform(0.62, 0.74) * self.b,
                "cy": self.cy + rng.uniform(0.0, 0.12) * self.b,
                "apex": extent_z * rng.uniform(0.88, 1.05),
                "dome": extent_z * rng.uniform(0.12, 0.25) + (12.0 if side == -1 else 0.0),
                "harm": [
                    (k, rng.uniform(0.02, 0.07), rng.uniform(0, 2 * np.pi), rng.uniform(-0.02, 0.02))
                    for k in (2, 3, 4, 5)
                ],  # fmt: skip
            }
        self.heart = (extent_z * rng.uniform(0.15, 0.3), self.cy - 0.25 * self.b, rng.uniform(10, 30),
                      rng.uniform(45, 60), rng.uniform(50, 65), extent_z * rng.uniform(0.3, 0.4))  # fmt: skip
        self.carina = extent_z * rng.uniform(0.55, 0.7)

    def body(self, X, Y, z):
        s = 1.0 + 0.06 * np.sin(z / self.z_top * np.pi)
        inside = (np.abs(X / (self.a * s)) ** self.p + np.abs((Y - self.cy) / self.b) ** self.p) <= 1
        if self.breasts:
            for side in (-1, 1):
                inside |= (
                    (X - side * self.breast_x) ** 2 + (Y - (self.cy - self.b * 0.85)) ** 2
                ) <= self.breast_r**2 * (1 if z > self.z_top * 0.35 else 0)
        return inside

    def inner(self, X, Y, z):
        s = 1.0 + 0.06 * np.sin(z / self.z_top * np.pi)
        a, b = self.a * s - self.fat, self.b - self.fat * 0.8
        return (np.abs(X / a) ** self.p + np.abs((Y - self.cy) / b) ** self.p) <= 1

    def lungs(self, X, Y, z):
        out = np.zeros(X.shape, bool)
        for L in self.lung.values():
            if z > L["apex"]:
                continue
            taper = (
                np.sqrt(max(1.0 - ((z - L["apex"] * 0.55) / (L["apex"] * 0.45)) ** 2, 0.0))
                if z > L["apex"] * 0.55
                else 1.0
            )
            if taper <= 0.05:
                continue
            dx, dy = (X - L["cx"]) / (L["ax"] * taper), (Y - L["cy"]) / (L["ay"] * max(taper, 0.5))
            rho, theta = np.sqrt(dx**2 + dy**2), np.arctan2(dy, dx)
            bound = 1.0 + sum(a * np.cos(k * theta + ph + w * z) for k, a, ph, w in L["harm"])
            inside = rho <= bound
            # diaphragm dome: the lung starts above a dome highest under the lung's centre
            dome = L["dome"] + 35.0 * np.clip(1 - rho**2, 0, 1)
            inside &= z > dome
            # mediastinum: nothing closer to the midline than ~25 mm
            inside &= np.abs(X) > 22.0
            out |= inside
        hz, hy, hx, ra, rb, rc = self.heart
        heart = ((X - hx) / ra) ** 2 + ((Y - hy) / rb) ** 2 + ((z - hz) / rc) ** 2 <= 1
        return out & ~heart, heart


def _make_volume(rng, n: int, px: float, dz_f: float, nz_f: int):
    """The noiseless fine-grid volume (HU), lung mask, fissure mask and anatomy."""
    extent_z = nz_f * dz_f
    anat = _Anatomy(rng, extent_z)
    coords = (np.arange(n) - n / 2 + 0.5) * px
    X, Y = np.meshgrid(coords, coords)  # rows are y (posterior +), columns x (patient left +)
    vol = np.full((nz_f, n, n), -1000.0, np.float32)
    lung = np.zeros((nz_f, n, n), bool)
    table_y = anat.cy + anat.b + rng.uniform(4, 15)
    blanket_gap = rng.uniform(2, 25)
    blanket_hu = rng.uniform(-350, -80)
    fold_x = rng.uniform(-0.8, 0.8, 4) * anat.a
    for k in range(nz_f):
        z = k * dz_f
        sl = vol[k]
        body = anat.body(X, Y, z)
        sl[body] = rng.normal(-95, 8)
        inner = anat.inner(X, Y, z) & body
        sl[inner] = 45.0
        # fibroglandular tissue in the breasts: denser soft lumps in the fat
        lungs, heart = anat.lungs(X, Y, z)
        sl[heart] = 38.0
        sl[lungs] = -860.0
        lung[k] = lungs
        # spine, spinal canal, descending aorta
        spine_y = anat.cy + anat.b * 0.62
        sl[(X / 20.0) ** 2 + ((Y - spine_y) / 17.0) ** 2 <= 1] = 350.0
        sl[(X / 8.0) ** 2 + ((Y - spine_y - 22) / 8.0) ** 2 <= 1] = 15.0
        sl[((X - 28) / 12.0) ** 2 + ((Y - spine_y + 10) / 12.0) ** 2 <= 1] = 42.0
        # sternum
        if z > extent_z * 0.25:
            sl[(X / 16.0) ** 2 + ((Y - (anat.cy - anat.b + anat.fat + 8)) / 6.0) ** 2 <= 1] = 300.0
        # trachea above the carina
        if z > anat.carina:
            ty = anat.cy - 0.15 * anat.b
            r2 = X**2 + (Y - ty) ** 2
            sl[r2 <= 10.5**2] = 30.0
            sl[r2 <= 8.5**2] = -995.0
        # table (a curved plate) and a blanket with folds over the front of the body
        sl[(Y > table_y) & (Y < table_y + 7) & (np.abs(X) < anat.a * 1.3)] = rng.uniform(150, 300)
        front = anat.cy - anat.b - blanket_gap + 6 * np.sin(X / 40.0 + z / 60.0)
        blanket = (Y < front) & (Y > front - rng.uniform(2.5, 5.0)) & (np.abs(X) < anat.a * 0.95)
        for fx in fold_x:
            blanket |= ((X - fx) / 9.0) ** 2 + ((Y - front + 8) / 7.0) ** 2 <= 1
        sl[blanket & ~body] = blanket_hu
    return vol, lung, anat


def _ribs(vol, sp, rng, anat, extent_z) -> None:
    centres, radii = [], []
    for level in np.arange(extent_z * 0.15, extent_z * 1.05, rng.uniform(22, 28)):
        for side in (-1, 1):
            t = np.linspace(0.05, 0.75, 70) * np.pi
            x = side * np.sin(t) * (anat.a - anat.fat - 6)
            y = anat.cy + np.cos(t) * (anat.b - anat.fat * 0.8 - 6)
            z = level - 30 * (1 - np.cos(t)) / 2
            centres += list(np.stack([z, y + sp[1] * vol.shape[1] / 2, x + sp[2] * vol.shape[2] / 2], 1))
            radii += [4.5] * len(t)
    _paint_spheres(vol, sp, np.array(centres), np.array(radii), [rng.uniform(300, 600)] * len(radii))


def _vessels(vol, lung, sp, rng, anat) -> list[np.ndarray]:
    """Vessel trees from each hilum; returns points on vessels (for juxtavascular nodules)."""
    shape_mm = np.array(vol.shape) * sp
    not_lung = ~lung
    points = []
    for side, L in anat.lung.items():
        hilum = np.array([anat.carina - 15, L["cy"] + shape_mm[1] / 2 - 5, L["cx"] * 0.45 + shape_mm[2] / 2])
        stack = [(hilum, np.array([rng.normal(0, 0.7), rng.normal(0, 0.5), side * 1.0]), rng.uniform(4.5, 6.5))
                 for _ in range(rng.integers(6, 10))]  # fmt: skip
        stack += [(hilum, np.array([rng.choice([-1, 1]) * 1.0, rng.normal(0, 0.6), side * 0.5]), rng.uniform(4, 6))
                  for _ in range(2)]  # fmt: skip
        centres, radii = [], []
        n_points = 0
        while stack and n_points < 30000:
            start, d, r = stack.pop()
            length = rng.uniform(8, 14) * r
            pts, rad = _walk(rng, start, d, r, length, max(r * 0.5, 0.6))
            centres.append(pts)
            radii.append(rad)
            n_points += len(pts)
            end_r = rad[-1]
            end = np.round(pts[-1] / sp).astype(int)
            outside = np.any(end < 0) or np.any(end >= lung.shape) or not lung[tuple(end)]
            if end_r < 0.5 or (outside and r < 3.0):
                continue
            split = rng.uniform(0.5, 0.75)
            r1 = end_r * (split**3 / (split**3 + (1 - split) ** 3)) ** (1 / 3)
            r2 = (end_r**3 - r1**3) ** (1 / 3)
            base = pts[-1] - pts[-2] if len(pts) > 1 else d
            for r_child in (r1, r2):
                if r_child >= 0.45:
                    stack.append((pts[-1], base / np.linalg.norm(base) + rng.normal(0, 0.7, 3), r_child))
        c, r = np.concatenate(centres), np.concatenate(radii)
        _paint_spheres(vol, sp, c, r, rng.uniform(25, 55, len(r)), lung)
        points.append(c[r > 1.0])
        # hilar lymph nodes and the pulmonary artery, outside the lung at its medial border
        for _ in range(rng.integers(1, 4)):
            ln = hilum + np.array([rng.uniform(-25, 25), rng.uniform(-15, 15), -side * rng.uniform(5, 15)])
            _paint_spheres(vol, sp, [ln], [rng.uniform(4, 8)], [rng.uniform(20, 50)], not_lung)
        pa, pr = _walk(rng, hilum - np.array([0, 0, side * 25.0]), np.array([0, 0, side]), 11.0, 30.0, 2.0)
        _paint_spheres(vol, sp, pa, pr, [40.0] * len(pr))
    return points


def _fissures(vol, lung, sp, rng, anat) -> np.ndarray:
    shape = vol.shape
    zz, yy, xx = np.meshgrid(
        *[(np.arange(s) * d).astype(np.float32) for s, d in zip(shape, sp)], indexing="ij", sparse=True
    )
    fis = np.zeros(shape, bool)
    planes = []
    for side, L in anat.lung.items():
        cx = L["cx"] + shape[2] * sp[2] / 2
        cy = L["cy"] + shape[1] * sp[1] / 2
        # oblique fissure: from high posterior to low anterior
        n = np.array([1.0, rng.uniform(-1.3, -0.8), rng.uniform(-0.2, 0.2)])
        planes.append((side, n / np.linalg.norm(n), np.array([anat.carina, cy, cx])))
        if side == -1:  # horizontal fissure of the right lung
            planes.append((side, np.array([1.0, 0.05, 0.0]), np.array([anat.carina - 25, cy, cx])))
    for side, n, p in planes:
        dist = (zz - p[0]) * n[0] + (yy - p[1]) * n[1] + (xx - p[2]) * n[2]
        in_side = (xx - shape[2] * sp[2] / 2) * side > 0
        fis |= (np.abs(dist) < 0.6) & in_side & lung
    vol[fis] = rng.uniform(-650, -450)
    return fis


def _nodule(vol, lung, sp, rng, centre, diameter, kind, extra) -> None:
    """Paint one nodule of `kind` at `centre` (mm zyx)."""
    r = diameter / 2
    half = r * 1.8 + 2
    lo = np.maximum(np.floor((centre - half) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((centre + half) / sp).astype(int) + 1, vol.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    zz, yy, xx = np.meshgrid(*[np.arange(a, b) * d - c for a, b, d, c in zip(lo, hi, sp, centre)], indexing="ij")
    stretch = extra.get("stretch", np.ones(3))
    rho = np.sqrt((zz / stretch[0]) ** 2 + (yy / stretch[1]) ** 2 + (xx / stretch[2]) ** 2) / r
    theta, phi = np.arctan2(yy, xx), np.arctan2(zz, np.hypot(yy, xx) + 1e-9)
    bound = 1.0 + extra.get("lobes", 0.0) * np.cos(extra.get("k", 3) * theta) * np.cos(2 * phi)
    sub = vol[sl]
    in_lung = lung[sl]  # subsolid opacities only replace aerated lung (not the chest wall they touch)
    if kind == "ground-glass":
        w = np.clip((bound - rho) / 0.25 + 0.5, 0, 1) * in_lung  # soft edge
        sub[:] = np.where(w > 0, sub * (1 - w) + rng.uniform(-680, -520) * w, sub)
    elif kind == "part-solid":
        sub[(rho <= bound) & in_lung] = rng.uniform(-620, -450)
        off = rng.normal(0, 0.25, 3) * r
        core = np.sqrt((zz - off[0]) ** 2 + (yy - off[1]) ** 2 + (xx - off[2]) ** 2) <= r * rng.uniform(0.3, 0.6)
        sub[core & (rho <= bound)] = rng.uniform(-30, 40)
    else:
        value = rng.uniform(-20, 70)
        sub[rho <= bound] = value
        for _ in range(extra.get("spicules", 0)):
            d = rng.normal(0, 1, 3)
            d /= np.linalg.norm(d)
            pts = centre + d[None] * np.linspace(r * 0.8, r * rng.uniform(1.5, 2.3), 12)[:, None]
            _paint_spheres(vol, sp, pts, np.full(12, 0.6), [value] * 12, None)


def _place_lesions(vol, lung, fissure, vessel_points, sp, rng, n_nodules, mass: bool):
    dist_in = ndimage.distance_transform_edt(lung, sampling=sp)
    placed, masses = [], []
    lung_idx = np.flatnonzero(lung)
    if mass:
        d = rng.uniform(32, 55)
        cand = np.flatnonzero(dist_in.ravel() > d * rng.uniform(0.25, 0.55))
        if cand.size:
            c = np.array(np.unravel_index(rng.choice(cand), lung.shape), float) * sp
            _nodule(vol, lung, sp, rng, c, d, "solid", {"lobes": 0.12, "k": 3, "stretch": rng.uniform(0.85, 1.15, 3)})
            masses.append((c, d))
    for _ in range(n_nodules * 40):
        if len(placed) == n_nodules or lung_idx.size == 0:
            break
        diameter = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
        r = diameter / 2
        where = rng.choice(["free", "free", "free", "juxtapleural", "juxtavascular", "perifissural"])
        kind = str(rng.choice(["solid", "solid", "solid", "part-solid", "ground-glass"]))
        extra = {}
        if where == "juxtapleural":
            ok = (dist_in > 0.1 * r) & (dist_in < 0.6 * r)
        elif where == "perifissural" and fissure.any():
            ok = fissure & (dist_in > r)
            extra["stretch"] = np.array([0.6, 1.0, 1.0])
        elif where == "juxtavascular" and len(vessel_points):
            ok = None
        else:
            ok = dist_in > r + 3
        if ok is None:
            pts = vessel_points[rng.integers(len(vessel_points))]
            centre = pts[rng.integers(len(pts))] + rng.normal(0, r * 0.5, 3)
            vi = np.round(centre / sp).astype(int)
            if np.any(vi < 0) or np.any(vi >= lung.shape) or dist_in[tuple(vi)] < r:
                continue
        else:
            idx = np.flatnonzero(ok)
            if idx.size == 0:
                continue
            centre = np.array(np.unravel_index(rng.choice(idx), lung.shape), float) * sp
        if any(np.linalg.norm(centre - c) < r + d / 2 + 8 for c, d, *_ in placed + [(m[0], m[1]) for m in masses]):
            continue
        if kind == "solid":
            style = rng.choice(["round", "lobulated", "spiculated"])
            extra.update(lobes=0.18 if style == "lobulated" else 0.0, k=int(rng.integers(2, 5)))
            extra["spicules"] = int(rng.integers(4, 10)) if style == "spiculated" and diameter > 8 else 0
        _nodule(vol, lung, sp, rng, centre, diameter, kind, extra)
        placed.append((centre, diameter, kind, where))
    return placed, masses


def make_holdout_phantom(rng: np.random.Generator, n: int, px: float, thickness: float, extent_z: float):
    """(HU volume z,y,x at the output slices, slice spacing, nodules, masses); positions in mm from voxel 0."""
    sub = max(int(np.ceil(thickness / 1.0)), 1)  # sub-slices per slice: partial volume over the thickness
    dz_f = thickness / sub
    nz_out = int(extent_z // thickness)
    nz_f = nz_out * sub
    sp_f = np.array([dz_f, px, px])
    vol, lung, anat = _make_volume(rng, n, px, dz_f, nz_f)
    _ribs(vol, sp_f, rng, anat, nz_f * dz_f)
    lung &= vol < -500
    # parenchyma: gravity-dependent density (posterior denser) and correlated texture
    texture = ndimage.gaussian_filter(rng.normal(0, 1, vol.shape).astype(np.float32), (1.5 / dz_f, 1.5 / px, 1.5 / px))
    texture *= rng.uniform(15, 35) / max(float(texture.std()), 1e-6)
    gradient = np.linspace(-25, 35, n, dtype=np.float32)[None, :, None]
    vol[lung] += (texture + gradient + rng.uniform(-30, 30)).astype(np.float32)[lung]
    vessel_points = _vessels(vol, lung, sp_f, rng, anat)
    fissure = _fissures(vol, lung, sp_f, rng, anat)
    nodules, masses = _place_lesions(
        vol, lung, fissure, vessel_points, sp_f, rng, int(rng.integers(1, 6)), rng.random() < 0.3
    )
    kernel = str(rng.choice(list(KERNELS)))
    psf, corr, noise_range = KERNELS[kernel]
    vol = ndimage.gaussian_filter(vol, (0.4, psf / px, psf / px))
    out = vol.reshape(nz_out, sub, n, n).mean(1)  # the slice profile: average of the sub-slices
    noise = ndimage.gaussian_filter(rng.normal(0, 1, out.shape).astype(np.float32), (0, corr, corr))
    sigma = rng.uniform(*noise_range) * np.sqrt(2.5 / thickness) ** 0.5
    out += noise * (sigma / max(float(noise.std()), 1e-6)) + rng.uniform(-15, 15)
    if rng.random() < 0.5:  # reconstruction circle: outside it the scanner writes air
        yy, xx = np.mgrid[:n, :n]
        out[:, (yy - n / 2) ** 2 + (xx - n / 2) ** 2 > (n / 2) ** 2] = -1024.0
    # positions are mm from the first output slice's centre: sub-slice j of slice k sits at k*thk + (j-(sub-1)/2)*dz_f
    shift = np.array([(sub - 1) / 2 * dz_f, 0, 0])
    nodules = [(c - shift, d, k, w) for c, d, k, w in nodules]
    masses = [(c - shift, d) for c, d in masses]
    return out.astype(np.float32), thickness, nodules, masses, kernel


def synth_holdout(out: str | Path, n_scans: int, *, seed: int = 1000) -> Path:
    """Write `n_scans` held-out phantom series under `out/case_XXX/`, `annotations.csv` and `masses.csv`."""
    out = Path(out)
    rng = np.random.default_rng([seed, 77])
    rows, mass_rows = [], []
    for i in range(n_scans):
        n = int(rng.integers(200, 241))
        px = rng.uniform(330, 420) / n
        thickness = float(rng.choice(THICKNESSES))
        extent = rng.uniform(190, 240)
        hu, dz, nodules, masses, kernel = make_holdout_phantom(rng, n, px, thickness, extent)
        origin = np.array([-n * px / 2 + rng.uniform(-8, 8), -n * px / 2 + rng.uniform(-8, 8), rng.uniform(-350, -150)])
        uid = write_series(out / f"case_{i:03d}", hu, (dz, px, px), origin, rng=rng, patient=f"H{seed}-{i:03d}",
                           reverse_files=bool(i % 2))  # fmt: skip
        for c, d, kind, where in nodules:
            xyz = origin + c[::-1]
            rows.append([uid, *[f"{v:.3f}" for v in xyz], f"{d:.2f}", kind, int(where == "juxtapleural"), where,
                         f"{thickness}", kernel])  # fmt: skip
        for c, d in masses:
            mass_rows.append([uid, *[f"{v:.3f}" for v in origin + c[::-1]], f"{d:.2f}"])
    header = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "kind", "juxtapleural", "location"]
    atomic.write_csv(out / "annotations.csv", header + ["slice_mm", "kernel"], rows)
    atomic.write_csv(out / "masses.csv", ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"], mass_rows)
    return out
