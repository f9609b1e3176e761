"""DICOM PS3.15 Annex E basic application-level confidentiality profile, applied to a copy.

What leaves a hospital must not identify a patient. The basic profile removes or blanks the direct
identifiers, drops private tags and curve/overlay comments, and replaces every UID with a new one.
UIDs are remapped *consistently within one run* (same input UID -> same output UID), so slices of a
series stay one series and series of a study stay one study. The input is never modified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from common import atomic

# Attributes the basic profile removes (X), blanks (Z) or replaces with a dummy (D), by keyword.
# A pragmatic subset of PS3.15 Table E.1-1 that covers what CT scanners write.
REMOVE = (
    "AccessionNumber", "AdditionalPatientHistory", "AdmittingDiagnosesDescription", "DerivationDescription",
    "DeviceSerialNumber", "EthnicGroup", "ImageComments", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionName", "MedicalRecordLocator", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientAddress", "PatientAge", "PatientBirthTime", "PatientComments", "PatientMotherBirthName",
    "PatientSize", "PatientTelephoneNumbers", "PatientWeight", "PerformingPhysicianName",
    "PerformedProcedureStepDescription", "PhysiciansOfRecord", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "RequestAttributesSequence", "StationName", "StudyDescription",
    "SeriesDescription", "OperatorsName", "NameOfPhysiciansReadingStudy", "MilitaryRank", "Occupation",
    "ProtocolName", "RequestingPhysician", "ScheduledPerformingPhysicianName", "CountryOfResidence",
    "RegionOfResidence", "CurrentPatientLocation", "PatientInstitutionResidence", "ResponsiblePerson",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
)  # fmt: skip
BLANK = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "ContentDate", "StudyDate",
         "SeriesDate", "AcquisitionDate", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime")  # fmt: skip
DUMMY = {"PatientName": "ANONYMOUS", "PatientID": "ANON"}
_PREFIX = "2.25."


class UIDMap:
    """Input UID -> fresh UID, stable within a run (salted so two runs do not collide or link)."""

    def __init__(self, salt: str | None = None) -> None:
        self.salt = salt if salt is not None else os.urandom(16).hex()
        self.seen: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        if uid not in self.seen:
            digest = hashlib.sha256(f"{self.salt}:{uid}".encode()).digest()
            self.seen[uid] = _PREFIX + str(int.from_bytes(digest[:16], "big"))
        return self.seen[uid]


def _is_uid(elem) -> bool:
    return (
        elem.VR == "UI"
        and elem.tag not in (0x00020010, 0x00080016, 0x00020002)
        and elem.keyword
        not in (
            "SOPClassUID",
            "TransferSyntaxUID",
            "MediaStorageSOPClassUID",
            "ReferencedSOPClassUID",
            "CodingSchemeUID",
        )
    )


def deidentify_dataset(ds, uids: UIDMap, patient_alias: str = "ANON") -> None:
    """Apply the basic profile to `ds` in place (also inside sequences)."""
    from pydicom.dataset import Dataset

    ds.remove_private_tags()
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in BLANK:
        if keyword in ds:
            setattr(ds, keyword, "")
    for keyword, value in DUMMY.items():
        setattr(ds, keyword, value if keyword == "PatientName" else patient_alias)

    def _walk(dataset: Dataset) -> None:
        for elem in list(dataset):
            if elem.VR == "SQ":
                for item in elem.value:
                    _walk(item)
            elif _is_uid(elem) and elem.value:
                elem.value = uids(str(elem.value))
            elif (elem.tag >> 16) in range(0x5000, 0x5100, 2) or (elem.tag >> 16) in range(0x6000, 0x6100, 2):
                if elem.tag & 0xFFFF != 0x3000:  # keep overlay bits, drop curve/overlay text
                    del dataset[elem.tag]

    _walk(ds)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = (
            ds.SOPInstanceUID if "SOPInstanceUID" in ds else uids(str(ds.file_meta.MediaStorageSOPInstanceUID))
        )
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Basic Application Confidentiality Profile (fedsite)"
    ds.DeidentificationMethodCodeSequence = [_code("113100", "Basic Application Confidentiality Profile")]


def _code(value: str, meaning: str):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def deidentify_tree(
    in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, salt: str | None = None
) -> tuple[int, list[dict[str, str]]]:
    """Copy every DICOM file under `in_dir` to `out_dir` (same relative path), de-identified.

    Returns (files written, skipped files with reasons). Patients get aliases ANON-0001, ... in order
    of first appearance, consistent within the run.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    src, dst = Path(in_dir).resolve(), Path(out_dir).resolve()
    if dst == src or src in dst.parents:
        from common.errors import UserError

        raise UserError(f"{out_dir}: output must not be inside the input folder {in_dir}")
    uids = UIDMap(salt)
    aliases: dict[str, str] = {}
    written, skipped = 0, []
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    from common.progress import track

    for path in track(files, "de-identifying"):
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            skipped.append({"path": str(path), "reason": "not a DICOM file"})
            continue
        except Exception as exc:
            skipped.append({"path": str(path), "reason": f"unreadable DICOM ({type(exc).__name__})"})
            continue
        pid = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
        alias = aliases.setdefault(pid, f"ANON-{len(aliases) + 1:04d}")
        try:
            deidentify_dataset(ds, uids, alias)
            rel = path.relative_to(src) if src.is_dir() else Path(path.name)
            with atomic.atomic_path(dst / rel) as tmp:
                ds.save_as(tmp)
        except Exception as exc:
            skipped.append({"path": str(path), "reason": f"could not de-identify ({type(exc).__name__}: {exc})"})
            continue
        written += 1
    return written, skipped
