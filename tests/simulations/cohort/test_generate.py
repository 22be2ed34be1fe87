"""The generated cohort: label files, splits, DICOM headers, determinism, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from helpers import tiny_spec

from client.data.labels import read_label_file
from simulations.cohort.contact_sheet import write_contact_sheets
from simulations.cohort.generate import CohortExistsError, generate_cohort

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts
    }


def test_every_center_has_a_valid_label_file_with_per_patient_splits(tiny_cohort: Path) -> None:
    summary = json.loads((tiny_cohort / "cohort.json").read_text())
    assert summary["held_out_centers"] == ["community", "teaching"]
    for center in summary["centers"]:
        rows = read_label_file(tiny_cohort / center["name"] / "manifest.csv")  # checks files exist
        split_of: dict[str, set[str]] = {}
        for r in rows:
            split_of.setdefault(r.patient_id, set()).add(r.split)
        assert all(len(s) == 1 for s in split_of.values()), "a patient straddles splits"
        splits = {r.split for r in rows}
        if center["role"] == "held_out":
            assert splits == {"test"}
        else:
            assert {"train", "val", "test"} <= splits
        us_positive = {r.patient_id for r in rows if r.modality == "US" and r.label == 1}
        assert len(us_positive) == center["us_positives"] > 0


def test_mri_participants_are_other_people_and_one_center_has_none(tiny_cohort: Path) -> None:
    for center_dir in sorted(p.parent for p in tiny_cohort.glob("*/manifest.csv")):
        rows = read_label_file(center_dir / "manifest.csv")
        us = {r.patient_id for r in rows if r.modality == "US"}
        mr = {r.patient_id for r in rows if r.modality == "MR"}
        assert not us & mr
        if center_dir.name == "clinic":
            assert not mr and not (center_dir / "mr").exists()


def test_paired_renders_are_held_back_from_the_label_file(tiny_cohort: Path) -> None:
    import numpy as np

    paired = (tiny_cohort / "university" / "paired" / "paired.csv").read_text().splitlines()
    header, records = paired[0].split(","), [dict(zip(paired[0].split(","), line.split(","), strict=True)) for line in paired[1:]]
    assert {"patient_id", "us_file", "mr_file", "tissue_file", "label"} <= set(header)
    assert len(records) == 2
    listed = {r.file for r in read_label_file(tiny_cohort / "university" / "manifest.csv")}
    listed_patients = {r.patient_id for r in read_label_file(tiny_cohort / "university" / "manifest.csv")}
    for rec in records:
        assert rec["us_file"] not in listed and rec["patient_id"] not in listed_patients
        us = pydicom.dcmread(tiny_cohort / "university" / rec["us_file"])
        mr = pydicom.dcmread(tiny_cohort / "university" / rec["mr_file"])
        tissue = np.load(tiny_cohort / "university" / rec["tissue_file"])["tissue"]
        assert us.pixel_array.shape == mr.pixel_array.shape == tissue.shape  # one pixel grid
        assert float(mr.PixelSpacing[0]) == pytest.approx(10 * float(us.SequenceOfUltrasoundRegions[0].PhysicalDeltaX))


def test_dicom_headers_are_consistent(tiny_cohort: Path) -> None:
    sop_uids: set[str] = set()
    for path in sorted(tiny_cohort.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SOPInstanceUID not in sop_uids, f"duplicate SOPInstanceUID in {path}"
        sop_uids.add(ds.SOPInstanceUID)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientID.startswith("PX") and ds.PatientID in ds.PatientName
        if ds.Modality == "US":
            frames = int(getattr(ds, "NumberOfFrames", 1))
            assert ds.SOPClassUID == (US_MULTIFRAME if frames > 1 else US_IMAGE)
            region = ds.SequenceOfUltrasoundRegions[0]
            assert region.PhysicalUnitsXDirection == 3 and 0.005 < region.PhysicalDeltaX < 0.2  # cm, 0.05-2 mm pixels
        else:
            assert ds.Modality == "MR" and ds.SOPClassUID == MR_IMAGE
    cine = pydicom.dcmread(next((tiny_cohort / "community" / "us").glob("*.dcm")), stop_before_pixels=True)
    assert int(cine.NumberOfFrames) == 2 and cine.PhotometricInterpretation == "YBR_FULL_422"


def test_same_seed_gives_byte_identical_files_for_any_worker_count(tiny_cohort: Path, tmp_path: Path) -> None:
    generate_cohort(tiny_spec(), tmp_path / "again", seed=0, workers=2, log=lambda _m: None)
    assert _digest_tree(tmp_path / "again") == _digest_tree(tiny_cohort)


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    spec = tiny_spec("cohort.centers.regional.n_us=2", "cohort.centers.university.n_us=2")
    a = generate_cohort(spec, tmp_path / "a", seed=1, log=lambda _m: None)
    b = generate_cohort(spec, tmp_path / "b", seed=2, log=lambda _m: None)
    assert a["fingerprint"] != b["fingerprint"]
    assert _digest_tree(tmp_path / "a") != _digest_tree(tmp_path / "b")


def test_existing_cohort_is_reused_and_a_different_one_is_refused(tiny_cohort: Path) -> None:
    messages: list[str] = []
    summary = generate_cohort(tiny_spec(), tiny_cohort, seed=0, log=messages.append)
    assert "reusing" in messages[0] and summary["seed"] == 0
    with pytest.raises(CohortExistsError, match="different cohort"):
        generate_cohort(tiny_spec(), tiny_cohort, seed=1, log=messages.append)


def test_bad_cohort_configs_fail_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown scanner"):
        tiny_spec("cohort.centers.clinic.scanner=no_such_scanner")
    with pytest.raises(ValueError, match="unknown keys"):
        tiny_spec("+cohort.centers.clinic.n_usx=3")
    with pytest.raises(ValueError, match="needs an mri profile"):
        tiny_spec("+cohort.centers.clinic.n_mri=3")
    with pytest.raises(ValueError, match="cannot write"):
        tiny_spec("+cohort.scanner_overrides.photometric=YBR_FULL_422")


def test_ecs_cohort_command_writes_a_cohort_and_reports_bad_overrides(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).parent / "ecs-cohort"
    out = tmp_path / "cli"
    small = ["cohort.centers.university.n_us=2", "cohort.centers.regional.n_us=2", "cohort.centers.university.n_mri=1"]
    done = subprocess.run([exe, "cohort=tiny", f"output_dir={out}", "seed=3", *small], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "held_out" in done.stdout and (out / "cohort.json").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()  # resolved config kept with the cohort
    bad = subprocess.run([exe, "cohort=tiny", f"output_dir={tmp_path / 'bad'}", "cohort.centers.clinic.scanner=nope"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "unknown scanner 'nope'" in bad.stderr
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert helped.returncode == 0 and "ecs-cohort" in helped.stdout and "cohort: paper, quick, tiny" in helped.stdout


def test_contact_sheets_show_every_center(tiny_cohort: Path, artifacts_dir: Path) -> None:
    from PIL import Image

    written = write_contact_sheets(tiny_cohort, artifacts_dir / "contact_sheets")
    assert [p.stem for p in written] == [f"contact_sheet_{c}" for c in ("clinic", "community", "regional", "teaching", "university")]
    university = Image.open(artifacts_dir / "contact_sheets" / "contact_sheet_university.png")
    assert university.height > 3 * 200  # US negatives, US positives, MR negatives, MR positives


def test_ecs_data_check_reports_every_generated_file_ok(tiny_cohort: Path, tmp_path: Path) -> None:
    """A hospital's pre-flight on the synthetic cohort: every file decodes, nothing is fatal."""
    exe = Path(sys.executable).parent / "ecs-data"
    done = subprocess.run([exe, "check", str(tiny_cohort), "--json", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    listed = sum(len(read_label_file(m)) for m in tiny_cohort.glob("*/manifest.csv"))
    assert len(report["files"]) == listed
    assert {f["status"] for f in report["files"]} == {"ok"}
    us = [f for f in report["files"] if f["modality"] == "US"]
    assert all(f["spacing_mm"] is not None for f in report["files"])
    assert {f["photometric"] for f in us} == {"MONOCHROME2", "RGB", "YBR_FULL_422", "PALETTE COLOR"}


def test_overwrite_replaces_a_different_cohort_but_reuses_an_identical_one(tmp_path: Path) -> None:
    small = tiny_spec("cohort.centers.university.n_us=2", "cohort.centers.regional.n_us=2")
    generate_cohort(small, tmp_path / "c", seed=1, log=lambda _m: None)
    messages: list[str] = []
    replaced = generate_cohort(small, tmp_path / "c", seed=2, overwrite=True, log=messages.append)
    assert replaced["seed"] == 2 and "replacing" in messages[0]
    reused = generate_cohort(small, tmp_path / "c", seed=2, overwrite=True, log=messages.append)
    assert reused["fingerprint"] == replaced["fingerprint"] and any("reusing" in m for m in messages)
