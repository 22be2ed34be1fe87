"""Find protected health information (PHI) left in a DICOM header -- names, never values.

Follows the PS3.15 Annex E Basic Application Level Confidentiality Profile roughly: the
attributes it removes or blanks (patient and physician names, IDs, birth date, addresses,
institution, device identity, accession number, dates and times, free-text comments) are
reported when present and non-empty anywhere in the dataset (sequences included). Flags:

* ``BurnedInAnnotation:missing`` / ``BurnedInAnnotation:YES`` for US (ultrasound routinely
  burns text into the pixels; only an explicit "NO" is reassuring);
* ``Overlay:60xx`` for overlay planes, ``IconImageSequence`` for thumbnails;
* ``PrivateTags:<n>`` for private elements (may hold anything);
* ``PatientIdentityRemoved:NO`` when the de-identification flag is missing or not "YES".

The report holds attribute keywords and flags only, so printing it leaks nothing.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["PHI_KEYWORDS", "find_phi"]

PHI_KEYWORDS = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate",
    "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation",
    "PatientAge", "PatientSex", "PatientSize", "PatientWeight", "MedicalRecordLocator",
    "EthnicGroup", "Occupation", "MilitaryRank", "BranchOfService", "CountryOfResidence",
    "RegionOfResidence", "PatientInsurancePlanCodeSequence", "PatientReligiousPreference",
    "PatientComments", "AdditionalPatientHistory", "PregnancyStatus", "LastMenstrualDate",
    "ResponsiblePerson", "ResponsibleOrganization", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician",
    "ScheduledPerformingPhysicianName", "AccessionNumber", "StudyID", "StationName",
    "DeviceSerialNumber", "DetectorID", "PlateID", "CassetteID", "GantryID",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
    "AcquisitionDateTime", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
    "InstanceCreationTime", "PerformedProcedureStepStartDate", "PerformedProcedureStepID",
    "RequestedProcedureID", "ScheduledProcedureStepID", "AdmissionID", "ServiceEpisodeID",
    "ImageComments", "StudyComments", "RequestAttributesSequence", "ReferencedPatientSequence",
    "FrameComments", "DerivationDescription", "TextString", "TextComments", "PersonName",
    "VerifyingObserverName", "ContentCreatorName", "ProtocolName", "StudyDescription",
    "SeriesDescription", "PerformedProcedureStepDescription",
})


def _non_empty(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, str | bytes):
        return bool(value.strip(b" \x00" if isinstance(value, bytes) else " \x00"))
    if isinstance(value, list | tuple):
        return any(_non_empty(v) for v in value)
    try:
        return bool(str(value).strip(" \x00^="))
    except Exception:
        return True  # unreadable but present: report it


def find_phi(ds: Dataset) -> list[str]:
    """PHI attribute keywords present and non-empty, plus flags; sorted, no values.

    Args:
        ds: a parsed dataset (pixel data need not be loaded).

    Returns:
        Sorted list such as ``["BurnedInAnnotation:missing", "PatientName", "StudyDate"]``.
    """
    found: set[str] = set()
    private_count = 0
    overlay_groups: set[int] = set()
    try:
        elements = list(ds.iterall())
    except Exception:  # a broken sequence: inspect the top level only
        elements = [ds[tag] for tag in ds.keys()]
    for element in elements:
        tag = element.tag
        if tag.is_private:
            private_count += 1
            continue
        if 0x6000 <= tag.group <= 0x60FF and tag.group % 2 == 0 and tag.element == 0x3000:
            overlay_groups.add(tag.group)
            continue
        keyword = element.keyword
        if keyword == "IconImageSequence":
            found.add(keyword)
            continue
        if keyword in PHI_KEYWORDS:
            try:
                value = element.value
            except Exception:
                value = "?"
            if _non_empty(value):
                found.add(keyword)
    for group in sorted(overlay_groups):
        found.add(f"Overlay:{group:04X}")
    if private_count:
        found.add(f"PrivateTags:{private_count}")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality == "US":
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if burned != "NO":
            found.add("BurnedInAnnotation:" + (burned or "missing"))
    if str(ds.get("PatientIdentityRemoved", "") or "").strip().upper() != "YES":
        found.add("PatientIdentityRemoved:NO")
    return sorted(found)
