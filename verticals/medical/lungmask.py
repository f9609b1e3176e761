"""Where the lungs are: a threshold-and-morphology lung mask that restricts nodule candidates.

Why: the detector is trained on patches and has no notion of anatomy. On real chest CT it ranked a
blob on the blanket outside the patient and lumps in breast tissue above a real nodule. Nodules live
in the lungs (juxtapleural ones on their wall), so a candidate whose centre is farther than a margin
from the aerated lung is not a nodule, whatever the network says.

How (on the model's isotropic grid, so it costs well under a second on a 512x512x300 series):
1. low density: HU < -400 (aerated lung, air, gas);
2. air outside the body: per axial slice, every low-density region touching the image border (per
   slice, not in 3D, so lungs cut by the scan's first or last slice are kept);
3. the lungs: the largest remaining 3D component and the second largest when it is at least a fifth
   of it (two lungs, or one when the airways join them), which drops bowel gas and air pockets in
   the blanket;
   The trachea and main bronchi are part of that component (they open into the lungs); on each
   slice, a small air region near the body's midline is airway, not lung, and is dropped (on a real
   scan the top candidate was in the trachea at the neck, above both apices);
4. vessels, airways walls and nodules inside the lung are filled per slice by a closing with a disk
   of `close_mm` and hole filling of each lung separately (the mediastinum between the lungs stays out);
5. a margin of `margin_mm` around it, measured within each axial slice, admits juxtapleural
   nodules, whose centre lies outside the aerated lung. In-slice, not in 3D: at the apex the lung
   narrows upwards, and a 3D margin admitted the shoulder's muscle and bone above a lower slice's
   lung (on a real 5 mm scan, four of the top five candidates were there, 9-10 mm from the lung in
   3D and 13-81 mm in their own slice);
6. bone (> `BONE_HU`, grown by one voxel) is no place for a candidate's centre unless it lies more
   than `DEEP_MM` inside the filled lungs: ribs lie within the margin (or inside the filled lungs,
   when the closing bridges the indentation a rib makes), and on held-out phantoms of another
   generator they were the top false positives (README). A calcified nodule deep in the lung stays
   admissible; one on the pleura does not.
A mask whose volume is implausible (a few millilitres, or most of the field of view) is not used:
the candidates are then only kept inside the body, and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

LOW_HU = -400.0
BONE_HU = 200.0
DEEP_MM = 6.0  # bone this far inside the filled lungs is a calcified nodule, not a rib
MIN_LUNG_ML = 150.0  # less than this is not a pair of lungs in a chest scan (even a short z-range)
MAX_FIELD_FRACTION = 0.6  # a "lung" filling most of the scanned volume is the air around the patient


@dataclass
class LungMask:
    """The restriction mask on the model grid and how it was obtained."""

    region: np.ndarray  # bool (z,y,x): candidates' centres must lie here
    lungs: np.ndarray  # bool (z,y,x): filled lungs without the margin (used for masses)
    body: np.ndarray  # bool (z,y,x)
    status: str  # "ok" or "fallback"
    volume_ml: float
    reasons: list[str] = field(default_factory=list)
    bone: np.ndarray | None = None  # bool (z,y,x): bone not deep in the lungs, never a candidate's centre

    def record(self) -> dict:
        """What report.json says about the mask."""
        return {"status": self.status, "lung_volume_ml": round(self.volume_ml, 1), "reasons": list(self.reasons)}

    def contains(self, zyx: np.ndarray) -> np.ndarray:
        """Whether each (N,3) model-grid point lies in the region and not in bone (points outside the grid do not)."""
        if len(zyx) == 0:
            return np.zeros(0, bool)
        idx = np.round(np.asarray(zyx, float)).astype(int)
        inside = np.all((idx >= 0) & (idx < np.array(self.region.shape)), axis=1)
        out = np.zeros(len(idx), bool)
        at = tuple(idx[inside].T)
        out[inside] = self.region[at] & (~self.bone[at] if self.bone is not None else True)
        return out


def outside_air(low: np.ndarray) -> np.ndarray:
    """Low-density voxels connected, within their axial slice, to the slice's border."""
    out = np.zeros_like(low)
    for k in range(low.shape[0]):
        labels, n = ndimage.label(low[k])
        if n == 0:
            continue
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        edge = edge[edge > 0]
        out[k] = np.isin(labels, edge)
    return out


def _largest_components(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes)
    keep = [order[0] + 1] + [i + 1 for i in order[1:2] if sizes[i] >= 0.2 * sizes[order[0]]]
    return np.isin(labels, keep)


