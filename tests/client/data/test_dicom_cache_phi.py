"""Preprocessed cache (no second decode, corrupt entries recomputed) and the PHI finder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import client.data.pipeline as pipeline
from client.data.cache import PreprocessedCache
from client.data.phi import find_phi
from client.data.preprocess import PreprocessConfig


@pytest.fixture
def counted_decoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = pipeline.decode_dataset

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "decode_dataset", counting)
    return calls


def _file(write_dicom: Callable[..., Path], fan_scene: dict[str, np.ndarray]) -> Path:
    return write_dicom("img.dcm", np.round(fan_scene["image"] * 255).astype(np.uint8))


def test_second_load_hits_the_cache(tmp_path: Path, write_dicom: Callable[..., Path],
                                    fan_scene: dict[str, np.ndarray], counted_decoder: list[int]) -> None:
    path, cache, cfg = _file(write_dicom, fan_scene), PreprocessedCache(tmp_path / "c"), PreprocessConfig(output_size=64)
    first = pipeline.load_preprocessed(path, cfg, cache)
    second = pipeline.load_preprocessed(path, cfg, cache)
    assert len(counted_decoder) == 1 and not first.from_cache and second.from_cache
    np.testing.assert_array_equal(first.image, second.image)
    assert second.meta["phi"] == first.meta["phi"] and "PatientName" in second.meta["phi"]
    other = pipeline.load_preprocessed(path, PreprocessConfig(output_size=32), cache)
    assert other.cache_key != first.cache_key and not other.from_cache and other.image.shape == (1, 32, 32)


@pytest.mark.parametrize("damage", ["truncate_array", "garbage_meta", "delete_array"])
def test_corrupt_entry_is_recomputed(tmp_path: Path, write_dicom: Callable[..., Path],
                                     fan_scene: dict[str, np.ndarray], counted_decoder: list[int],
                                     damage: str) -> None:
    path, cache, cfg = _file(write_dicom, fan_scene), PreprocessedCache(tmp_path / "c"), PreprocessConfig(output_size=64)
    first = pipeline.load_preprocessed(path, cfg, cache)
    array_file = next((tmp_path / "c").rglob("*.npy"))
    meta_file = next((tmp_path / "c").rglob("*.json"))
    if damage == "truncate_array":
        array_file.write_bytes(array_file.read_bytes()[:200])
    elif damage == "garbage_meta":
        meta_file.write_text("{not json")
    else:
        array_file.unlink()
    again = pipeline.load_preprocessed(path, cfg, cache)
    assert not again.from_cache and len(counted_decoder) == 2
    np.testing.assert_array_equal(first.image, again.image)
    assert pipeline.load_preprocessed(path, cfg, cache).from_cache  # repaired


def test_no_temporary_files_left(tmp_path: Path, write_dicom: Callable[..., Path],
                                 fan_scene: dict[str, np.ndarray]) -> None:
    pipeline.load_preprocessed(_file(write_dicom, fan_scene), PreprocessConfig(), PreprocessedCache(tmp_path / "c"))
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name.endswith(".tmp")]


def test_phi_names_only_on_real_files() -> None:
    ds = pydicom.dcmread(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm"), stop_before_pixels=True)
    found = find_phi(ds)
    assert {"PatientName", "StudyDate"} <= set(found)
    assert "PatientID" not in found  # present but empty in this file
    assert "BurnedInAnnotation:missing" not in found  # this file says "NO"
    assert str(ds.PatientName) not in " ".join(found)
    overlay = pydicom.dcmread(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert "Overlay:6000" in find_phi(overlay)
    us = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"), stop_before_pixels=True)
    assert "BurnedInAnnotation:missing" in find_phi(us)
    assert any(tag.startswith("PrivateTags:") for tag in find_phi(us))


def test_phi_ignores_empty_and_reports_nested() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = ""
    ds.Modality = "MR"
    item = pydicom.Dataset()
    item.AccessionNumber = "A123"
    ds.RequestAttributesSequence = [item]
    ds.PatientIdentityRemoved = "YES"
    assert find_phi(ds) == ["AccessionNumber", "RequestAttributesSequence"]
