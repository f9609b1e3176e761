"""Lung masses (> 30 mm): solid lesions too large for the nodule detector, found by their anatomy.

Why a separate path: a 45 mm mass is bigger than the detector's training nodules (<= 30 mm, LUNA16's
definition of a nodule) and wider than its receptive field's notion of a blob, so on a real scan the
detector did not report one at all. A mass is, however, easy to see: a large connected soft-tissue
lump inside the lung's outline. Masses are reported beside the nodule list (masses.csv, report.json)
and never remove a nodule candidate.

How, on the model grid with the lung mask of lungmask.py:
1. the lung outline: each lung closed per slice with a disk of `hull_mm` and hole-filled, so a mass
   that abuts the chest wall or the mediastinum (a wide indentation of the aerated lung) is inside;
2. soft tissue (> `soft_hu`) inside the outline, opened with a ball of radius `open_mm` so vessels
   and airway walls (thinner than 2 x open_mm) drop out;
3. components with a volume-equivalent diameter > `min_diameter_mm`, unless more than
   `max_wall_contact` of their surface lies on the outline's edge (mediastinum or chest wall
   entering the outline, which a mass touches only on one side), or unless the lung does not cover
   at least half of their footprint a few millimetres below and above them: at the lung base an
   axial slice shows the lung as a ring around the diaphragm dome, per-slice filling puts the dome
   inside the outline, but the dome continues into the abdomen below, where a mass has lung.

A second pass finds the masses the per-slice outline cannot hold (`envelope_masses`): on a real 5 mm
scan a 45 mm mass in the posterior upper lobe sat against the chest wall and the aorta, with lung
only in front of and beside it on every slice, so no per-slice closing reached round it. In 3D the
lung also lies above and below it. So: each lung (split at the body's midline) closed in 3D with a
ball of `envelope_mm` on a coarse grid, the mediastinum (between the two lungs, in front of the
spine) taken out, soft tissue inside opened with a ball of `envelope_open_mm` (the aorta, hilar
vessels and chest-wall muscle are thinner than that; a mass > 30 mm is not), then the same size,
contact and capping rules. Its masses are added when no first-pass mass lies within 20 mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from verticals.medical.lungmask import BONE_HU, LungMask, body_midline, fill_per_slice


def _opened(mask: np.ndarray, radius_mm: float, sp: np.ndarray) -> np.ndarray:
    """Morphological opening with a ball of `radius_mm` (two distance transforms: fast on big masks)."""
    core = ndimage.distance_transform_edt(mask, sampling=sp) > radius_mm
    return ndimage.distance_transform_edt(~core, sampling=sp) <= radius_mm


def _capped(outline: np.ndarray, sl: tuple[slice, ...], comp: np.ndarray, sp: np.ndarray, gap_mm: float = 4.0) -> bool:
    """Whether the lung outline covers at least half of the component's axial footprint just below and above it."""
    footprint = comp.any(axis=0)
    step = max(int(round(gap_mm / sp[0])), 1)
    for z in (sl[0].start - step, sl[0].stop - 1 + step):
        if z < 0 or z >= outline.shape[0]:
            return False
        if (outline[z][sl[1], sl[2]] & footprint).sum() < 0.5 * footprint.sum():
            return False
    return True


def find_masses(
    hu: np.ndarray,
    spacing_zyx,
    mask: LungMask,
    *,
    min_diameter_mm: float = 30.0,
    soft_hu: float = -300.0,
    hull_mm: float = 25.0,
    open_mm: float = 5.0,
    max_wall_contact: float = 0.5,
) -> list[dict]:
    """Masses as [{"zyx" (model grid), "diameter_mm", "volume_ml", "mean_hu", "wall_contact"}], largest first.

    Empty when the lung mask is a fallback (no anatomy to judge a mass by).
    """
    if mask.status != "ok" or not mask.lungs.any():
        return []
    sp = np.asarray(spacing_zyx, float)
    outline = fill_per_slice(mask.lungs, hull_mm / float(np.mean(sp[1:])))
    soft = _opened((hu > soft_hu) & outline, open_mm, sp) & outline
    found = _judged(soft, outline, hu, sp, min_diameter_mm, max_wall_contact)
    for extra in envelope_masses(hu, sp, mask, min_diameter_mm=min_diameter_mm, soft_hu=soft_hu,
                                 max_wall_contact=max_wall_contact):  # fmt: skip
        if all(np.linalg.norm((extra["zyx"] - m["zyx"]) * sp) > 20.0 for m in found):
            found.append(extra)
    return found


