"""ecs-screen: every pydicom / pydicom-data ultrasound and MR file gives a probability or a warning,
never a traceback; the JSON, CSV and heatmap outputs; the domain warnings; user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import dicom_sample_files
from PIL import Image
from pydicom.data import get_testdata_file

from clinic.domain import assess
from clinic.screen_cli import main

SAMPLES = dicom_sample_files()


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("samples")
    for index, (_, path, modality) in enumerate(SAMPLES):
        (folder / f"{index:02d}_{modality}_{path.name}").symlink_to(path)
    return folder


def test_every_ultrasound_and_mr_sample_gives_a_probability_or_a_warning(tiny_bundle, sample_folder, capsys) -> None:
    assert len(SAMPLES) >= 40 and sum(m == "US" for _, _, m in SAMPLES) >= 15
    assert main([str(tiny_bundle), str(sample_folder), "--json", "--quiet"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == len(SAMPLES)
    scored = 0
    for result in results:
        assert set(result) == {"file", "probability", "decision", "warnings"}
        if result["probability"] is None:
            assert result["decision"] is None and result["warnings"], result
        else:
            scored += 1
            assert 0.0 <= result["probability"] <= 1.0
            assert result["decision"] == ("positive" if result["probability"] >= 0.5 else "negative")
        if "_MR_" in result["file"]:  # the model reads ultrasound only
            assert result["probability"] is None
            assert any(w.startswith(("not ultrasound", "not usable")) for w in result["warnings"]), result
    assert scored >= 10  # most ultrasound samples decode and are scored


def test_a_folder_gives_a_csv_and_heatmaps_are_pngs(tiny_bundle, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "us.dcm").symlink_to(get_testdata_file("examples_ybr_color.dcm"))
    (folder / "mr.dcm").symlink_to(get_testdata_file("MR_small.dcm"))
    assert main([str(tiny_bundle), str(folder), "--heatmap", str(tmp_path / "maps"), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,probability,decision,threshold,warnings" and len(lines) == 3
    assert lines[1].startswith("mr.dcm,,refused,") and lines[2].split(",")[2] in ("positive", "negative")
    png = Image.open(tmp_path / "maps" / "us.dcm.png")
    assert png.size == (32, 32) and png.mode == "RGB"
    assert not (tmp_path / "maps" / "mr.dcm.png").exists()


def test_one_file_prints_a_readable_verdict(tiny_bundle, capsys) -> None:
    assert main([str(tiny_bundle), get_testdata_file("examples_ybr_color.dcm")]) == 0
    out = capsys.readouterr().out
    assert "probability of myometrial invasion" in out and "not a diagnosis" in out


def test_user_errors_name_the_problem_without_a_traceback(tiny_bundle, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "clinic.screen_cli", str(tmp_path), get_testdata_file("MR_small.dcm")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "no operating_point.json" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(SystemExit) as exit_:
        main([str(tiny_bundle), str(tmp_path / "missing.dcm")])
    assert exit_.value.code == f"ecs-screen: input not found: {tmp_path / 'missing.dcm'}"


def test_the_clinic_commands_import_no_training_stack() -> None:
    """The import-linter contract sees imports; this sees what importing actually loads (package
    __init__ files included)."""
    code = ("import sys, clinic.screen_cli, clinic.evaluate_cli; "
            "print(sorted(m for m in ('torch', 'torchvision', 'flwr', 'ray', 'hydra') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_domain_warnings_name_each_way_an_image_differs_from_training() -> None:
    frames = np.full((1, 8, 8), 0.9, dtype=np.float32)  # brighter and flatter than any training frame
    meta = {"modality": "US", "region": None, "spacing_mm": None, "color_fraction": 0.3, "fan_found": False,
            "annotation_fraction": 0.4}
    intensity = {"mean": [0.05, 0.3, 0.6], "std": [0.02, 0.15, 0.35]}
    warnings = " | ".join(assess(meta, frames, intensity).warnings)
    for expected in ("no ultrasound region", "pixel spacing unknown", "colour Doppler", "no ultrasound fan",
                     "in-painted", "intensity unlike", "contrast unlike"):
        assert expected in warnings
    clean = {"modality": "US", "region": [0, 0, 7, 7], "spacing_mm": [0.2, 0.2], "color_fraction": 0.001,
             "fan_found": True, "annotation_fraction": 0.01}
    frames[0, :, :4] = 0.2
    assert assess(clean, frames, intensity).warnings == []
    refused = assess({"modality": "MR"}, frames, intensity)
    assert refused.refused and "not ultrasound" in refused.refused
