"""The label file a site provides next to its DICOM folder (``manifest.csv``).

A hospital and the synthetic cohort use exactly the same format, so simulated and real
sites go through the same code. One row per DICOM file; the file path is relative to the
folder that holds the CSV.

Columns (header row required, order free, extra columns rejected):

=========================  ========  ==========================================================
column                     required  meaning
=========================  ========  ==========================================================
patient_id                 yes       pseudonymous patient identifier (splits are per patient)
file                       yes       DICOM path relative to the CSV's folder
modality                   yes       ``US`` (transvaginal ultrasound) or ``MR`` (T2 MRI)
label                      yes       ``1`` = any myometrial invasion (screening target), ``0`` not
split                      no        ``train`` / ``val`` / ``test``; empty = assigned per patient
invasion                   no        ``normal`` / ``superficial`` / ``deep`` (FIGO 2009: deep >= 50 %)
depth_ratio                no        invasion depth / myometrial thickness, in [0, 1]
endometrial_thickness_mm   no        double-layer endometrial thickness in mm
hard_negative              no        ``polyp`` / ``fluid`` / ``fibroid`` / ``atrophic`` or empty
=========================  ========  ==========================================================

A ``file`` value cannot make a site read outside the CSV's folder: absolute paths (POSIX,
``C:\\...``, ``\\\\server\\share``) and paths that climb out with ``..`` are refused. The
check is on the text as written, after normalising ``.`` and ``..`` with both ``/`` and ``\\``
as separators. Symlinks are followed as the file system resolves them and are not checked:
whoever can place a link in the site folder can place the file itself, and an IID copy of a
cohort (``simulations.cohort.repartition``) is made of links into the source cohort.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = [
    "LABEL_COLUMNS",
    "REQUIRED_COLUMNS",
    "HARD_NEGATIVE_TYPES",
    "INVASION_CLASSES",
    "LabelFileError",
    "LabelRow",
    "read_label_file",
    "write_label_file",
]

MODALITIES = ("US", "MR")
SPLITS = ("train", "val", "test")
INVASION_CLASSES = ("normal", "superficial", "deep")
HARD_NEGATIVE_TYPES = ("polyp", "fluid", "fibroid", "atrophic")
DEEP_INVASION_RATIO = 0.5  # FIGO 2009 stage IB: invasion of >= 50 % of the myometrium
# C:\x, C:/x and the drive-relative C:x all leave the folder on a Windows site.
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class LabelFileError(ValueError):
    """A label file that cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class LabelRow:
    """One labelled DICOM file. ``line`` is the 1-based CSV line (header = line 1)."""

    patient_id: str
    file: str
    modality: str
    label: int
    split: str = ""
    invasion: str = ""
    depth_ratio: float | None = None
    endometrial_thickness_mm: float | None = None
    hard_negative: str = ""
    line: int = 0


LABEL_COLUMNS = tuple(f.name for f in fields(LabelRow) if f.name != "line")
REQUIRED_COLUMNS = ("patient_id", "file", "modality", "label")