def _judged(
    soft: np.ndarray,
    outline: np.ndarray,
    hu: np.ndarray,
    sp: np.ndarray,
    min_diameter_mm: float,
    max_wall_contact: float,
    step: int = 1,
) -> list[dict]:
    """The connected parts of `soft` that are masses (size, wall contact, capped by lung), largest first;
    centres on the model grid (`step`: the grid `soft` was taken from, every step-th voxel)."""
    labels, _ = ndimage.label(soft)
    voxel_ml = float(np.prod(sp)) / 1000.0
    edge = outline & ~ndimage.binary_erosion(outline, border_value=0)
    found = []
    for j, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == j
        volume = float(comp.sum()) * voxel_ml
        diameter = float((6.0 * volume * 1000.0 / np.pi) ** (1.0 / 3.0))
        if diameter <= min_diameter_mm:
            continue
        surface = comp & ~ndimage.binary_erosion(comp, border_value=0)
        contact = float((surface & ndimage.binary_dilation(edge[sl])).sum()) / max(int(surface.sum()), 1)
        if contact > max_wall_contact or not _capped(outline, sl, comp, sp):
            continue
        centre = (np.array(ndimage.center_of_mass(comp)) + np.array([s.start for s in sl])) * step
        found.append({"zyx": centre, "diameter_mm": diameter, "volume_ml": volume,
                      "mean_hu": float(hu[sl][comp].mean()), "wall_contact": contact})  # fmt: skip
    return sorted(found, key=lambda m: -m["volume_ml"])


def _closed3d(mask: np.ndarray, radius_mm: float, sp: np.ndarray) -> np.ndarray:
    """Morphological closing with a ball of `radius_mm` (two distance transforms)."""
    grown = ndimage.distance_transform_edt(~mask, sampling=sp) <= radius_mm
    return (ndimage.distance_transform_edt(grown, sampling=sp) > radius_mm) | mask


def mediastinum(lungs: np.ndarray, hu: np.ndarray, body: np.ndarray, mid: int, sp: np.ndarray) -> np.ndarray:
    """Per axial slice, the voxels between the right lung's and the left lung's medial edges on each row
    in front of the spine (the vertebral body's front: bone within 15 mm of the midline, in the back half)."""
    nz, ny, nx = lungs.shape
    med = np.zeros_like(lungs)
    half = int(round(15.0 / sp[2]))
    cols = np.arange(nx)
    for k in np.flatnonzero(lungs[:, :, :mid].any(axis=(1, 2)) & lungs[:, :, mid:].any(axis=(1, 2))):
        rows = np.flatnonzero(body[k].any(axis=1))
        spine = np.flatnonzero(((hu[k] > BONE_HU) & body[k])[:, max(mid - half, 0) : mid + half + 1].any(axis=1))
        spine = spine[spine > rows.mean()] if rows.size else spine
        front = int(spine.min()) if spine.size else ny
        right = np.where(lungs[k, :front, :mid], cols[:mid], -1).max(axis=1)  # right lung's medial edge per row
        left = np.where(lungs[k, :front, mid:], cols[mid:], nx).min(axis=1)  # left lung's
        has = (right >= 0) | (left < nx)
        x0 = np.where(right >= 0, right + 1, mid)[:, None]
        x1 = np.where(left < nx, left, mid)[:, None]
        med[k, :front] = has[:, None] & (cols[None, :] >= x0) & (cols[None, :] < x1)
    return med


def envelope_masses(
    hu: np.ndarray,
    sp: np.ndarray,
    mask: LungMask,
    *,
    min_diameter_mm: float = 30.0,
    soft_hu: float = -300.0,
    bone_hu: float = 150.0,
    envelope_mm: float = 30.0,
    envelope_open_mm: float = 12.0,
    max_wall_contact: float = 0.5,
    step: int = 2,
) -> list[dict]:
    """The second pass (module docstring), on every `step`-th voxel (masses are > 30 mm: a 4 mm grid
    sees them, and the 3D distance transforms cost a second instead of a minute)."""
    lungs, coarse = mask.lungs[::step, ::step, ::step], hu[::step, ::step, ::step]
    body, sp2 = mask.body[::step, ::step, ::step], np.asarray(sp, float) * step
    centre = body_midline(body)
    if not lungs.any() or centre is None:
        return []
    mid = int(round(centre))
    side = np.arange(lungs.shape[2]) >= mid
    outline = np.zeros_like(lungs)
    for half in (~side, side):
        outline |= _closed3d(lungs & half, envelope_mm, sp2) & half
    outline &= ~mediastinum(lungs, coarse, body, mid, sp2)
    soft = _opened((coarse > soft_hu) & (coarse < bone_hu) & outline, envelope_open_mm, sp2) & outline
    return _judged(soft, outline, coarse, sp2, min_diameter_mm, max_wall_contact, step)
