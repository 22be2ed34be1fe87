"""The IID copy of a cohort: same patients and site sizes per split, centers mixed, held-out kept."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import compose

from client.cohort import cohort_centers
from client.data.labels import read_label_file
from simulations.centralized.run import ensure_cohort
from simulations.cohort.repartition import SITE_PREFIX, is_partition_of, main, repartition_iid


def _us_patients_by_split(manifest: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for row in read_label_file(manifest):  # also checks that every linked file exists
        if row.modality == "US":
            out.setdefault(row.split, set()).add(row.patient_id)
    return out


@pytest.fixture(scope="module")
def iid_copy(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("iid") / "tiny-iid0"
    repartition_iid(tiny_cohort, out, seed=0, log=lambda _m: None)
    return out


def test_sites_keep_their_size_per_split_and_the_pool_is_unchanged(tiny_cohort: Path, iid_copy: Path) -> None:
    source = json.loads((tiny_cohort / "cohort.json").read_text())
    training = [c["name"] for c in source["centers"] if c["role"] == "train"]
    pooled_before: dict[str, set[str]] = {}
    pooled_after: dict[str, set[str]] = {}
    for center in training:
        before = _us_patients_by_split(tiny_cohort / center / "manifest.csv")
        after = _us_patients_by_split(iid_copy / f"{SITE_PREFIX}{center}" / "manifest.csv")
        assert {s: len(p) for s, p in after.items()} == {s: len(p) for s, p in before.items()}, center
        for split in before:
            pooled_before.setdefault(split, set()).update(before[split])
            pooled_after.setdefault(split, set()).update(after[split])
    assert pooled_after == pooled_before  # every patient exactly once, in its own split


def test_sites_draw_from_several_centers_and_keep_their_mri(tiny_cohort: Path, iid_copy: Path) -> None:
    summary = json.loads((iid_copy / "cohort.json").read_text())
    sites = [c for c in summary["centers"] if c["role"] == "train"]
    assert all(c["name"].startswith(SITE_PREFIX) for c in sites)
    assert max(len(c["patients_from"]) for c in sites) >= 2  # mixed, not a renamed copy
    mri_rows = Counter(r.modality for r in read_label_file(iid_copy / f"{SITE_PREFIX}university" / "manifest.csv"))
    source_rows = Counter(r.modality for r in read_label_file(tiny_cohort / "university" / "manifest.csv"))
    assert mri_rows["MR"] == source_rows["MR"] > 0


def test_held_out_centers_and_partition_record(tiny_cohort: Path, iid_copy: Path) -> None:
    summary = json.loads((iid_copy / "cohort.json").read_text())
    source = json.loads((tiny_cohort / "cohort.json").read_text())
    assert summary["held_out_centers"] == source["held_out_centers"]
    for center in source["held_out_centers"]:
        assert (iid_copy / center).resolve() == (tiny_cohort / center).resolve()
    assert summary["partition"] == {"kind": "iid", "seed": 0, "source": str(tiny_cohort.resolve()),
                                    "source_fingerprint": source["fingerprint"]}
    assert is_partition_of(iid_copy, source["fingerprint"])
    assert not is_partition_of(iid_copy, "another cohort")
    assert set(cohort_centers(iid_copy)) == {c["name"] for c in summary["centers"]}


def test_same_seed_same_copy_other_seed_other_copy(tiny_cohort: Path, iid_copy: Path, tmp_path: Path) -> None:
    again = repartition_iid(tiny_cohort, tmp_path / "again", seed=0, log=lambda _m: None)
    repartition_iid(tiny_cohort, tmp_path / "other", seed=1, log=lambda _m: None)
    first = json.loads((iid_copy / "cohort.json").read_text())
    assert [c["patients_from"] for c in again["centers"] if c["role"] == "train"] == \
        [c["patients_from"] for c in first["centers"] if c["role"] == "train"]
    manifests = [(root / f"{SITE_PREFIX}university" / "manifest.csv").read_text() for root in (iid_copy, tmp_path / "other")]
    assert manifests[0] != manifests[1]


def test_apps_accept_the_copy_as_the_configured_cohort(tiny_cohort: Path, iid_copy: Path) -> None:
    cfg = compose("train", ["cohort=tiny", "cohort_seed=0", f"cohort_dir={iid_copy}"])
    messages: list[str] = []
    assert ensure_cohort(cfg, messages.append) == iid_copy
    assert "repartitioned copy" in messages[0]


def test_refuses_bad_inputs(tiny_cohort: Path, iid_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="no cohort.json"):
        repartition_iid(tmp_path, tmp_path / "x", seed=0)
    with pytest.raises(ValueError, match="not empty"):
        repartition_iid(tiny_cohort, iid_copy, seed=0)
    with pytest.raises(ValueError, match="itself a repartitioned copy"):
        repartition_iid(iid_copy, tmp_path / "y", seed=0)
    assert main([str(tmp_path / "missing"), str(tmp_path / "z")]) == 1
    assert "no cohort.json" in capsys.readouterr().err
