"""CT volumes stored as single files (MetaImage, NIfTI, NRRD) beside DICOM series, as one kind of record.

The public lung-nodule data does not ship as DICOM only: LUNA16's 888 scans are MetaImage
(.mhd/.raw), research pipelines pass NIfTI (.nii/.nii.gz) and NRRD (.nrrd/.nhdr). SimpleITK reads
all of them and reports geometry in ITK's physical space, which *is* DICOM's LPS millimetres
(NIfTI's RAS sform/qform is converted by ITK, and NRRD's "space" field is honoured); nibabel
would leave the RAS -> LPS flip and NRRD/MetaImage to us.

A file volume becomes the same `dicom.Series` record a DICOM series does (a `FileVolume`), with
the same world convention (origin = world position of voxel [0,0,0], spacing_zyx, 3x3 direction
whose columns are the column, row and slice axes) and the same QC (data_adapters.dicom's
plausibility checks). Its `seriesuid` is the file name without its format suffix, as LUNA16
names its scans (`1.3.6...mhd` -> `1.3.6...`; `.nii.gz` is stripped whole).

Stored axis order is a writer's choice (NIfTI from dcm2niix is often flipped front to back), but
the detector learned axial slices as scanners write them. Every file volume is therefore permuted
and flipped onto the closest LPS axes (the DICOMOrient "LPS" convention: column axis towards the
patient's left, rows towards posterior, slices towards superior); world coordinates are unchanged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_adapters import dicom

HEADER_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr")
_DATA_FILE_KEYS = {".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.I | re.M),
                   ".nhdr": re.compile(r"^\s*data ?file\s*:\s*(.+?)\s*$", re.I | re.M)}  # fmt: skip
_MHD_MODALITY = {"MET_MOD_CT": "CT", "MET_MOD_MR": "MR", "MET_MOD_NM": "NM", "MET_MOD_US": "US"}


def volume_suffix(path: str | os.PathLike[str]) -> str | None:
    """The volume format suffix of `path` (lower case, `.nii.gz` whole), or None for other files."""
    name = Path(path).name.lower()
    return next((s for s in HEADER_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)


def series_uid_of(path: str | os.PathLike[str]) -> str:
    """LUNA16's seriesuid of a volume file: its name without the format suffix."""
    suffix = volume_suffix(path) or Path(path).suffix
    return Path(path).name[: -len(suffix)] if suffix else Path(path).name


@dataclass
class FileVolume(dicom.Series):
    """A volume read from one file (plus its detached data file for .mhd/.nhdr), as a `dicom.Series`."""

    path: str = ""
    shape: tuple[int, int, int] | None = None
    # axis permutation and flips that bring the stored array onto the closest LPS axes
    reorder: tuple[tuple[int, int, int], tuple[bool, bool, bool]] | None = None

    @property
    def shape_zyx(self) -> tuple[int, int, int] | None:
        return self.shape

    def record(self) -> dict[str, Any]:
        rec = super().record()
        rec["n_slices"] = int(self.shape[0]) if self.shape else 0
        rec["path"] = self.path
        return rec


def _companions(header: Path) -> list[Path]:
    """The detached data file(s) a .mhd/.nhdr names (so a folder walk does not call them 'not DICOM')."""
    pattern = _DATA_FILE_KEYS.get(volume_suffix(header) or "")
    if pattern is None:
        return []
    try:
        text = header.read_bytes()[:65536].decode("latin-1")
    except OSError:
        return []
    match = pattern.search(text)
    if not match or match.group(1).upper() in ("LOCAL", "LIST"):
        return []
    names = match.group(1).split()
    return [header.parent / name for name in names if "%" not in name]


