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
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from verticals.medical.lungmask import LungMask, fill_per_slice


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
    labels, n = ndimage.label(soft)
    if n == 0:
        return []
    voxel_ml = float(np.prod(sp)) / 1000.0
    sizes = np.bincount(labels.ravel())[1:]
    min_voxels = (np.pi / 6.0) * min_diameter_mm**3 / 1000.0 / voxel_ml
    edge = outline & ~ndimage.binary_erosion(outline, border_value=0)
    found = []
    for j in np.flatnonzero(sizes > min_voxels) + 1:
        sl = ndimage.find_objects((labels == j).astype(np.int8))[0]
        comp = labels[sl] == j
        surface = comp & ~ndimage.binary_erosion(comp, border_value=0)
        contact = float((surface & ndimage.binary_dilation(edge[sl])).sum()) / max(int(surface.sum()), 1)
        volume = float(comp.sum()) * voxel_ml
        diameter = float((6.0 * volume * 1000.0 / np.pi) ** (1.0 / 3.0))
        if diameter <= min_diameter_mm or contact > max_wall_contact or not _capped(outline, sl, comp, sp):
            continue
        centre = np.array(ndimage.center_of_mass(comp)) + np.array([s.start for s in sl])
        found.append(
            {
                "zyx": centre,
                "diameter_mm": diameter,
                "volume_ml": volume,
                "mean_hu": float(hu[sl][comp].mean()),
                "wall_contact": contact,
            }
        )
    return sorted(found, key=lambda m: -m["volume_ml"])
