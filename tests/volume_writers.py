"""Writers of the public volume formats, byte by byte as the datasets ship them (for tests only).

The reader under test (SimpleITK) must not be the only writer, or a geometry slip would cancel out:
MetaImage is written with LUNA16's own header lines, NIfTI-1 with a RAS sform by hand, detached
NRRD in RAS space by hand. Each takes an LPS volume (z,y,x HU, origin of voxel 0, spacing, LPS
direction) and may store it with axes flipped, as dcm2niix and friends do.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def flipped(hu: np.ndarray, origin, spacing_zyx, direction, flip_xyz=(False, False, False)):
    """The same volume stored with the chosen index axes reversed: (array, origin, direction)."""
    direction = np.array(direction, float)
    origin = np.array(origin, float)
    spacing_xyz = np.array(spacing_zyx, float)[::-1]
    n_xyz = np.array(hu.shape)[::-1]
    for axis, flip in enumerate(flip_xyz):
        if flip:
            origin = origin + direction[:, axis] * spacing_xyz[axis] * (n_xyz[axis] - 1)
            direction[:, axis] *= -1
            hu = np.flip(hu, axis=2 - axis)
    return np.ascontiguousarray(hu), origin, direction


def write_luna16_mhd(path: Path, hu: np.ndarray, origin, spacing_zyx) -> None:
    """LUNA16's .mhd/.raw pair: identity TransformMatrix, Offset = origin, int16 little-endian."""
    raw = path.with_suffix(".raw")
    raw.write_bytes(np.asarray(hu, "<i2").tobytes())
    sx, sy, sz = (float(v) for v in spacing_zyx[::-1])
    nz, ny, nx = hu.shape
    path.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"Offset = {float(origin[0])!r} {float(origin[1])!r} {float(origin[2])!r}\nCenterOfRotation = 0 0 0\n"
        f"AnatomicalOrientation = RAI\nElementSpacing = {sx!r} {sy!r} {sz!r}\nDimSize = {nx} {ny} {nz}\n"
        f"ElementType = MET_SHORT\nElementDataFile = {raw.name}\n"
    )


def nifti1_bytes(hu: np.ndarray, origin_lps, spacing_zyx, direction_lps) -> bytes:
    """A single-file NIfTI-1 image (int16) whose sform maps voxel indices to RAS millimetres."""
    nz, ny, nx = hu.shape
    affine = LPS_TO_RAS @ np.column_stack([np.asarray(direction_lps, float) * np.array(spacing_zyx)[::-1]])
    shift = LPS_TO_RAS @ np.asarray(origin_lps, float)
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype INT16, bitpix
    struct.pack_into("<8f", header, 76, 1.0, *(float(v) for v in spacing_zyx[::-1]), 0, 0, 0, 0)
    struct.pack_into("<fff", header, 108, 352.0, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    struct.pack_into("<B", header, 123, 2 | 8)  # xyzt_units: mm, s
    struct.pack_into("<hh", header, 252, 0, 1)  # qform_code unknown, sform_code scanner
    for row in range(3):
        struct.pack_into("<4f", header, 280 + 16 * row, *affine[row], shift[row])
    header[344:348] = b"n+1\x00"
    # NIfTI stores x fastest: a C-order (z,y,x) array is already that layout
    return bytes(header) + b"\x00" * 4 + np.asarray(hu, "<i2").tobytes()


def write_nifti(path: Path, hu, origin, spacing_zyx, direction) -> None:
    data = nifti1_bytes(hu, origin, spacing_zyx, direction)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def write_nhdr_ras(path: Path, hu, origin_lps, spacing_zyx, direction_lps) -> None:
    """A detached NRRD header in right-anterior-superior space with its raw data file beside it."""
    raw = path.with_name(path.name[: -len(".nhdr")] + ".raw")
    raw.write_bytes(np.asarray(hu, "<i2").tobytes())
    cols = LPS_TO_RAS @ (np.asarray(direction_lps, float) * np.array(spacing_zyx)[::-1])
    origin = LPS_TO_RAS @ np.asarray(origin_lps, float)
    vec = " ".join("(" + ",".join(repr(float(v)) for v in cols[:, a]) + ")" for a in range(3))
    nz, ny, nx = hu.shape
    path.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\n"
        f"sizes: {nx} {ny} {nz}\nspace directions: {vec}\nkinds: domain domain domain\n"
        "endian: little\nencoding: raw\n"
        f"space origin: ({float(origin[0])!r},{float(origin[1])!r},{float(origin[2])!r})\ndata file: {raw.name}\n"
    )


def write_with_simpleitk(path: Path, hu, origin, spacing_zyx, direction) -> None:
    """.mha / .nrrd (attached) through SimpleITK's own writers."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.asarray(hu, np.int16))
    image.SetSpacing([float(v) for v in spacing_zyx[::-1]])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in np.asarray(direction, float).ravel()])
    sitk.WriteImage(image, str(path))
