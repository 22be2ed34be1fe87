"""Scan a hospital's DICOM folder: what decodes, what is quarantined, what PHI is left.

Layouts understood by :func:`scan_site`:

* ``--labels CSV`` given: the CSV's rows (paths relative to the CSV's folder);
* ``DIR/manifest.csv`` exists: used as the label file;
* subfolders ``DIR/<center>/manifest.csv`` (a generated multi-center cohort): every center's
  rows, each file tagged with its ``center``;
* otherwise every file under ``DIR`` (hidden files skipped), unlabelled.

A bad file never stops the scan: it is *quarantined* with a short reason. Label-file
problems (malformed line, unknown label, missing file, ...) and an unusable folder are
*fatal* and listed in ``SiteReport.fatal_errors``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client.data.cache import PreprocessedCache
from client.data.decode import DicomDecodeError
from client.data.labels import LabelFileError, LabelRow, read_label_file
from client.data.pipeline import load_preprocessed
from client.data.preprocess import PreprocessConfig

__all__ = ["MANIFEST_NAME", "FileReport", "SiteReport", "label_sources", "scan_site"]

MANIFEST_NAME = "manifest.csv"
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class FileReport:
    """One file's outcome. ``frames`` = frames selected by the config; sizes in pixels."""

    path: str
    status: str  # "ok" | "quarantined"
    reason: str = ""
    modality: str | None = None
    frames: int | None = None
    n_frames_total: int | None = None
    rows: int | None = None
    cols: int | None = None
    spacing_mm: list[float] | None = None  # (row, col) in mm
    photometric: str | None = None
    transfer_syntax: str | None = None
    region: list[int] | None = None  # (x0, y0, x1, y1) inclusive pixels
    center: str = ""
    patient_id: str = ""
    label: int | None = None
    phi: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    from_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class SiteReport:
    """Everything ``ecs-data check`` prints."""

    data_dir: str
    label_files: list[str] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)
    fatal_errors: list[str] = field(default_factory=list)

    @property
    def ok_files(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "ok"]

    @property
    def quarantined(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every quarantined file."""
        return [(f.path, f.reason) for f in self.files if f.status != "ok"]

    @property
    def is_fatal(self) -> bool:
        return bool(self.fatal_errors)

    def summary(self) -> dict[str, Any]:
        """Counts of usable files per modality, label and center, plus quarantine size."""
        ok = self.ok_files
        return {
            "files": len(self.files),
            "ok": len(ok),
            "quarantined": len(self.files) - len(ok),
            "frames": sum(f.frames or 0 for f in ok),
            "by_modality": dict(Counter(f.modality or "?" for f in ok)),
            "by_label": {str(k): v for k, v in Counter(
                "unlabelled" if f.label is None else f.label for f in ok).items()},
            "by_center": dict(Counter(f.center or "-" for f in ok)),
            "spacing_known": sum(1 for f in ok if f.spacing_mm),
            "by_photometric": dict(Counter(f.photometric or "?" for f in ok)),
        }

    def phi_summary(self) -> dict[str, int]:
        """How many files carry each PHI tag / flag (names only)."""
        counts: Counter[str] = Counter()
        for report in self.files:
            counts.update(tag.split(":")[0] if tag.startswith("PrivateTags") else tag
                          for tag in report.phi)
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: summary, phi, fatal/label errors, quarantine and per-file list."""
        return {
            "data_dir": self.data_dir,
            "label_files": self.label_files,
            "summary": self.summary(),
            "phi": self.phi_summary(),
            "fatal_errors": self.fatal_errors,
            "label_errors": [e for e in self.fatal_errors if e.startswith("label file")],
            "quarantined": [{"path": p, "reason": r} for p, r in self.quarantined],
            "files": [f.to_dict() for f in self.files],
        }


@dataclass(frozen=True)
class _Target:
    path: Path
    center: str = ""
    row: LabelRow | None = None


def label_sources(data_dir: Path, labels_csv: Path | None) -> list[tuple[Path, str]]:
    """``(label file, center)`` pairs of a site folder, by the layouts of the module docstring
    (empty: an unlabelled folder)."""
    if labels_csv is not None:
        return [(labels_csv, labels_csv.resolve().parent.name)]
    if (data_dir / MANIFEST_NAME).is_file():
        return [(data_dir / MANIFEST_NAME, data_dir.resolve().name)]
    return [(sub / MANIFEST_NAME, sub.name) for sub in sorted(data_dir.iterdir())
            if sub.is_dir() and (sub / MANIFEST_NAME).is_file()]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _collect_targets(data_dir: Path, labels_csv: Path | None,
                     report: SiteReport, modality: str | None = None) -> list[_Target]:
    sources = label_sources(data_dir, labels_csv)
    if not sources:
        return [_Target(p) for p in sorted(data_dir.rglob("*"))
                if p.is_file() and not any(part.startswith(".")
                                           for part in p.relative_to(data_dir).parts)]
    targets: list[_Target] = []
    for csv_path, center in sources:
        report.label_files.append(str(csv_path))
        try:
            rows = read_label_file(csv_path)
        except LabelFileError as exc:
            report.fatal_errors.append(f"label file error: {exc}")
            continue
        targets.extend(_Target(csv_path.parent / row.file, center, row) for row in rows
                       if modality is None or row.modality == modality)
    return targets


def _file_report(target: _Target, shown: str, cfg: PreprocessConfig,
                 cache: PreprocessedCache | None) -> FileReport:
    base = FileReport(path=shown, status="quarantined", center=target.center)
    if target.row is not None:
        base.patient_id, base.label = target.row.patient_id, target.row.label
    try:
        result = load_preprocessed(target.path, cfg, cache)
    except DicomDecodeError as exc:
        base.reason = exc.reason
        return base
    except MemoryError:
        base.reason = "image too large to decode in memory"
        return base
    except Exception as exc:  # never let one file stop the scan
        base.reason = f"internal error ({type(exc).__name__}: {str(exc)[:120]})"
        return base
    meta = result.meta
    base.status, base.from_cache = "ok", result.from_cache
    base.modality, base.photometric = meta.get("modality"), meta.get("photometric")
    base.transfer_syntax = meta.get("transfer_syntax")
    base.frames, base.n_frames_total = int(result.image.shape[0]), meta.get("n_frames_total")
    base.rows, base.cols = meta.get("rows"), meta.get("cols")
    base.spacing_mm, base.region = meta.get("spacing_mm"), meta.get("region")
    base.phi, base.notes = list(meta.get("phi", [])), list(meta.get("notes", []))
    if target.row is not None and base.modality != target.row.modality:
        base.notes.append(
            f"label file says {target.row.modality}, DICOM header says {base.modality}")
    return base


def scan_site(
    data_dir: str | Path,
    labels_csv: str | Path | None = None,
    cfg: PreprocessConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    modality: str | None = None,
) -> SiteReport:
    """Decode and preprocess every file of a site; never raises for a bad file.

    Args:
        data_dir: the site's DICOM folder.
        labels_csv: label file; default ``data_dir/manifest.csv`` or per-center manifests.
        cfg: preprocessing settings (default :class:`PreprocessConfig`).
        cache_dir: also fill the preprocessed cache here (later training reads it).
        progress: called as ``progress(done, total, path)`` after each file.
        modality: only the label file's rows of this modality (``"US"``, ``"MR"``); the label
            file is still checked whole. Unlabelled folders are scanned whole.

    Returns:
        :class:`SiteReport`; check ``fatal_errors`` / ``quarantined``.
    """
    cfg = cfg or PreprocessConfig()
    data_dir = Path(data_dir)
    report = SiteReport(data_dir=str(data_dir))
    if not data_dir.is_dir():
        report.fatal_errors.append(f"data folder not found: {data_dir}")
        return report
    labels_path = Path(labels_csv) if labels_csv is not None else None
    targets = _collect_targets(data_dir, labels_path, report, modality)
    if report.fatal_errors:
        return report
    cache = PreprocessedCache(cache_dir) if cache_dir is not None else None
    for done, target in enumerate(targets, start=1):
        shown = _relative(target.path, data_dir)
        report.files.append(_file_report(target, shown, cfg, cache))
        if progress is not None:
            progress(done, len(targets), shown)
    if not report.ok_files:
        report.fatal_errors.append(
            f"no usable image files in {data_dir} ({len(report.files)} file(s) looked at)")
    return report