def _lps_reorder(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each LPS world axis (x, y, z): which stored index axis (i, j, k) runs closest to it, and flipped?

    Greedy on the largest cosine first, so oblique volumes still get a one-to-one assignment.
    """
    weights = np.abs(direction)  # rows: world axis, columns: index axis
    perm, flips = [-1, -1, -1], [False, False, False]
    used_world, used_index = set(), set()
    for flat in np.argsort(-weights, axis=None):
        world, index = divmod(int(flat), 3)
        if world in used_world or index in used_index:
            continue
        perm[world], flips[world] = index, bool(direction[world, index] < 0)
        used_world.add(world)
        used_index.add(index)
    return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])


def _apply_geometry(vol: FileVolume, size_ijk, spacing_ijk, origin, direction) -> None:
    """Fill the record's geometry in the LPS axis order that `reorder` will give the pixels."""
    direction = np.asarray(direction, float).reshape(3, 3)
    perm, flips = _lps_reorder(direction)
    size_ijk, spacing_ijk = np.asarray(size_ijk, int), np.asarray(spacing_ijk, float)
    new_dir = np.stack([direction[:, p] * (-1.0 if f else 1.0) for p, f in zip(perm, flips)], axis=1)
    far = np.array([(size_ijk[p] - 1) if f else 0 for p, f in zip(perm, flips)], float)
    corner = np.zeros(3)
    corner[list(perm)] = far  # stored index of the new voxel [0,0,0]
    new_origin = np.asarray(origin, float) + direction @ (corner * spacing_ijk)
    new_size, new_spacing = size_ijk[list(perm)], spacing_ijk[list(perm)]
    vol.reorder = (perm, flips)
    vol.shape = (int(new_size[2]), int(new_size[1]), int(new_size[0]))
    vol.spacing_zyx = (float(new_spacing[2]), float(new_spacing[1]), float(new_spacing[0]))
    vol.origin_xyz = tuple(float(v) for v in new_origin)
    vol.direction = new_dir
    if perm != (0, 1, 2) or any(flips):
        vol.reasons.append("stored axes reordered to the closest LPS axes (world coordinates unchanged)")


def _reader(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return reader


def read_header(path: Path) -> FileVolume:
    """Geometry and QC of one volume file from its header only (pixels are read by `load_volume`)."""
    companions = _companions(path)
    vol = FileVolume(seriesuid=series_uid_of(path), modality="CT", files=1 + len(companions), path=str(path))
    missing = [p.name for p in companions if not p.is_file()]
    if missing:
        vol.reject(f"{path.name}: its data file {missing[0]} is missing")
        return vol
    try:
        reader = _reader(path)
        reader.ReadImageInformation()
        size, stored_dim = list(reader.GetSize()), reader.GetDimension()
        dim = 3 if stored_dim == 4 and size[3] == 1 else stored_dim  # one time point of a 4-D file
        if dim != 3:
            vol.reject(f"{path.name}: a {dim}-D image ({'x'.join(map(str, size))}), not a 3-D volume")
            return vol
        if reader.GetNumberOfComponents() != 1:
            vol.reject(f"{path.name}: {reader.GetNumberOfComponents()} components per voxel, CT is scalar")
            return vol
        keys = set(reader.GetMetaDataKeys())
        if "Modality" in keys:
            vol.modality = _MHD_MODALITY.get(reader.GetMetaData("Modality"), "CT")
        direction = np.asarray(reader.GetDirection(), float).reshape(stored_dim, stored_dim)[:3, :3]
        _apply_geometry(vol, size, reader.GetSpacing()[:3], reader.GetOrigin()[:3], direction)
    except RuntimeError as exc:  # ITK reports every unreadable file this way
        vol.reject(f"{path.name}: unreadable volume ({_itk_message(exc)})")
        return vol
    if vol.modality != "CT":
        vol.reject(f"modality {vol.modality} is not CT")
    else:
        dicom.check_volume_geometry(vol)
    return vol


def _itk_message(exc: Exception) -> str:
    """ITK's exception text is a multi-line dump whose last line is the most specific: keep that one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    last = re.sub(r"^(\[\w+\]\s*|itk::ERROR:\s*\w+\(0x[0-9a-f]+\):\s*)", "", lines[-1]) if lines else ""
    return (last or type(exc).__name__)[:200]


def load_volume(vol: dicom.Series) -> None:
    """Decode the pixels into `vol.hu` (float32, z,y,x on the LPS axis order); DICOM series go to dicom.py."""
    if not isinstance(vol, FileVolume):
        dicom.load_volume(vol)
        return
    import SimpleITK as sitk

    try:
        image = _reader(Path(vol.path)).Execute()
    except RuntimeError as exc:
        vol.reject(f"{Path(vol.path).name}: pixels could not be read ({_itk_message(exc)})")
        vol.hu = None
        return
    arr = sitk.GetArrayFromImage(image)  # (k, j, i) or (1, k, j, i) for a 4-D file with one time point
    arr = arr.reshape(arr.shape[-3:]).astype(np.float32, copy=False)
    perm, flips = vol.reorder or ((0, 1, 2), (False, False, False))
    # array axes are (k, j, i) = index axes (2, 1, 0); new array axes are LPS (z, y, x) = perm[2], perm[1], perm[0]
    arr = np.transpose(arr, [2 - perm[2], 2 - perm[1], 2 - perm[0]])
    flip_axes = [axis for axis, flipped in zip((2, 1, 0), flips) if flipped]
    vol.hu = np.ascontiguousarray(np.flip(arr, axis=flip_axes) if flip_axes else arr)
    dicom.check_hu(vol)


def find_volume_files(root: Path) -> tuple[list[Path], set[Path]]:
    """Volume header files under `root` and the detached data files they name."""
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts))
    headers = [p for p in files if volume_suffix(p)]
    companions = {c.resolve() for h in headers for c in _companions(h)}
    return headers, companions


def read_volumes(
    root: str | os.PathLike[str],
    *,
    gap_policy: str = "reject",
    load: bool = True,
    modalities: tuple[str, ...] = ("CT",),
) -> tuple[list[dicom.Series], list[dict[str, str]]]:
    """Every DICOM series and every volume file under `root`, as records of one type; plus skipped files.

    Volume files and their detached data files are not listed as skipped non-DICOM files. A second
    volume whose seriesuid is already taken (same stem, or a DICOM series of that UID) is rejected.
    """
    root = Path(root)
    series, skipped = dicom.read_series(root, gap_policy=gap_policy, load=load, modalities=modalities)
    headers, companions = find_volume_files(root)
    mine = {h.resolve() for h in headers} | companions
    skipped = [item for item in skipped if Path(item["path"]).resolve() not in mine]
    taken = {s.seriesuid: "a DICOM series" for s in series}
    base = root if root.is_dir() else root.parent
    for path in headers:
        vol = read_header(path)
        vol.folder = str(path.relative_to(base))  # the table's "folder" column: here, the file itself
        if vol.seriesuid in taken:
            vol.reject(f"seriesuid {vol.seriesuid} is already used by {taken[vol.seriesuid]}")
        else:
            taken[vol.seriesuid] = str(path)
        if vol.status == "ok" and load:
            load_volume(vol)
        series.append(vol)
    return series, skipped
