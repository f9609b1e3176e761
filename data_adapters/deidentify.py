"""DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, applied to copies.

What leaves a hospital must not identify a patient. Every attribute of the profile's table E.1-1
(`ps315_basic_profile.csv`, 620 rows of the 2024b edition, plus private attributes) gets its action
code at every depth of the dataset, sequences included:

  X remove · Z zero length · D dummy value of the attribute's VR · U replace the UID · K keep
  X/Z -> Z, X/D, Z/D, X/Z/D -> D (a dummy never carries the original and keeps a Type 1/2 attribute
  present, so the copy stays a valid instance of its IOD) · X/Z/U* -> keep the sequence, its UIDs replaced.

Private attributes are removed, and curve (50xx) and overlay (60xx) groups go whole (the profile
removes their data and comments; the rest of a group is meaningless without them).

UIDs are replaced by a keyed hash under the site's secret (HMAC-SHA256 -> a 2.25.<integer> UID):
the same input UID gives the same output UID on every run and every machine holding the secret, so
series stay series, studies stay studies, and a later batch links to an earlier one; without the
secret the mapping cannot be reversed or recomputed. UIDs under the DICOM root 1.2.840.10008
(SOP classes, transfer syntaxes, coding schemes) are standard, not identifying, and kept.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILE_CSV = Path(__file__).with_name("ps315_basic_profile.csv")
WELL_KNOWN_ROOT = "1.2.840.10008."
UID_PREFIX = "2.25."
# The resolved action for each code of table E.1-1 (see the module docstring for why).
RESOLVED = {"X": "X", "Z": "Z", "D": "D", "U": "U", "K": "K", "C": "D",
            "X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}  # fmt: skip
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "IS": "0", "DS": "0",
               "UR": "urn:anonymized"}  # fmt: skip
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"}
_NUMBER_VRS = {"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}
DEID_METHOD = "PS3.15 E.1-1 Basic Application Confidentiality Profile (fedsite)"


@dataclass(frozen=True)
class Rule:
    """One row of table E.1-1: the attribute and its action code as the standard gives it."""

    tag: str
    keyword: str
    name: str
    code: str

    @property
    def action(self) -> str:
        return RESOLVED[self.code]


@functools.cache
def profile() -> dict[int, Rule]:
    """Table E.1-1 keyed by tag (repeating-group rows are matched by `rule_for`)."""
    with PROFILE_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        int(r["tag"].strip("()").replace(",", ""), 16): Rule(r["tag"], r["keyword"], r["name"], r["action"])
        for r in rows
        if "X" not in r["tag"].strip("()").replace(",", "").upper()
    }


def rule_for(tag: int) -> Rule | None:
    """The profile's rule for `tag`, including private attributes and the curve/overlay groups."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return Rule(f"({group:04X},{element:04X})", "", "Private Attributes", "X")
    if group & 0xFF00 == 0x5000:
        return Rule(f"({group:04X},{element:04X})", "", "Curve Data", "X")
    if group & 0xFF00 == 0x6000:
        return Rule(f"({group:04X},{element:04X})", "", "Overlay group", "X")
    return profile().get(tag)


