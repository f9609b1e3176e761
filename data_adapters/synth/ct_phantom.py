"""Synthetic chest-CT phantoms written as real DICOM series, with LUNA16-style annotations.

Why a phantom and not random blobs: a detector learns what separates nodules from their look-alikes.
The phantom has the look-alikes real scans have (vessels as branching tubes that cross slices like
nodules do, airways, the heart, the spine, the chest wall that juxtapleural nodules touch) and the
acquisition variety a hospital network has (pixel spacing, slice thickness, slice order, rescale
slope/intercept, signed or unsigned pixels, noise). Sites differ in scanner and prevalence, which is
what makes federated training non-IID.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from common import atomic
from data_adapters.synth import ct_variety

SCALES = {
    # name: (rows=cols, slices, pixel spacing mm range, slice mm range, nodule diameter range, nodules/scan)
    "tiny": (48, 24, (5.6, 6.4), (6.0, 7.0), (12.0, 24.0), (2, 3)),
    "small": (80, 44, (3.6, 4.2), (4.0, 4.8), (8.0, 26.0), (2, 4)),
    "full": (192, 72, (1.6, 1.9), (2.3, 2.8), (4.0, 30.0), (2, 5)),
}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class Nodule:
    """One ground-truth nodule in world coordinates."""

    xyz: tuple[float, float, float]
    diameter_mm: float
    kind: str  # solid | part-solid | ground-glass
    juxtapleural: bool


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    z, y, x = grid
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2


def _tube(vol: np.ndarray, spacing, a, b, radius: float, value: float, mask: np.ndarray | None = None) -> None:
    """Paint a cylinder of `radius` mm from a to b (mm, zyx) into `vol` (only where `mask`)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    sp = np.asarray(spacing, float)
    lo = np.maximum(np.floor((np.minimum(a, b) - radius) / sp).astype(int) - 1, 0)
    hi = np.minimum(np.ceil((np.maximum(a, b) + radius) / sp).astype(int) + 2, vol.shape)
    if np.any(hi <= lo):
        return
    zz, yy, xx = np.meshgrid(*[np.arange(lo[d], hi[d]) * sp[d] for d in range(3)], indexing="ij")
    pts = np.stack([zz, yy, xx], -1)
    ab = b - a
    t = np.clip(((pts - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
    dist = np.linalg.norm(pts - (a + t[..., None] * ab), axis=-1)
    inside = dist <= radius
    sl = tuple(slice(lo[d], hi[d]) for d in range(3))
    if mask is not None:
        inside &= mask[sl]
    vol[sl][inside] = value


def _vessel_tree(vol, lung, spacing, rng, root, direction, radius, depth) -> None:
    """Recursive branching tubes: each branch shorter and thinner, inside the lung only."""
    if depth == 0 or radius < 0.6:
        return
    length = rng.uniform(6, 12) * radius
    end = root + direction * length
    _tube(vol, spacing, root, end, radius, rng.uniform(20, 60), lung)
    for _ in range(2):
        turn = rng.normal(0, 0.6, 3)
        new_dir = direction + turn
        new_dir /= np.linalg.norm(new_dir)
        _vessel_tree(vol, lung, spacing, rng, end, new_dir, radius * rng.uniform(0.65, 0.8), depth - 1)


def make_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing,
    diam_range,
    n_nodules: int,
    vrng: np.random.Generator | None = None,
):
    """One phantom volume in HU (z,y,x) with its nodules in voxel-mm coordinates (zyx mm from voxel 0).

    With `vrng`, the anatomy variety of ct_variety.py is drawn from it (ribs, hilar vessels,
    fissures, parenchyma, table, juxtavascular and spiculated nodules) and the scanner blur is left
    to `ct_variety.acquire`; without it the phantom is the default one, bit for bit.
    """
    nz, ny, nx = shape
    sp = np.asarray(spacing, float)
    size = np.asarray(shape) * sp
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij", sparse=True)
    vol = np.full(shape, -1000.0, np.float32)  # air around the patient
    cy, cx = size[1] * 0.5, size[2] * 0.5
    body = _ellipsoid(grid, (size[0] / 2, cy, cx), (size[0] * 5, size[1] * 0.36, size[2] * 0.44)) <= 1
    vol[body] = -90.0  # fat
    inner = _ellipsoid(grid, (size[0] / 2, cy, cx), (size[0] * 5, size[1] * 0.33, size[2] * 0.41)) <= 1
    vol[inner] = 45.0  # muscle / soft tissue
    lung = np.zeros(shape, bool)
    for side in (-1, 1):
        centre = (size[0] * rng.uniform(0.5, 0.6), cy - size[1] * 0.02, cx + side * size[2] * 0.19)
        radii = (size[0] * rng.uniform(0.55, 0.7), size[1] * 0.25, size[2] * rng.uniform(0.14, 0.16))
        lung |= _ellipsoid(grid, centre, radii) <= 1
    heart = (
        _ellipsoid(
            grid,
            (size[0] * 0.2, cy - size[1] * 0.1, cx + size[2] * 0.04),
            (size[0] * 0.35, size[1] * 0.14, size[2] * 0.13),
        )
        <= 1
    )
    lung &= ~heart
    vol[lung] = -860.0
    if vrng is not None:
        ct_variety.parenchyma(vol, lung, sp, vrng)
    vol[heart] = 40.0
    spine = _ellipsoid(grid, (size[0] / 2, cy + size[1] * 0.22, cx), (size[0] * 5, size[1] * 0.06, size[2] * 0.05)) <= 1
    vol[spine] = 450.0
    # airways: trachea down the middle, two main bronchi (air inside a soft-tissue wall)
    top, carina = np.array([0.0, cy - size[1] * 0.05, cx]), np.array([size[0] * 0.55, cy - size[1] * 0.02, cx])
    top[0] = size[0] - 1
    _tube(vol, sp, top, carina, 9.0, 20.0)
    _tube(vol, sp, top, carina, 7.0, -990.0)
    for side in (-1, 1):
        end = carina + np.array([-size[0] * 0.15, 0.0, side * size[2] * 0.15])
        _tube(vol, sp, carina, end, 6.0, 20.0)
        _tube(vol, sp, carina, end, 4.5, -990.0)
    # vessels: branching trees from each hilum
    for side in (-1, 1):
        hilum = np.array([size[0] * 0.5, cy, cx + side * size[2] * 0.1])
        for _ in range(3):
            d = np.array([rng.normal(0, 0.8), rng.normal(0, 0.5), side * 1.0])
            _vessel_tree(vol, lung, sp, rng, hilum, d / np.linalg.norm(d), rng.uniform(2.5, 4.0), 5)
    if vrng is None:
        nodules = _place_nodules(vol, lung, grid, sp, rng, diam_range, n_nodules)
        return ndimage.gaussian_filter(vol, sigma=0.6), nodules  # partial-volume blur of the scanner's PSF
    half = (size[1] * 0.33 - vrng.uniform(4, 22), size[2] * 0.41 - vrng.uniform(4, 22))
    ct_variety.ribs(vol, lung, sp, vrng, (cy, cx), half, _tube)
    hila = [np.array([size[0] * 0.5, cy, cx + side * size[2] * 0.1]) for side in (-1, 1)]
    vessels = ct_variety.hilar_vessels(vol, lung, sp, vrng, hila, _tube)
    ct_variety.fissures(vol, lung, sp, vrng)
    ct_variety.table(vol, sp, vrng, cy + size[1] * 0.36)
    nodules = _place_nodules(vol, lung, grid, sp, rng, diam_range, n_nodules, vrng, vessels)
    return vol, nodules


def _place_nodules(
    vol, lung, grid, sp, rng, diam_range, n_nodules, vrng=None, vessels=None
) -> list[tuple[np.ndarray, float, str, bool]]:
    """Nodules inside the lung (some touching the pleura), solid / part-solid / ground-glass.

    With `vrng` (variety), a quarter touch a vessel of `vessels` and a third of the solid ones are spiculated.
    """
    dist_in = ndimage.distance_transform_edt(lung, sampling=sp)
    near_vessel = (
        ndimage.distance_transform_edt(~vessels, sampling=sp) if vessels is not None and vessels.any() else None
    )
    placed: list[tuple[np.ndarray, float, str, bool]] = []
    for _ in range(n_nodules * 30):
        if len(placed) == n_nodules:
            break
        diameter = float(np.exp(rng.uniform(np.log(diam_range[0]), np.log(diam_range[1]))))
        r = diameter / 2
        juxta = rng.random() < 0.2
        ok = (dist_in > r * 0.4) & (dist_in < r * 0.9) if juxta else dist_in > r + 2.0
        if vrng is not None and near_vessel is not None and not juxta and vrng.random() < 0.25:
            ok = (dist_in > r * 0.6) & (near_vessel > r * 0.5) & (near_vessel < r * 1.0)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            continue
        centre = np.array(np.unravel_index(rng.choice(idx), lung.shape), float) * sp
        if any(np.linalg.norm(centre - c) < (r + d / 2 + 6) for c, d, _, _ in placed):
            continue
        kind = rng.choice(["solid", "solid", "part-solid", "ground-glass"])
        d2 = _ellipsoid(grid, centre, (r, r, r))
        lobulated = d2 <= 1 + 0.15 * np.sin(3 * grid[1] / max(r, 1)) * np.cos(3 * grid[2] / max(r, 1))
        region = lobulated & (lung | (d2 <= 1))
        if kind == "solid":
            vol[region] = value = rng.uniform(-20, 60)
            if vrng is not None and diameter > 8 and vrng.random() < 0.35:
                ct_variety.spicules(vol, sp, vrng, centre, diameter, value, _tube)
        elif kind == "part-solid":
            vol[region] = rng.uniform(-600, -450)
            vol[d2 <= 0.3] = rng.uniform(-20, 40)
        else:
            vol[region] = rng.uniform(-650, -500)
        placed.append((centre, diameter, str(kind), bool(juxta)))
    return placed


def _ds(value: float) -> str:
    """`value` as a valid DS string (<= 16 characters, as precise as that allows)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def write_series(
    out_dir: Path,
    hu: np.ndarray,
    spacing,
    origin_xyz,
    *,
    rng,
    patient: str,
    reverse_files: bool,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
) -> str:
    """Write `hu` (z,y,x) as one CT series of single-frame files; return its SeriesInstanceUID.

    Slice k lies at origin + k * spacing[0] * normal (normal = row cosines x column cosines), so an
    orientation whose normal points to -z stores the stack in decreasing z order.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    entropy = [patient, str(rng.integers(1 << 62))]
    study_uid, series_uid = (
        generate_uid(entropy_srcs=entropy + ["study"]),
        generate_uid(entropy_srcs=entropy + ["series"]),
    )
    frame_uid = generate_uid(entropy_srcs=entropy + ["frame"])
    unsigned = bool(rng.random() < 0.5)
    slope = 0.5 if (unsigned and rng.random() < 0.5) else 1.0
    intercept = -1024.0 if unsigned else 0.0
    decreasing = bool(rng.random() < 0.5)  # instance 1 at the top of the stack: the reader must sort
    nz = hu.shape[0]
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(nz):
        instance = (nz - k) if decreasing else (k + 1)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=entropy + [f"sop{k}"])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            f"PHANTOM^{patient}",
            patient,
            "19600101",
            "O",
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.InstitutionName, ds.ReferringPhysicianName = "20260101", "Synthetic Hospital", "DOE^JANE"
        ds.StudyTime, ds.SeriesDate, ds.SeriesTime, ds.ContentDate, ds.ContentTime = (
            "120000", "20260101", "120000", "20260101", "120000",
        )  # fmt: skip
        ds.AccessionNumber, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = f"A{patient}", "1", 1, instance
        ds.Modality, ds.ImageType, ds.BodyPartExamined = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"], "CHEST"
        ds.PatientPosition, ds.PositionReferenceIndicator = "HFS", ""
        ds.Manufacturer, ds.KVP, ds.AcquisitionNumber = "fedsite phantom", _ds(120), 1
        # DS values are at most 16 characters (PS3.5 6.2): write them the way a scanner would
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.ImagePositionPatient = [_ds(v) for v in np.asarray(origin_xyz, float) + k * spacing[0] * normal]
        ds.SliceThickness, ds.PixelSpacing = _ds(spacing[0]), [_ds(spacing[1]), _ds(spacing[2])]
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0 if unsigned else 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "HU"
        stored = np.round((hu[k] - intercept) / slope)
        dtype = np.uint16 if unsigned else np.int16
        info = np.iinfo(dtype)
        ds.PixelData = np.clip(stored, info.min, info.max).astype(dtype).tobytes()
        number = (nz - 1 - k) if reverse_files else k
        with atomic.atomic_path(out_dir / f"IM{number:05d}") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return str(series_uid)


def synth_dataset(
    out: str | Path,
    n_scans: int,
    *,
    seed: int = 0,
    site: int = 0,
    n_sites: int = 1,
    scale: str = "full",
    variety: float = 0.0,
) -> Path:
    """Write `n_scans` phantom series under `out/scan_XXX/` and `out/annotations.csv`; return `out`.

    `site` shifts the scanner (pixel spacing, slice thickness, noise) and the nodule prevalence, so
    sites of one federation are heterogeneous hospitals. `variety` (a fraction of the scans, spread
    evenly: 0.5 makes every second one) adds ct_variety.py's anatomy and acquisition (slices of 1-5 mm
    with partial volume, kernels, ribs, hilar vessels, fissures, ...) from a separate random stream:
    with 0 the scans of a seed are the default ones, bit for bit.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}")
    size, nz, px_range, dz_range, diam_range, per_scan = SCALES[scale]
    out = Path(out)
    rng = np.random.default_rng([seed, site])
    frac = site / max(n_sites - 1, 1)
    noise_sigma = 12.0 + 25.0 * frac
    if not 0.0 <= variety <= 1.0:
        raise ValueError("variety must be a fraction in [0, 1]")
    stream = np.random.default_rng([seed, site, 99])
    rows = []
    for n in range(n_scans):
        vrng = stream if int((n + 1) * variety) > int(n * variety) else None
        px = rng.uniform(*px_range) * (1 + 0.08 * frac)
        dz = rng.uniform(*dz_range) * (1 + 0.1 * frac)
        shape = (nz, size, size)
        n_nodules = int(rng.integers(per_scan[0], per_scan[1] + 1)) + (1 if rng.random() < 0.3 * frac else 0)
        if vrng is None:
            hu, nodules = make_phantom(rng, shape, (dz, px, px), diam_range, n_nodules)
            hu += rng.normal(0, noise_sigma, hu.shape).astype(np.float32)
        else:  # thin sub-slices averaged into slices of 1-5 mm over the same extent (partial volume)
            thick = float(vrng.choice([t for t in ct_variety.THICKNESSES if t >= dz_range[0] * 0.4]))
            sub = int(np.ceil(thick / 1.25))
            n_out = max(int(round(nz * dz / thick)), 8)
            hu, nodules = make_phantom(
                rng, (n_out * sub, size, size), (thick / sub, px, px), diam_range, n_nodules, vrng
            )
            hu = ct_variety.acquire(hu, sub, px, vrng)
            shift = np.array([(sub - 1) / 2 * thick / sub, 0.0, 0.0])
            nodules = [(c - shift, d, k, j) for c, d, k, j in nodules]
            dz = thick
        origin = np.array(
            [-size * px / 2 + rng.uniform(-5, 5), -size * px / 2 + rng.uniform(-5, 5), rng.uniform(-300, -100)]
        )
        patient = f"S{site}-{seed}-{n:03d}"
        uid = write_series(
            out / f"scan_{n:03d}", hu, (dz, px, px), origin, rng=rng, patient=patient, reverse_files=bool(n % 2)
        )
        for centre_zyx, diameter, kind, juxta in nodules:
            xyz = origin + centre_zyx[::-1]
            rows.append([uid, *[f"{v:.3f}" for v in xyz], f"{diameter:.2f}", kind, int(juxta)])
    atomic.write_csv(
        out / "annotations.csv",
        ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "kind", "juxtapleural"],
        rows,
    )
    return out
