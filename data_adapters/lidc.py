"""LIDC-IDRI reader XML -> LUNA16's annotations.csv and annotations_excluded.csv.

LIDC-IDRI ships each CT series with one XML file (`LidcReadMessage`) holding up to four
radiologists' reads (`readingSession`). Each read lists `unblindedReadNodule`s: a nodule >= 3 mm
is outlined slice by slice (`roi`: `imageZposition`, `imageSOP_UID`, `inclusion`, `edgeMap`
points in pixel `xCoord`/`yCoord`); a nodule < 3 mm is one `edgeMap` point; `nonNodule` marks a
lesion that is not a nodule (`locus`).

LUNA16 (Setio et al., 2017) turned these into its reference standard: readers' marks of one
lesion are merged when their centres lie closer than the sum of their radii; a merged nodule
that at least 3 of the 4 readers marked as >= 3 mm is a reference nodule, its position and
diameter the mean of the readers'; every other finding (a >= 3 mm nodule fewer readers marked, a
< 3 mm nodule, a non-nodule) goes to annotations_excluded.csv, where the evaluation ignores hits.
A reader's diameter is the equivalent-sphere diameter of the volume its contours enclose.

Contours become world coordinates through the series' own geometry (data_adapters.dicom), so
every coordinate written is LPS millimetres as the DICOM series defines them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_adapters import dicom

MIN_READERS = 3
NO_DIAMETER = -1.0  # LUNA16's annotations_excluded.csv writes -1 where a finding has no size
_SMALL_RADIUS_MM = 1.5  # a < 3 mm nodule or non-nodule point: at most this far from its true centre


@dataclass
class Mark:
    """One reader's finding: centre in world mm, equivalent diameter (NO_DIAMETER for a point)."""

    reader: int
    kind: str  # nodule | small | nonnodule
    xyz: np.ndarray
    diameter_mm: float


@dataclass
class RoiPlane:
    """One contour of a nodule on one slice: pixel (x=column, y=row) points, and whether it adds or cuts."""

    z: float
    sop_uid: str
    points: np.ndarray
    inclusion: bool = True


@dataclass
class ReaderNodule:
    reader: int
    kind: str
    rois: list[RoiPlane] = field(default_factory=list)


def _local(tag: str) -> str:
    """Tag name without its XML namespace (LIDC files use http://www.nih.gov, older ones none)."""
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in elem if _local(c.tag) == name), None)


def _children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in elem if _local(c.tag) == name]


def _text(elem: ET.Element, name: str, default: str = "") -> str:
    node = _child(elem, name)
    return (node.text or "").strip() if node is not None and node.text else default


def _points(elem: ET.Element, container: str) -> np.ndarray:
    pts = [(float(_text(e, "xCoord")), float(_text(e, "yCoord"))) for e in _children(elem, container)]
    return np.array(pts, float).reshape(-1, 2)


