"""Label CSV reading: the two fixes made here (encoding, duplicated columns) and row errors."""

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
