"""Site scan, quarantine, label-file errors, cohort layout, the dataset and ``ecs-data``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from client.data.cli import main
from client.data.dataset import SiteImageDataset
from client.data.labels import read_label_file
from client.data.preprocess import PreprocessConfig
from client.data.site import scan_site

HEADER = "patient_id,file,modality,label\n"


@pytest.fixture
def site(tmp_path: Path, write_dicom: Callable[..., Path], fan_scene: dict[str, np.ndarray]) -> Path:
    """A site with 2 good US files (one 3-frame), an MR file and 4 bad files, plus labels."""
    frame = np.round(fan_scene["image"] * 255).astype(np.uint8)
    write_dicom("site/a.dcm", frame, region={"delta_cm": 0.02})
    write_dicom("site/b.dcm", np.stack([frame, frame[:, ::-1], frame]))
    write_dicom("site/mr.dcm", np.arange(256, dtype=np.uint16).reshape(16, 16), modality="MR")
    good = (tmp_path / "site" / "a.dcm").read_bytes()
    (tmp_path / "site" / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (tmp_path / "site" / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    (tmp_path / "site" / "notes.txt").write_text("not an image")
    (tmp_path / "site" / "nopix.dcm").write_bytes(good[: good.index(b"\xe0\x7f\x10\x00")])
    return tmp_path / "site"


def test_scan_quarantines_bad_files_and_keeps_the_rest(site: Path) -> None:
    report = scan_site(site, cfg=PreprocessConfig(output_size=32))
    status = {f.path: (f.status, f.reason) for f in report.files}
    assert status["a.dcm"] == ("ok", "") and status["b.dcm"] == ("ok", "") and status["mr.dcm"][0] == "ok"
    assert status["truncated.dcm"] == ("quarantined", "truncated pixel data")
    assert status["notes.txt"] == ("quarantined", "not a DICOM file")
    assert status["nopix.dcm"] == ("quarantined", "no pixel data")
    assert status["corrupt.dcm"][0] == "quarantined" and status["corrupt.dcm"][1]
    assert not report.is_fatal
    summary = report.summary()
    assert summary["ok"] == 3 and summary["by_modality"] == {"US": 2, "MR": 1}
    by_path = {f.path: f for f in report.files}
    assert by_path["a.dcm"].spacing_mm == pytest.approx([0.2, 0.2]) and by_path["b.dcm"].spacing_mm is None
    assert by_path["b.dcm"].n_frames_total == 3 and by_path["b.dcm"].frames == 1


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("p1,a.dcm,US,1\np2,gone.dcm,US,0\n", ":3: file 'gone.dcm' does not exist"),
        ("p1,a.dcm,US,1\np2,b.dcm,US,maybe\n", ":3: unknown label 'maybe'"),
        ('p1,a.dcm,US,1\np2,"b.dcm,US,0\n', "malformed CSV line"),
        ("p1,a.dcm,US,1,extra\n", ":2: malformed CSV line"),
    ],
)
def test_label_file_errors_are_fatal_and_name_the_row(site: Path, rows: str, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    labels = site / "labels.csv"
    labels.write_text(HEADER + rows)
    report = scan_site(site, labels)
    assert report.is_fatal and message in report.fatal_errors[0]
    assert main(["check", str(site), "--labels", str(labels), "--json", "--quiet"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert message in document["label_errors"][0]


def test_ecs_data_check_refuses_a_file_outside_the_folder_without_traceback(site: Path) -> None:
    """The command a hospital runs: exit status 2 and the label error, not a Python traceback."""
    outside = site.parent / "outside.dcm"
    outside.write_bytes((site / "a.dcm").read_bytes())  # a readable DICOM, so only the path is wrong
    labels = site / "labels.csv"
    labels.write_text(HEADER + f"p1,a.dcm,US,1\np2,{outside},US,0\n")
    done = subprocess.run(
        [sys.executable, "-m", "client.data.cli", "check", str(site), "--labels", str(labels),
         "--quiet"],
        capture_output=True, text=True, cwd=Path(__file__).parents[3], timeout=300)
    assert done.returncode == 2
    assert f"FATAL: label file error: {labels}:3: file {str(outside)!r} is an absolute path" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_cohort_layout_with_center_manifests(tmp_path: Path, write_dicom: Callable[..., Path],
                                             fan_scene: dict[str, np.ndarray]) -> None:
    frame = np.round(fan_scene["image"] * 255).astype(np.uint8)
    for center in ("center_a", "center_b"):
        write_dicom(f"cohort/{center}/img/p1.dcm", frame)
        write_dicom(f"cohort/{center}/img/p2.dcm", frame[::-1])
        (tmp_path / "cohort" / center / "manifest.csv").write_text(
            HEADER + "p1,img/p1.dcm,US,1\np2,img/p2.dcm,US,0\n")
    report = scan_site(tmp_path / "cohort", cfg=PreprocessConfig(output_size=32))
    assert len(report.label_files) == 2
    assert report.summary()["by_center"] == {"center_a": 2, "center_b": 2}
    assert report.summary()["by_label"] == {"1": 2, "0": 2}


def test_dataset_items_and_quarantine(site: Path, tmp_path: Path) -> None:
    (site / "labels.csv").write_text(
        HEADER + "p1,a.dcm,US,1\np2,b.dcm,US,0\np3,truncated.dcm,US,1\np4,mr.dcm,MR,0\n")
    rows = read_label_file(site / "labels.csv")
    cfg = PreprocessConfig(frame_policy="all", output_size=32)
    dataset = SiteImageDataset(site, rows, cfg, tmp_path / "cache", modality="US")
    assert len(dataset) == 4  # a.dcm: 1 frame, b.dcm: 3 frames; MR and truncated left out
    assert dataset.quarantined == [(str(site / "truncated.dcm"), "truncated pixel data")]
    image, label = dataset[1]
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32) and label == 0
    assert dataset.labels == [1, 0, 0, 0] and dataset.patient_ids[0] == "p1"
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    batch, labels = next(iter(loader))
    assert batch.shape == (4, 1, 32, 32) and labels.tolist() == [1, 0, 0, 0]
    in_memory = SiteImageDataset(site, rows, cfg, None, modality="US")
    torch.testing.assert_close(in_memory[1][0], image)


def test_dataset_module_does_not_import_flower() -> None:
    code = "import sys, client.data.dataset; assert 'flwr' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_cli_json(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(site), "--json", "--quiet", "--cache-dir", str(tmp_path / "c")])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    for entry in document["files"]:
        assert {"path", "status", "reason", "modality", "frames", "rows", "cols", "spacing_mm",
                "photometric"} <= set(entry)
    assert document["summary"]["quarantined"] == 4
    assert "PatientName" in document["phi"]
    assert "Secret" not in json.dumps(document)  # tag names only, never values


def test_cli_human_output_and_exit_codes(site: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(site), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Quarantined" in out and "truncated.dcm: truncated pixel data" in out and "PHI" in out
    assert main(["check", str(tmp_path / "missing"), "--quiet"]) == 2
    empty = tmp_path / "junk"
    empty.mkdir()
    (empty / "x.txt").write_text("hello")
    assert main(["check", str(empty), "--quiet"]) == 2


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0 and "--labels" in capsys.readouterr().out