def fill_per_slice(lungs: np.ndarray, radius_vox: float) -> np.ndarray:
    """Closing with a disk of `radius_vox` + hole filling slice by slice, each 2D lung component on its own.

    The closing is two distance transforms (dilate, then erode) instead of a disk structuring
    element: the same result for a Euclidean disk, and fast for the large radii masses need.
    """
    filled = np.zeros_like(lungs)
    pad = int(np.ceil(radius_vox)) + 1
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        labels, n = ndimage.label(lungs[k])
        for j, sl in enumerate(ndimage.find_objects(labels), start=1):
            box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, dim)) for s, dim in zip(sl, labels.shape))
            comp = np.pad(labels[box] == j, pad)
            grown = ndimage.distance_transform_edt(~comp) <= radius_vox
            closed = (ndimage.distance_transform_edt(grown) > radius_vox) | comp
            filled[k][box] |= ndimage.binary_fill_holes(closed)[pad:-pad, pad:-pad]
    return filled


def lung_mask(
    hu: np.ndarray,
    spacing_zyx,
    *,
    margin_mm: float = 10.0,
    close_mm: float = 8.0,
    low_hu: float = LOW_HU,
    exclude_bone: bool = True,
) -> LungMask:
    """The lung mask of a volume in HU (z,y,x) with voxel size `spacing_zyx` (mm)."""
    sp = np.asarray(spacing_zyx, float)
    voxel_ml = float(np.prod(sp)) / 1000.0
    low = hu < low_hu
    air = outside_air(low)
    body = ndimage.binary_fill_holes(~air) if air.any() else np.ones_like(low)
    # the body is the largest non-air component: a table or blanket beside it is not the patient
    body = _largest_components_single(body)
    lungs = drop_airways(_largest_components(low & ~air & body), body, sp)
    lungs = fill_per_slice(lungs, close_mm / float(np.mean(sp[1:]))) if lungs.any() else lungs
    volume = float(lungs.sum()) * voxel_ml
    reasons = []
    if volume < MIN_LUNG_ML:
        reasons.append(f"lung mask of {volume:.0f} ml is below {MIN_LUNG_ML:.0f} ml")
    if lungs.mean() > MAX_FIELD_FRACTION:
        reasons.append(f"lung mask fills {lungs.mean():.0%} of the volume")
    if reasons:
        reasons.append("candidates kept in the body")
        return LungMask(body, np.zeros_like(lungs), body, "fallback", volume, reasons)
    region = within_in_slice(lungs, margin_mm, sp[1:]) if margin_mm > 0 else lungs
    bone = None
    if exclude_bone:  # the closing fills a rib's indentation into the lungs: only bone deep inside them stays
        deep = ndimage.distance_transform_edt(lungs, sampling=sp) > DEEP_MM
        bone = ndimage.binary_dilation(hu > BONE_HU) & ~deep
    return LungMask(region & body, lungs, body, "ok", volume, [], bone)


def body_midline(body: np.ndarray) -> float | None:
    """The x index halfway across the body's left-right extent (None without a body)."""
    cols = np.flatnonzero(body.any(axis=(0, 1)))
    return (cols[0] + cols[-1]) / 2.0 if cols.size else None


def drop_airways(
    lungs: np.ndarray, body: np.ndarray, sp, max_area_mm2: float = 700.0, midline_mm: float = 30.0
) -> np.ndarray:
    """`lungs` without, on each axial slice, the regions smaller than `max_area_mm2` (a trachea is 15-25 mm
    across: 180-490 mm2) whose centre lies within `midline_mm` of the body's midline. Lung apices and
    bases are small on their first slices too, but they lie to the side, not on the midline."""
    mid = body_midline(body)
    if mid is None:
        return lungs
    pixel_mm2 = float(sp[1] * sp[2])
    out = lungs.copy()
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        labels, n = ndimage.label(lungs[k])
        areas = np.bincount(labels.ravel())[1:] * pixel_mm2
        centres = ndimage.center_of_mass(lungs[k], labels, range(1, n + 1))
        for j, (area, (_, x)) in enumerate(zip(areas, centres), start=1):
            if area < max_area_mm2 and abs(x - mid) * sp[2] < midline_mm:
                out[k][labels == j] = False
    return out


def within_in_slice(mask: np.ndarray, margin_mm: float, spacing_yx) -> np.ndarray:
    """Voxels within `margin_mm` of `mask` in their own axial slice (slices without mask stay empty)."""
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        out[k] = ndimage.distance_transform_edt(~mask[k], sampling=spacing_yx) <= margin_mm
    return out


def _largest_components_single(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)