def _optional_float(value: str, column: str, where: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise LabelFileError(f"{where}: {column}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise LabelFileError(f"{where}: {column}={value!r} is not finite")
    return number


def _inside_folder(file: str, where: str) -> str:
    """Return ``file`` normalised (``./us/../a.dcm`` -> ``a.dcm``) if it stays in the folder.

    Both ``/`` and ``\\`` are separators: label files written on Windows use backslashes, and a
    Windows site would follow ``..\\x`` out of the folder. Symlinks are not resolved (see the
    module docstring).

    Raises:
        LabelFileError: ``file`` is absolute (POSIX, Windows drive or UNC), climbs out of the
            folder with ``..``, or names the folder itself.
    """
    if file.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(file):
        raise LabelFileError(
            f"{where}: file {file!r} is an absolute path; it must be relative to the label "
            "file's folder")
    parts: list[str] = []
    for part in re.split(r"[/\\]", file):
        if part == "..":
            if not parts:
                raise LabelFileError(f"{where}: file {file!r} climbs out of the label file's folder")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if not parts:
        raise LabelFileError(f"{where}: file {file!r} names the label file's folder, not a file")
    return "/".join(parts)


def _parse_row(raw: dict[str, str], where: str, line: int) -> LabelRow:
    values = {k: (v or "").strip() for k, v in raw.items()}
    for column in REQUIRED_COLUMNS:
        if values.get(column, "") == "":
            raise LabelFileError(f"{where}: required column {column!r} is empty")
    modality = values["modality"].upper()
    if modality not in MODALITIES:
        raise LabelFileError(f"{where}: unknown modality {values['modality']!r} (expected US or MR)")
    if values["label"] not in ("0", "1"):
        raise LabelFileError(f"{where}: unknown label {values['label']!r} (expected 0 or 1)")
    label = int(values["label"])
    split = values.get("split", "")
    if split not in ("",) + SPLITS:
        raise LabelFileError(f"{where}: unknown split {split!r} (expected train, val or test)")
    invasion = values.get("invasion", "")
    if invasion not in ("",) + INVASION_CLASSES:
        raise LabelFileError(
            f"{where}: unknown invasion {invasion!r} (expected normal, superficial or deep)")
    if invasion and (invasion != "normal") != bool(label):
        raise LabelFileError(f"{where}: invasion={invasion!r} contradicts label={label}")
    depth_ratio = _optional_float(values.get("depth_ratio", ""), "depth_ratio", where)
    if depth_ratio is not None:
        if not 0.0 <= depth_ratio <= 1.0:
            raise LabelFileError(f"{where}: depth_ratio={depth_ratio} outside [0, 1]")
        if invasion and (invasion == "deep") != (depth_ratio >= DEEP_INVASION_RATIO):
            raise LabelFileError(f"{where}: depth_ratio={depth_ratio} contradicts invasion={invasion!r}")
    thickness = _optional_float(
        values.get("endometrial_thickness_mm", ""), "endometrial_thickness_mm", where
    )
    if thickness is not None and thickness < 0:
        raise LabelFileError(f"{where}: endometrial_thickness_mm={thickness} is negative")
    hard_negative = values.get("hard_negative", "")
    if hard_negative not in ("",) + HARD_NEGATIVE_TYPES:
        raise LabelFileError(f"{where}: unknown hard_negative {hard_negative!r} "
                             "(expected polyp, fluid, fibroid, atrophic or empty)")
    return LabelRow(
        patient_id=values["patient_id"],
        file=values["file"],
        modality=modality,
        label=label,
        split=split,
        invasion=invasion,
        depth_ratio=depth_ratio,
        endometrial_thickness_mm=thickness,
        hard_negative=hard_negative,
        line=line,
    )


def read_label_file(path: str | Path, *, check_files: bool = True) -> list[LabelRow]:
    """Read and validate a label CSV.

    Args:
        path: the CSV; ``file`` entries are resolved relative to its folder.
        check_files: also fail when a row names a file that does not exist.

    Returns:
        The rows in file order.

    Raises:
        LabelFileError: naming the file and line of the first problem (missing or unknown
            column, malformed line, unknown label, a path outside the CSV's folder, missing
            file, duplicate file, a patient whose rows disagree on label or split).
    """
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"{path}: label file not found")
    try:
        return _read_rows(path, check_files)
    except UnicodeDecodeError as exc:
        raise LabelFileError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8"
        ) from None
    except OSError as exc:  # unreadable: permissions, a folder of that name, an I/O error
        raise LabelFileError(f"{path}: cannot read the label file ({exc.strerror or exc})") from None


def _read_rows(path: Path, check_files: bool) -> list[LabelRow]:
    rows: list[LabelRow] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, strict=True)
        try:
            header = reader.fieldnames
        except csv.Error as exc:
            raise LabelFileError(f"{path}:1: malformed header ({exc})") from None
        if not header:
            raise LabelFileError(f"{path}: empty label file (no header row)")
        header = [h.strip() for h in header]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise LabelFileError(f"{path}:1: duplicated column(s) {duplicated}")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise LabelFileError(f"{path}:1: missing required column(s) {missing}")
        unknown = [c for c in header if c not in LABEL_COLUMNS]
        if unknown:
            raise LabelFileError(f"{path}:1: unknown column(s) {unknown}; allowed: {list(LABEL_COLUMNS)}")
        reader.fieldnames = header
        seen_files: dict[str, LabelRow] = {}  # by normalised path: a.dcm and ./a.dcm are one file
        per_patient: dict[str, LabelRow] = {}
        while True:
            try:
                raw = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise LabelFileError(f"{path}:{reader.line_num}: malformed CSV line ({exc})") from None
            line = reader.line_num
            where = f"{path}:{line}"
            if None in raw or any(v is None for v in raw.values()):
                raise LabelFileError(
                    f"{where}: malformed CSV line (expected {len(header)} fields)"
                )
            row = _parse_row(raw, where, line)
            # Before the existence check, so that a file outside the folder is never touched.
            earlier = seen_files.setdefault(_inside_folder(row.file, where), row)
            if earlier is not row:
                raise LabelFileError(
                    f"{where}: file {row.file!r} already listed on line {earlier.line}"
                    + ("" if earlier.file == row.file else f" as {earlier.file!r}"))
            if check_files and not (path.parent / row.file).is_file():
                raise LabelFileError(f"{where}: file {row.file!r} does not exist")
            first = per_patient.setdefault(row.patient_id, row)
            if first.split != row.split:
                raise LabelFileError(
                    f"{where}: patient {row.patient_id!r} has split {row.split!r} here but "
                    f"{first.split!r} on line {first.line}; splits are per patient"
                )
            if first.label != row.label:
                raise LabelFileError(
                    f"{where}: patient {row.patient_id!r} has label {row.label} here but "
                    f"{first.label} on line {first.line}"
                )
            rows.append(row)
    return rows


def write_label_file(path: str | Path, rows: list[LabelRow]) -> None:
    """Write rows as a label CSV with the columns in :data:`LABEL_COLUMNS` order."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(LABEL_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            record = asdict(row)
            record.pop("line")
            for key in ("depth_ratio", "endometrial_thickness_mm"):
                record[key] = "" if record[key] is None else f"{record[key]:.4f}"
            writer.writerow(record)
