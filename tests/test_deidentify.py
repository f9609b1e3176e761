"""`fedsite dicom deidentify`: the PS3.15 basic profile, proved element by element on the outputs.

A dataset carrying every attribute of table E.1-1 (at the top level and nested in sequences, each
value a unique LEAKnnnn marker) goes through the CLI; a walk over every element of every output
file checks each against its action code, and no marker may survive anywhere in the bytes. Then
the folder-level behaviour a hospital needs: deterministic UIDs under the site secret, crosswalk,
annotations following the scans, DICOMDIR, truncated files, empty input, dciodvfy conformance.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from common.cli import main
from data_adapters.deidentify import DUMMY_BY_VR, DUMMY_TEXT, WELL_KNOWN_ROOT, profile, rule_for

CT = "1.2.840.10008.5.1.4.1.1.2"
_TEXT = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "AE", "CS"}
_NUMBERS = {"FL": 1.5, "FD": 2.5, "SL": 7, "SS": 7, "UL": 7, "US": 7, "IS": "17", "DS": "17.5"}


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "site.secret"
    path.write_text("0123456789abcdef-site-secret")
    return path


def _value(vr: str, n: int):
    """A value of `vr` that identifies its origin (LEAKnnnn for text) so a survivor can be found."""
    if vr in _TEXT:
        return f"LEAK{n:04d}" if vr != "CS" else f"LEAK{n:04d}"
    return {"DA": f"1971{n % 12 + 1:02d}{n % 27 + 1:02d}", "TM": "235959", "DT": "19710203040506",
            "AS": "042Y", "UI": f"1.2.826.0.1.3680043.8.498.99.{n}", "UR": f"http://leak.example/{n}",
            "OB": b"LEAK" * 2, "OW": b"LEAK" * 2, "UN": b"LEAK" * 2}.get(vr, _NUMBERS.get(vr))  # fmt: skip


def _fill(ds: Dataset, start: int, depth: int) -> int:
    """Put every table attribute with a plain VR into `ds` (sequences get one item, filled one level down)."""
    n = start
    for tag in sorted(profile()):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        n += 1
        if vr == "SQ":
            if depth == 0:
                continue
            item = Dataset()
            item.InstitutionName, item.PersonName = f"LEAK{n:04d}", f"LEAK{n + 5000:04d}"
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT, f"1.2.826.0.1.3680043.8.498.77.{n}"
            ds.add_new(tag, "SQ", [item])
            continue
        value = _value(vr, n)
        if value is None or tag >> 16 in (0x0002, 0x0004, 0x0000, 0xFFFA, 0xFFFC):
            continue
        ds.add_new(tag, vr, value)
    return n


def _loaded_dataset(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT, "1.2.826.0.1.3680043.8.498.5.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    n = _fill(ds, 0, depth=1)
    nested = Dataset()
    _fill(nested, n, depth=0)
    ds.AnatomicRegionSequence = [nested]  # not in the table: walked into all the same
    ds.SOPClassUID, ds.SOPInstanceUID = CT, meta.MediaStorageSOPInstanceUID
    ds.add_new(0x00091010, "LO", "LEAKPRIV")  # private
    ds.add_new(0x50000010, "US", 4)  # curve group
    ds.add_new(0x60004000, "LT", "LEAKOVERLAY")
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 2, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = b"\0" * 8
    path.parent.mkdir(parents=True, exist_ok=True)
    with pydicom.config.disable_value_validation():
        ds.save_as(path, enforce_file_format=True)
    return path


def _walk(ds: Dataset, seen: dict[str, int], alias: str | None = None) -> None:
    """Check every element (recursively) against its rule of table E.1-1; count what was checked.

    `alias` is the file's patient alias (its top-level PatientID): names at any depth may carry it.
    """
    alias = alias or str(ds.get("PatientID", "")) or None
    for elem in ds:
        rule = rule_for(int(elem.tag))
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item, seen, alias)
        if rule is None:
            continue
        action = rule.action
        assert action not in ("X",), f"{elem.tag} {rule.name} ({rule.code}) must be removed"
        seen[action] = seen.get(action, 0) + 1
        if elem.VR == "SQ":
            assert action in ("Z", "D", "U*"), rule
            if action == "Z":
                assert len(elem.value) == 0, rule
            continue
        value = elem.value
        if action == "Z":
            named = elem.keyword == "PatientName" and alias is not None and str(value) == alias.replace("-", "^")
            assert value in (None, "", b"") or named, rule
        elif action == "D" and elem.VR == "UI":  # a dummy UID: a keyed replacement, never the original
            assert str(value).startswith("2.25."), (rule, value)
        elif action == "D":
            expected = {DUMMY_BY_VR.get(elem.VR), DUMMY_TEXT, 0, alias}
            assert str(value) in {str(v) for v in expected if v is not None}, (rule, value)
        elif action == "U":
            for uid in value if elem.VM > 1 else [value]:
                assert str(uid).startswith(("2.25.", WELL_KNOWN_ROOT)), (rule, uid)


def test_every_element_of_every_output_follows_table_e1_1(tmp_path, secret, capsys):
    src = tmp_path / "in"
    _loaded_dataset(src / "a" / "loaded.dcm")
    shutil.copytree(Path(get_testdata_file("CT_small.dcm", download=False)).parent / "dicomdirtests", src / "dd")
    out = tmp_path / "out"
    code = main(["dicom", "deidentify", str(src), str(out), "--secret-file", str(secret)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    outputs = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(outputs) == result["written"] >= 30
    seen: dict[str, int] = {}
    for path in outputs:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert not any(e.tag.is_private for e in ds.iterall())
        _walk(ds, seen)
        raw = path.read_bytes()
        assert b"LEAK" not in raw, path  # no value of a table attribute survives anywhere
    assert seen.get("D", 0) > 150 and seen.get("U", 0) > 50 and seen.get("Z", 0) > 40, seen
    loaded = pydicom.dcmread(out / "a" / "loaded.dcm")
    assert loaded.AnatomicRegionSequence[0].InstitutionName == DUMMY_TEXT  # nested under an untabled sequence
    item = loaded.ReferencedImageSequence[0]  # X/Z/U*: kept, instance UID replaced, class UID kept
    assert item.ReferencedSOPClassUID == CT and item.ReferencedSOPInstanceUID.startswith("2.25.")
    assert "DICOMDIR" in {Path(o["path"]).name for o in result["other_files"]}
    assert not (out / "dd" / "DICOMDIR").exists()


def test_uids_are_deterministic_under_the_secret_and_annotations_follow(tmp_path, secret, capsys):
    data = tmp_path / "synth"
    assert main(["medical", "synth", "--out", str(data), "--scans", "2", "--scale", "tiny"]) == 0
    (data / "candidates.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\n")
    (data / "notes.csv").write_text("seriesuid,patient_name\n1.2.3,DOE\n")
    runs = []
    for name in ("a", "b"):
        capsys.readouterr()
        assert main(["dicom", "deidentify", str(data), str(tmp_path / name), "--secret-file", str(secret)]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    first, second = (sorted((tmp_path / n).rglob("IM*")) for n in ("a", "b"))
    uids = [[pydicom.dcmread(p).SOPInstanceUID for p in files] for files in (first, second)]
    assert uids[0] == uids[1] and all(u.startswith("2.25.") for u in uids[0])
    other = tmp_path / "other.secret"
    other.write_text("another-site-secret-0000")
    assert main(["dicom", "deidentify", str(data), str(tmp_path / "c"), "--secret-file", str(other)]) == 0
    assert pydicom.dcmread(sorted((tmp_path / "c").rglob("IM*"))[0]).SOPInstanceUID not in uids[0]
    crosswalk = tmp_path / "a.crosswalk.csv"
    assert Path(runs[0]["crosswalk"]) == crosswalk and crosswalk.stat().st_mode & 0o077 == 0
    pairs = {(r["attribute"], r["original"]): r["replacement"] for r in csv.DictReader(crosswalk.open())}
    with (data / "annotations.csv").open() as fh:
        original = list(csv.DictReader(fh))
    with (tmp_path / "a" / "annotations.csv").open() as fh:
        rewritten = list(csv.DictReader(fh))
    assert len(rewritten) == len(original) > 0
    for old, new in zip(original, rewritten):
        assert new["seriesuid"] == pairs[("SeriesInstanceUID", old["seriesuid"])]
        assert new["coordX"] == old["coordX"]
    series = {pydicom.dcmread(p).SeriesInstanceUID for p in first}
    assert {r["seriesuid"] for r in rewritten} <= series  # the annotations point at the copied scans
    assert (tmp_path / "a" / "candidates.csv").exists() and not (tmp_path / "a" / "notes.csv").exists()
    assert any("may identify" in o["reason"] for o in runs[0]["other_files"])
    audit = list(csv.DictReader((tmp_path / "a.audit.csv").open()))
    assert {r["path"] for r in audit} == {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()}
    done = [r for r in audit if r["status"] == "de-identified"]
    assert done and all("PatientName" in r["emptied"] and int(r["uids_replaced"]) >= 4 for r in done)
    values = {str(pydicom.dcmread(p).PatientName) for p in data.rglob("IM*")}
    text = (tmp_path / "a.audit.csv").read_text()
    assert not any(v in text for v in values) and "PHANTOM" not in text  # names of attributes, never values


def test_truncated_and_empty_inputs(tmp_path, secret, capsys):
    data = tmp_path / "in"
    assert main(["medical", "synth", "--out", str(data), "--scans", "1", "--scale", "tiny"]) == 0
    victims = sorted((data / "scan_000").iterdir())
    victims[0].write_bytes(victims[0].read_bytes()[:-500])  # cut in the pixel data
    raw = victims[1].read_bytes()
    victims[1].write_bytes(raw[: raw.index(b"\xe0\x7f\x10\x00")])  # header only
    compressed = pydicom.dcmread(victims[2])
    compressed.compress(RLELossless)
    compressed.save_as(victims[2])
    victims[2].write_bytes(victims[2].read_bytes()[:-300])  # RLE fragments cut before their delimiter
    capsys.readouterr()
    assert main(["dicom", "deidentify", str(data), str(tmp_path / "out"), "--secret-file", str(secret)]) == 3
    result = json.loads(capsys.readouterr().out)
    failed = {Path(f["path"]).name: f["reason"] for f in result["failed"]}
    assert set(failed) == {victims[0].name, victims[1].name, victims[2].name}
    assert "truncated" in failed[victims[0].name] and "PixelData" in failed[victims[1].name]
    assert "truncated" in failed[victims[2].name]
    assert not (tmp_path / "out" / "scan_000" / victims[0].name).exists()
    (tmp_path / "empty").mkdir()
    key = ["--secret-file", str(secret)]
    assert main(["dicom", "deidentify", str(tmp_path / "empty"), str(tmp_path / "o2"), *key]) == 2
    assert "no files to de-identify" in capsys.readouterr().err
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    assert main(["dicom", "deidentify", str(tmp_path / "text"), str(tmp_path / "o3"), *key]) == 2
    assert "no DICOM image" in capsys.readouterr().err


def test_default_secret_is_created_private_and_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDSITE_DEID_SECRET_FILE", raising=False)
    data = tmp_path / "d"
    assert main(["medical", "synth", "--out", str(data), "--scans", "1", "--scale", "tiny"]) == 0
    assert main(["dicom", "deidentify", str(data), str(tmp_path / "o1")]) == 0
    made = tmp_path / "home" / ".config" / "fedsite" / "deid-secret"
    assert made.exists() and made.stat().st_mode & 0o777 == 0o600
    assert "created a new site secret" in capsys.readouterr().err
    assert main(["dicom", "deidentify", str(data), str(tmp_path / "o2")]) == 0
    a, b = (pydicom.dcmread(sorted((tmp_path / o).rglob("IM*"))[0]) for o in ("o1", "o2"))
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.PatientID == b.PatientID != ""


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_every_dicom_file_fedsite_writes_passes_dciodvfy(tmp_path, secret):
    assert shutil.which("dciodvfy"), "dicom3tools is part of the test set-up (.ci/run installs it)"
    data = tmp_path / "synth"
    assert main(["medical", "synth", "--out", str(data), "--scans", "1", "--scale", "tiny", "--seed", "4"]) == 0
    assert main(["dicom", "deidentify", str(data), str(tmp_path / "deid"), "--secret-file", str(secret)]) == 0
    files = sorted(data.rglob("IM*")) + sorted((tmp_path / "deid").rglob("IM*"))
    assert len(files) == 48
    errors = {str(p): _dciodvfy_errors(p) for p in files}
    assert not any(errors.values()), errors


def _plain_tags(vrs: set[str]) -> list[int]:
    out = []
    for tag in sorted(profile()):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in vrs and tag >> 16 not in (0x0002, 0x0004):
            out.append(tag)
    return out


TEXT_TAGS = _plain_tags(_TEXT - {"CS", "AE"})
UI_TAGS = _plain_tags({"UI"})
SQ_TAGS = [0x00081140, 0x00400275, 0x0040A730, 0x00082218, 0x00081115]  # tabled (U*, X, D) and untabled


@st.composite
def datasets(draw, depth: int = 0) -> Dataset:
    """A dataset of random table attributes (text and UIDs), nested up to 3 sequences deep."""
    ds = Dataset()
    for tag in draw(st.lists(st.sampled_from(TEXT_TAGS), max_size=6, unique=True)):
        ds.add_new(tag, dictionary_VR(tag), f"LEAK{draw(st.integers(0, 9999)):04d}")
    for tag in draw(st.lists(st.sampled_from(UI_TAGS), max_size=3, unique=True)):
        ds.add_new(tag, "UI", f"1.2.826.0.1.3680043.8.498.{draw(st.integers(1, 10**9))}")
    if depth < 3:
        for tag in draw(st.lists(st.sampled_from(SQ_TAGS), max_size=2, unique=True)):
            ds.add_new(tag, "SQ", draw(st.lists(datasets(depth + 1), min_size=1, max_size=2)))
    return ds


@settings(max_examples=40, deadline=None)
@given(ds=datasets())
def test_any_nesting_of_table_attributes_leaves_no_value_behind(ds):
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from data_adapters.deidentify import SiteKey, deidentify_dataset

    ds.PatientID = "LEAKPID1"
    key = SiteKey(b"property-test-secret-0123456789")
    original_uids = {str(e.value) for e in ds.iterall() if e.VR == "UI"}
    deidentify_dataset(ds, key)
    seen: dict[str, int] = {}
    _walk(ds, seen)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    with pydicom.config.disable_value_validation():
        write_dataset(buffer, ds)
    assert b"LEAK" not in buffer.getvalue()
    assert not original_uids & {str(e.value) for e in ds.iterall() if e.VR == "UI"}