def parse_xml(path: str | Path) -> tuple[str, list[ReaderNodule]]:
    """(SeriesInstanceUID, every reader's findings) of one LIDC XML file; ValueError names what is wrong."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    if _local(root.tag) != "LidcReadMessage":
        raise ValueError(f"root element is {_local(root.tag)}, not LidcReadMessage (a CT read)")
    header = _child(root, "ResponseHeader")
    uid = _text(header, "SeriesInstanceUid") if header is not None else ""
    if not uid:
        raise ValueError("no ResponseHeader/SeriesInstanceUid")
    found: list[ReaderNodule] = []
    for reader, session in enumerate(_children(root, "readingSession")):
        for nod in _children(session, "unblindedReadNodule"):
            rois = [
                RoiPlane(
                    z=float(_text(roi, "imageZposition", "nan")),
                    sop_uid=_text(roi, "imageSOP_UID"),
                    points=_points(roi, "edgeMap"),
                    inclusion=_text(roi, "inclusion", "TRUE").upper() == "TRUE",
                )
                for roi in _children(nod, "roi")
            ]
            n_points = sum(len(r.points) for r in rois)
            found.append(ReaderNodule(reader, "nodule" if n_points > 1 else "small", rois))
        for non in _children(session, "nonNodule"):
            z = float(_text(non, "imageZposition", "nan"))
            roi = RoiPlane(z, _text(non, "imageSOP_UID"), _points(non, "locus"))
            found.append(ReaderNodule(reader, "nonnodule", [roi]))
    return uid, found


class SliceLocator:
    """Maps an ROI's slice (by SOP Instance UID, else by z position) to its index in a sorted series."""

    def __init__(self, series: dicom.Series):
        import pydicom

        self.series = series
        self.z = np.array([float(s.position[2]) for s in series.slices])
        self.by_uid: dict[str, int] = {}
        for k, info in enumerate(series.slices):
            try:
                ds = pydicom.dcmread(info.path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                self.by_uid[str(ds.SOPInstanceUID)] = k
            except Exception:  # a header unreadable now was readable a moment ago: fall back to z
                continue

    def index(self, roi: RoiPlane) -> int:
        if roi.sop_uid in self.by_uid:
            return self.by_uid[roi.sop_uid]
        k = int(np.argmin(np.abs(self.z - roi.z)))
        if abs(self.z[k] - roi.z) > 0.5 * self.series.spacing_zyx[0] + 1e-3:
            raise ValueError(f"no slice at imageZposition {roi.z:g} (SOP {roi.sop_uid or '?'})")
        return k


def _filled(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels enclosed by an edge map, the outline included (LIDC outlines run through boundary pixels)."""
    from skimage.draw import polygon

    mask = np.zeros(shape, bool)
    rr, cc = polygon(points[:, 1], points[:, 0], shape)
    mask[rr, cc] = True
    r = np.clip(np.round(points[:, 1]).astype(int), 0, shape[0] - 1)
    c = np.clip(np.round(points[:, 0]).astype(int), 0, shape[1] - 1)
    mask[r, c] = True
    return mask


def to_mark(nodule: ReaderNodule, locator: SliceLocator) -> Mark:
    """One reader's finding in world mm: contour centroid and equivalent diameter, or the point itself."""
    series = locator.series
    if nodule.kind != "nodule":
        roi = nodule.rois[0]
        x, y = roi.points[0]
        xyz = dicom.voxel_to_world(series, [[locator.index(roi), y, x]])[0]
        return Mark(nodule.reader, nodule.kind, xyz, NO_DIAMETER)
    shape = series.slices[0].shape
    voxels: dict[int, np.ndarray] = {}
    for roi in sorted(nodule.rois, key=lambda r: not r.inclusion):  # holes cut after every outline is in
        k = locator.index(roi)
        plane = voxels.setdefault(k, np.zeros(shape, bool))
        region = _filled(roi.points, shape)
        plane[region] = roi.inclusion
    zyx = np.concatenate([np.column_stack([np.full(int(m.sum()), k), *np.nonzero(m)]) for k, m in voxels.items()])
    if not len(zyx):
        raise ValueError("a nodule whose contours enclose no pixel")
    volume = len(zyx) * float(np.prod(series.spacing_zyx))
    centre = dicom.voxel_to_world(series, zyx.mean(0, keepdims=True))[0]
    return Mark(nodule.reader, "nodule", centre, float((6.0 * volume / np.pi) ** (1.0 / 3.0)))


def _radius(mark: Mark) -> float:
    return mark.diameter_mm / 2.0 if mark.diameter_mm > 0 else _SMALL_RADIUS_MM


def cluster(marks: list[Mark]) -> list[list[Mark]]:
    """Groups of marks of one lesion: linked when centres are closer than the sum of their radii."""
    n = len(marks)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if np.linalg.norm(marks[i].xyz - marks[j].xyz) < _radius(marks[i]) + _radius(marks[j]):
                parent[find(i)] = find(j)
    groups: dict[int, list[Mark]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(marks[i])
    return sorted(groups.values(), key=lambda g: tuple(np.mean([m.xyz for m in g], 0)))


def consensus(marks: list[Mark], min_readers: int = MIN_READERS) -> tuple[list[tuple], list[tuple]]:
    """(reference nodules, excluded findings) as (xyz, diameter_mm, n_readers) from one series' marks."""
    nodules = [m for m in marks if m.kind == "nodule"]
    included, excluded = [], []
    for group in cluster(nodules):
        readers = sorted({m.reader for m in group})
        # one vote per reader: a reader who split a lesion into two marks counts once, at their mean
        per_reader = [[m for m in group if m.reader == r] for r in readers]
        xyz = np.mean([np.mean([m.xyz for m in ms], axis=0) for ms in per_reader], axis=0)
        diameter = float(np.mean([np.mean([m.diameter_mm for m in ms]) for ms in per_reader]))
        (included if len(readers) >= min_readers else excluded).append((xyz, diameter, len(readers)))
    for m in marks:
        if m.kind != "nodule":
            excluded.append((m.xyz, NO_DIAMETER, 1))
    return included, excluded