class SiteKey:
    """The site's secret: deterministic, non-reversible UIDs and patient aliases."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the site secret must hold at least 16 bytes")
        self._secret = secret
        self.crosswalk: dict[tuple[str, str], str] = {}

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str, keyword: str = "UID") -> str:
        """A 2.25.<128-bit integer> UID for `value` (well-known DICOM UIDs are returned unchanged)."""
        value = value.strip().rstrip("\0")
        if not value or value.startswith(WELL_KNOWN_ROOT):
            return value
        new = UID_PREFIX + str(int.from_bytes(self._digest("uid", value)[:16], "big"))
        self.crosswalk[(keyword, value)] = new
        return new

    def patient(self, value: str) -> str:
        """ANON-<12 hex> for a patient ID/name: the same patient gets the same alias in every batch."""
        alias = "ANON-" + self._digest("patient", value.strip()).hex()[:12].upper()
        self.crosswalk[("PatientID", value.strip())] = alias
        return alias


@dataclass
class Audit:
    """What was done to one file: attribute keywords and counts, never values."""

    removed: set[str] = field(default_factory=set)
    emptied: set[str] = field(default_factory=set)
    replaced: set[str] = field(default_factory=set)
    uids: int = 0
    private: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "removed": ";".join(sorted(self.removed)),
            "emptied": ";".join(sorted(self.emptied)),
            "dummied": ";".join(sorted(self.replaced)),
            "uids_replaced": self.uids,
            "private_removed": self.private,
        }


def _name(elem, rule: Rule) -> str:
    return elem.keyword or rule.keyword or rule.name


def _dummy(elem, key: SiteKey, alias: str) -> Any:
    """A non-empty value of `elem`'s VR that carries nothing of the original."""
    vr = elem.VR
    if elem.keyword == "PatientID":
        return alias
    if elem.keyword == "PatientName":
        return alias.replace("-", "^", 1)
    if vr in DUMMY_BY_VR:
        return DUMMY_BY_VR[vr]
    if vr in _TEXT_VRS:
        return DUMMY_TEXT
    if vr in _NUMBER_VRS:
        return 0
    if vr == "UI":
        return key.uid(str(elem.value), elem.keyword)
    return None  # binary or unknown VR: no safe dummy, the caller removes it


def _map_uids(elem, key: SiteKey) -> int:
    values = elem.value if elem.VM > 1 else [elem.value]
    mapped = [key.uid(str(v), elem.keyword) for v in values if v is not None]
    elem.value = mapped if elem.VM > 1 else (mapped[0] if mapped else elem.value)
    return sum(1 for old, new in zip(values, mapped) if str(old).strip() != new)


def apply_profile(dataset, key: SiteKey, alias: str, audit: Audit) -> None:
    """Apply table E.1-1 to `dataset` in place, recursively through every sequence item."""
    for elem in list(dataset):
        rule = rule_for(int(elem.tag))
        if rule is None:
            if elem.VR == "SQ":
                for item in elem.value or []:
                    apply_profile(item, key, alias, audit)
            continue
        action, name = rule.action, _name(elem, rule)
        if rule.name == "Private Attributes":
            del dataset[elem.tag]
            audit.private += 1
        elif action == "X":
            del dataset[elem.tag]
            audit.removed.add(name)
        elif action == "Z":
            if elem.VR == "SQ":
                elem.value = []
            elif elem.keyword == "PatientName":
                elem.value = alias.replace("-", "^", 1)  # a dummy is allowed for Z; the alias keeps patients apart
            else:
                elem.value = None
            audit.emptied.add(name)
        elif action == "D":
            if elem.VR == "SQ":
                for item in elem.value or []:
                    apply_profile(item, key, alias, audit)
                audit.replaced.add(name)
                continue
            dummy = _dummy(elem, key, alias)
            if dummy is None:
                del dataset[elem.tag]
                audit.removed.add(name)
            else:
                elem.value = dummy
                audit.replaced.add(name)
        elif action == "U":
            if elem.VR == "UI" and elem.value:
                audit.uids += _map_uids(elem, key)
        elif action == "U*" and elem.VR == "SQ":
            for item in elem.value or []:
                apply_profile(item, key, alias, audit)


def deidentify_dataset(ds, key: SiteKey, audit: Audit | None = None) -> Audit:
    """De-identify `ds` in place (file meta kept consistent) and mark it as de-identified."""
    from pydicom.dataset import Dataset

    audit = audit or Audit()
    patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
    alias = key.patient(patient) if patient else "ANONYMOUS"
    apply_profile(ds, key, alias, audit)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = (
            ds.SOPInstanceUID
            if "SOPInstanceUID" in ds
            else key.uid(str(meta.MediaStorageSOPInstanceUID), "MediaStorageSOPInstanceUID")
        )
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
        "113100", "DCM", "Basic Application Confidentiality Profile",
    )  # fmt: skip
    ds.DeidentificationMethodCodeSequence = [code]
    if any(k in audit.removed | audit.emptied | audit.replaced for k in ("StudyDate", "SeriesDate", "ContentDate")):
        ds.LongitudinalTemporalInformationModified = "REMOVED"
    return audit
