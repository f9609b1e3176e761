"""Lesion label masks (NRRD, NIfTI, MetaImage) -> LUNA16-style annotations.

Why: real scans often come with a voxel mask of the lesion drawn by an expert (radiomics test data,
segmentation challenges) rather than LUNA16's centre + diameter. `medical evaluate` and the
real-scan benchmarks need the latter. Each connected component (26-connected) of the mask's
non-zero voxels is one finding: centre = its centroid in world LPS mm (through the file's own
origin, spacing and direction, so a reordered or flipped file gives the same point), diameter =
that of the sphere of equal volume (LUNA16's diameters are sizes of this kind, not extents), and,
for the reader, the largest in-plane extent (the longest chord of any axial slice of it, what a
radiologist's RECIST measurement approximates).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import pdist

from common.errors import UserError

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "max_inplane_mm", "volume_ml", "voxels")


def _max_chord_mm(points_yx: np.ndarray, spacing_yx: np.ndarray) -> float:
    """Longest distance between two voxel centres of one slice, plus one voxel (the voxels' own width)."""
    if len(points_yx) < 2:
        return float(spacing_yx.mean())
    pts = points_yx * spacing_yx
    if len(pts) > 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear voxels: keep them all
            pass
    return float(pdist(pts).max() + spacing_yx.mean())


def label_annotations(label_path: str | Path, seriesuid: str) -> list[dict[str, float | str | int]]:
    """One row per connected lesion of the mask at `label_path` (see the module docstring)."""
    import SimpleITK as sitk

    path = Path(label_path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise UserError(f"{path}: unreadable label volume ({str(exc).strip().splitlines()[-1][:160]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{path}: a label must be a scalar 3-D volume (got {image.GetDimension()}-D)")
    mask = sitk.GetArrayFromImage(image) != 0  # (k, j, i)
    if not mask.any():
        raise UserError(f"{path}: the label mask is empty (no non-zero voxel)")
    spacing_kji = np.asarray(image.GetSpacing(), float)[::-1]
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    rows = []
    for index, sl in enumerate(ndimage.find_objects(comps), 1):
        comp = comps[sl] == index
        kji = np.argwhere(comp) + [s.start for s in sl]
        centre_ijk = kji.mean(axis=0)[::-1]
        xyz = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in centre_ijk])
        volume_mm3 = len(kji) * voxel_ml * 1000.0
        # "in-plane" = within one stored slice (k); with an oblique direction this is the slice plane
        inplane = max(_max_chord_mm(kji[kji[:, 0] == k][:, 1:], spacing_kji[1:]) for k in np.unique(kji[:, 0]))
        rows.append(
            {
                "seriesuid": seriesuid,
                "coordX": round(float(xyz[0]), 2),
                "coordY": round(float(xyz[1]), 2),
                "coordZ": round(float(xyz[2]), 2),
                "diameter_mm": round((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0), 2),
                "max_inplane_mm": round(inplane, 2),
                "volume_ml": round(volume_mm3 / 1000.0, 3),
                "voxels": int(len(kji)),
            }
        )
    rows.sort(key=lambda r: -float(r["volume_ml"]))
    return rows


def parse_label_argument(arg: str) -> tuple[str, Path]:
    """`SERIESUID=LABEL` or `LABEL` (seriesuid = the label file's stem, as for a volume file)."""
    from data_adapters.volumes import series_uid_of

    if "=" in arg:
        uid, _, path = arg.partition("=")
        if not uid or not path:
            raise UserError(f"{arg!r}: expected SERIESUID=LABEL_FILE or LABEL_FILE")
        return uid, Path(path)
    return series_uid_of(arg), Path(arg)


def write_label_annotations(args: list[str], out_csv: str | Path) -> list[dict]:
    """Convert every `SERIESUID=LABEL` argument; write the CSV only once all were read (never a half file)."""
    from common.atomic import write_csv

    rows = [row for arg in args for row in label_annotations(*reversed(parse_label_argument(arg)))]
    write_csv(out_csv, list(COLUMNS), ([row[c] for c in COLUMNS] for row in rows))
    return rows
