"""Label CSV reading: encoding, duplicated columns, every promised row error, paths outside the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.data.labels import LabelFileError, read_label_file


def test_non_utf8_label_file_is_a_label_error(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes("patient_id,file,modality,label\nPatiént,a.dcm,US,1\n".encode("latin-1"))
    with pytest.raises(LabelFileError, match="not UTF-8"):
        read_label_file(path, check_files=False)


def test_duplicated_column_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("patient_id,file,modality,label,label\np1,a.dcm,US,1,0\n")
    with pytest.raises(LabelFileError, match=r":1: duplicated column\(s\) \['label'\]"):
        read_label_file(path, check_files=False)


def test_valid_file_reads_rows_with_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"x")
    path = tmp_path / "labels.csv"
    path.write_text("patient_id,file,modality,label,split\np1,a.dcm,us,1,train\n")
    (row,) = read_label_file(path)
    assert (row.patient_id, row.modality, row.label, row.split, row.line) == ("p1", "US", 1, "train", 2)


FULL_HEADER = (
    "patient_id,file,modality,label,split,invasion,depth_ratio,endometrial_thickness_mm,"
    "hard_negative\n"
)
GOOD_ROW = "p1,a.dcm,US,1,train,deep,0.6,12.5,\n"  # line 2, so every error below is on line 3


def _error(path: Path, text: str, check_files: bool = False) -> str:
    """The LabelFileError message for a CSV with ``text``, written to ``path``."""
    path.write_text(text)
    with pytest.raises(LabelFileError) as info:
        read_label_file(path, check_files=check_files)
    return str(info.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("p2,b.dcm,CT,0,train,,,,", "unknown modality 'CT' (expected US or MR)"),
        ("p2,b.dcm,US,0,training,,,,", "unknown split 'training' (expected train, val or test)"),
        ("p2,b.dcm,US,1,train,partial,,,", "unknown invasion 'partial' (expected normal, superficial or deep)"),
        ("p2,b.dcm,US,1,train,deep,1.5,,", "depth_ratio=1.5 outside [0, 1]"),
        ("p2,b.dcm,US,1,train,deep,half,,", "depth_ratio='half' is not a number"),
        ("p2,b.dcm,US,1,train,deep,nan,,", "depth_ratio='nan' is not finite"),
        ("p2,b.dcm,US,0,train,,,-2,", "endometrial_thickness_mm=-2.0 is negative"),
        ("p2,b.dcm,US,0,train,,,thick,", "endometrial_thickness_mm='thick' is not a number"),
        ("p2,b.dcm,US,0,train,,,,cyst",
         "unknown hard_negative 'cyst' (expected polyp, fluid, fibroid, atrophic or empty)"),
        ("p2,,US,0,train,,,,", "required column 'file' is empty"),
        ("p2,b.dcm,US,0,train,deep,,,", "invasion='deep' contradicts label=0"),
        ("p2,b.dcm,US,1,train,normal,,,", "invasion='normal' contradicts label=1"),
        ("p2,b.dcm,US,1,train,superficial,0.7,,",
         "depth_ratio=0.7 contradicts invasion='superficial'"),
        ("p2,b.dcm,US,1,train,deep,0.3,,", "depth_ratio=0.3 contradicts invasion='deep'"),
        ("p2,a.dcm,US,0,train,,,,", "file 'a.dcm' already listed on line 2"),
        ("p2,./us/../a.dcm,US,0,train,,,,",
         "file './us/../a.dcm' already listed on line 2 as 'a.dcm'"),
        ("p1,b.dcm,US,1,val,,,,",
         "patient 'p1' has split 'val' here but 'train' on line 2; splits are per patient"),
        ("p1,b.dcm,US,0,train,,,,", "patient 'p1' has label 0 here but 1 on line 2"),
    ],
)
def test_bad_row_names_the_file_line_and_problem(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    assert _error(path, FULL_HEADER + GOOD_ROW + row + "\n") == f"{path}:3: {message}"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("patient_id,file,label", "missing required column(s) ['modality']"),
        ("patient_id,file,modality,label,center",
         "unknown column(s) ['center']; allowed: ['patient_id', 'file', 'modality', 'label', "
         "'split', 'invasion', 'depth_ratio', 'endometrial_thickness_mm', 'hard_negative']"),
    ],
)
def test_bad_header_names_the_file_and_line_1(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    assert _error(path, header + "\np1,a.dcm,US,1\n") == f"{path}:1: {message}"


@pytest.mark.parametrize(
    ("file", "problem"),
    [
        ("/etc/passwd", "is an absolute path; it must be relative to the label file's folder"),
        ("C:\\data\\a.dcm", "is an absolute path; it must be relative to the label file's folder"),
        ("c:/data/a.dcm", "is an absolute path; it must be relative to the label file's folder"),
        ("C:a.dcm", "is an absolute path; it must be relative to the label file's folder"),
        ("\\\\server\\share\\a.dcm",
         "is an absolute path; it must be relative to the label file's folder"),
        ("\\data\\a.dcm", "is an absolute path; it must be relative to the label file's folder"),
        ("../a.dcm", "climbs out of the label file's folder"),
        ("us/../../a.dcm", "climbs out of the label file's folder"),
        ("./us/./../../site/a.dcm", "climbs out of the label file's folder"),
        ("us\\..\\..\\a.dcm", "climbs out of the label file's folder"),
        ("us/..", "names the label file's folder, not a file"),
    ],
)
def test_file_outside_the_folder_is_refused(tmp_path: Path, file: str, problem: str) -> None:
    path = tmp_path / "labels.csv"
    text = FULL_HEADER + GOOD_ROW + f"p2,{file},US,0,train,,,,\n"
    assert _error(path, text) == f"{path}:3: file {file!r} {problem}"


def test_existing_file_outside_the_folder_is_refused_not_read(tmp_path: Path) -> None:
    """The case that used to be read as ok: the file exists, but outside the site's folder."""
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"x")
    site = tmp_path / "site"
    (site / "us").mkdir(parents=True)
    path = site / "labels.csv"
    for file in (str(outside), "../outside.dcm", "us/../../outside.dcm"):
        message = _error(path, f"patient_id,file,modality,label\np1,{file},US,1\n", check_files=True)
        assert message.startswith(f"{path}:2: file {file!r} ")


def test_paths_inside_the_folder_are_read_and_symlinks_followed(tmp_path: Path) -> None:
    """Normalised paths that stay inside are fine; a link in the folder is the site's choice."""
    site = tmp_path / "site"
    (site / "us").mkdir(parents=True)
    (site / "a.dcm").write_bytes(b"x")
    (tmp_path / "elsewhere.dcm").write_bytes(b"x")
    (site / "us" / "linked.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    path = site / "labels.csv"
    path.write_text("patient_id,file,modality,label\np1,us/../a.dcm,US,1\np2,./us/linked.dcm,US,0\n")
    assert [row.file for row in read_label_file(path)] == ["us/../a.dcm", "./us/linked.dcm"]


def test_unreadable_label_file_is_a_label_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,file,modality,label\n")

    def refuse(self: Path, *args, **kwargs):  # root ignores chmod, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(LabelFileError, match=r"labels.csv: cannot read the label file \(Permission denied\)"):
        read_label_file(labels)
