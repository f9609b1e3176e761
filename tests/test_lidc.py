"""LIDC-IDRI reader XML -> LUNA16 annotations, on a DICOM series and an XML file in the real schema.

The XML is written here element by element as LIDC-IDRI ships it (LidcReadMessage in the
http://www.nih.gov namespace, ResponseHeader/SeriesInstanceUid, four readingSessions with
unblindedReadNodule/roi/edgeMap contours, < 3 mm nodules as one point, nonNodule/locus). The
contours outline spheres of known world centre and diameter, so the expected consensus comes
from geometry, not from the code under test.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pydicom
import pytest

from common.cli import main
from common.progress import set_quiet
from data_adapters import dicom
from data_adapters.synth.ct_phantom import write_series

NS = "http://www.nih.gov"
SPACING = (1.25, 0.7, 0.7)
ORIGIN = np.array([-180.2, -165.6, -312.5])
SHAPE = (40, 96, 96)


def _el(parent, tag, text=None):
    node = ET.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        node.text = str(text)
    return node


def _sphere_rois(session_nod, slices, centre_xyz, diameter, offset_px=(0, 0)):
    """Contours of a sphere on every slice it crosses, as LIDC edge maps (closed, pixel coordinates)."""
    radius = diameter / 2.0
    for pos, sop in slices:
        dz = pos[2] - centre_xyz[2]
        if abs(dz) >= radius:
            continue
        r_px = np.sqrt(radius**2 - dz**2) / SPACING[1]
        cx = (centre_xyz[0] - ORIGIN[0]) / SPACING[2] + offset_px[0]
        cy = (centre_xyz[1] - ORIGIN[1]) / SPACING[1] + offset_px[1]
        angles = np.linspace(0, 2 * np.pi, max(16, int(8 * r_px)), endpoint=False)
        pts = np.round(np.column_stack([cx + r_px * np.cos(angles), cy + r_px * np.sin(angles)])).astype(int)
        pts = pts[np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]]
        roi = _el(session_nod, "roi")
        _el(roi, "imageZposition", f"{pos[2]:.6f} ")
        _el(roi, "imageSOP_UID", sop)
        _el(roi, "inclusion", "TRUE")
        for x, y in [*pts, pts[0]]:
            edge = _el(roi, "edgeMap")
            _el(edge, "xCoord", x)
            _el(edge, "yCoord", y)


def _lidc_xml(path, series_uid, slices, plan):
    root = ET.Element(f"{{{NS}}}LidcReadMessage", {"uid": "1.3.6.1.4.1.14519.5.2.1.6279.6001.1"})
    header = _el(root, "ResponseHeader")
    _el(header, "Version", "1.8.1")
    _el(header, "TaskDescription", "Second unblinded read")
    _el(header, "SeriesInstanceUid", series_uid)
    for reader in range(4):
        session = _el(root, "readingSession")
        _el(session, "annotationVersion", "3.12")
        _el(session, "servicingRadiologistID", f"reader{reader}")
        for kind, centre, diameter, readers, offset in plan:
            if reader not in readers:
                continue
            if kind == "nodule":
                nod = _el(session, "unblindedReadNodule")
                _el(nod, "noduleID", f"Nodule {len(session):03d}")
                chars = _el(nod, "characteristics")
                _el(chars, "subtlety", 5)
                _el(chars, "malignancy", 3)
                _sphere_rois(nod, slices, centre, diameter, offset[reader])
                continue
            k = int(np.argmin([abs(p[2] - centre[2]) for p, _ in slices]))
            x, y = (int(round((centre[i] - ORIGIN[i]) / SPACING[2 - i])) for i in (0, 1))
            if kind == "small":
                nod = _el(session, "unblindedReadNodule")
                _el(nod, "noduleID", "small1")
                roi = _el(nod, "roi")
                _el(roi, "imageZposition", f"{slices[k][0][2]:.6f}")
                _el(roi, "imageSOP_UID", slices[k][1])
                _el(roi, "inclusion", "TRUE")
                edge = _el(roi, "edgeMap")
            else:
                nod = _el(session, "nonNodule")
                _el(nod, "nonNoduleID", "nn1")
                _el(nod, "imageZposition", f"{slices[k][0][2]:.6f}")
                _el(nod, "imageSOP_UID", slices[k][1])
                edge = _el(nod, "locus")
            _el(edge, "xCoord", x)
            _el(edge, "yCoord", y)
    ET.ElementTree(root).write(path, xml_declaration=True, encoding="UTF-8")


ZERO = {r: (0, 0) for r in range(4)}
# kind, world centre (x, y, z), diameter mm, readers who marked it, per-reader contour offset (pixels)
PLAN = [
    ("nodule", np.array([-150.0, -140.0, -290.0]), 12.0, (0, 1, 2, 3), {0: (0, 0), 1: (1, 0), 2: (0, -1), 3: (-1, 1)}),
    ("nodule", np.array([-130.0, -120.0, -280.0]), 8.0, (1, 2, 3), ZERO),
    ("nodule", np.array([-135.0, -160.0, -285.0]), 9.0, (0, 2), ZERO),
    ("small", np.array([-125.0, -150.0, -295.0]), -1.0, (0,), ZERO),
    ("nonnodule", np.array([-140.0, -125.0, -300.0]), -1.0, (3,), ZERO),
]


@pytest.fixture(scope="module")
def lidc(tmp_path_factory):
    set_quiet(True)
    root = tmp_path_factory.mktemp("lidc")
    hu = np.full(SHAPE, -800.0, np.float32)
    uid = write_series(root / "dicom" / "LIDC-0001", hu, SPACING, ORIGIN, rng=np.random.default_rng(1),
                       patient="LIDC", reverse_files=True)  # fmt: skip
    slices = []
    for path in sorted((root / "dicom" / "LIDC-0001").iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        slices.append((np.array([float(v) for v in ds.ImagePositionPatient]), str(ds.SOPInstanceUID)))
    (root / "xml").mkdir()
    _lidc_xml(root / "xml" / "069.xml", uid, slices, PLAN)
    yield root, uid
    set_quiet(False)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_lidc_xml_becomes_luna16_annotations(lidc, capsys):
    root, uid = lidc
    args = ["medical", "lidc-annotations", str(root / "xml"), "--data", str(root / "dicom")]
    assert main([*args, "--out", str(root / "ann.csv"), "--excluded-out", str(root / "excl.csv")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["series"], report["nodules"], report["excluded"], report["skipped"]) == (1, 2, 3, [])
    rows = sorted(_rows(root / "ann.csv"), key=lambda r: -float(r["diameter_mm"]))
    assert list(rows[0])[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    big, small = rows
    assert big["seriesuid"] == small["seriesuid"] == uid
    assert (int(big["n_readers"]), int(small["n_readers"])) == (4, 3)
    # the consensus centre is the mean of the readers' centres: their offsets average to (0, 0) px
    for row, (_, centre, diameter, *_) in zip(rows, PLAN[:2]):
        xyz = np.array([float(row[k]) for k in ("coordX", "coordY", "coordZ")])
        assert np.linalg.norm(xyz - centre) < 0.5  # under a pixel (0.7 mm)
        assert float(row["diameter_mm"]) == pytest.approx(diameter, rel=0.12)  # digitised contours
    excl = _rows(root / "excl.csv")
    two = [r for r in excl if r["n_readers"] == "2"]
    assert len(two) == 1 and float(two[0]["diameter_mm"]) == pytest.approx(9.0, rel=0.15)
    points = sorted((r for r in excl if float(r["diameter_mm"]) == -1.0), key=lambda r: float(r["coordZ"]))
    assert len(points) == 2
    for row, (_, centre, *_) in zip(points, (PLAN[4], PLAN[3])):
        xyz = np.array([float(row[k]) for k in ("coordX", "coordY", "coordZ")])
        assert np.linalg.norm(xyz - centre) < SPACING[0]


def test_readers_centre_is_world_coordinates_through_the_series_geometry(lidc):
    from data_adapters import lidc as lidc_xml

    root, uid = lidc
    (series,), _ = dicom.read_series(root / "dicom", load=False)
    got_uid, findings = lidc_xml.parse_xml(root / "xml" / "069.xml")
    assert got_uid == uid and len(findings) == 4 + 3 + 2 + 1 + 1
    locator = lidc_xml.SliceLocator(series)
    first = lidc_xml.to_mark(findings[0], locator)  # reader 0, big nodule, no offset
    assert np.linalg.norm(first.xyz - PLAN[0][1]) < 0.35


def test_unusable_xml_is_listed_and_the_rest_is_written(lidc, tmp_path, capsys):
    root, _ = lidc
    xml = tmp_path / "xml"
    xml.mkdir()
    (xml / "good.xml").write_bytes((root / "xml" / "069.xml").read_bytes())
    (xml / "cxr.xml").write_text('<IdriReadMessage xmlns="http://www.nih.gov"><ResponseHeader/></IdriReadMessage>')
    (xml / "broken.xml").write_text("<LidcReadMessage><ResponseHeader>")
    other = (root / "xml" / "069.xml").read_text()
    header_uid = other.split("SeriesInstanceUid>")[1].split("<")[0]
    (xml / "other.xml").write_text(other.replace(header_uid, "1.2.3.4"))
    args = ["medical", "lidc-annotations", str(xml), "--data", str(root / "dicom"), "--out", str(tmp_path / "a.csv")]
    assert main(args) == 3
    report = json.loads(capsys.readouterr().out)
    reasons = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped"]}
    assert "not LidcReadMessage" in reasons["cxr.xml"] and "not well-formed" in reasons["broken.xml"]
    assert "1.2.3.4 is not under" in reasons["other.xml"]
    assert report["nodules"] == 2 and len(_rows(tmp_path / "a.csv")) == 2
    assert main(["medical", "lidc-annotations", str(tmp_path / "none"), "--data", str(root), "--out", "x.csv"]) == 2


def test_exclusion_contours_cut_holes_out_of_a_readers_nodule(lidc):
    from data_adapters import lidc as lidc_xml

    root, _ = lidc
    (series,), _ = dicom.read_series(root / "dicom", load=False)
    locator = lidc_xml.SliceLocator(series)
    k = 20
    sop = next(uid for uid, idx in locator.by_uid.items() if idx == k)
    z = float(series.slices[k].position[2])
    outer = np.array([[30, 30], [49, 30], [49, 49], [30, 49], [30, 30]], float)  # 20 x 20 pixels, outline included
    inner = np.array([[35, 35], [44, 35], [44, 44], [35, 44], [35, 35]], float)  # 10 x 10
    solid = lidc_xml.ReaderNodule(0, "nodule", [lidc_xml.RoiPlane(z, sop, outer)])
    holed = lidc_xml.ReaderNodule(0, "nodule", [lidc_xml.RoiPlane(z, sop, inner, inclusion=False), *solid.rois])
    voxel_mm3 = float(np.prod(series.spacing_zyx))
    for nodule, pixels in ((solid, 400), (holed, 300)):
        mark = lidc_xml.to_mark(nodule, locator)
        assert mark.diameter_mm == pytest.approx((6 * pixels * voxel_mm3 / np.pi) ** (1 / 3))
        centre = dicom.voxel_to_world(series, [[k, 39.5, 39.5]])[0]  # both shapes are centred on the square
        np.testing.assert_allclose(mark.xyz, centre, atol=1e-9)
