"""Screen DICOM files with a model bundle: per file the probability of myometrial invasion, the
decision at the bundle's operating point and the domain warnings (:mod:`clinic.domain`).

A file's probability is the mean over its selected frames (the recipe's ``frame_policy``;
``middle``, the training default, selects one). A file that cannot be decoded or is not
ultrasound is *refused*: probability and decision None, the reason among the warnings. Nothing
raises for a bad file. The decision is a screening flag for referral, not a diagnosis.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client.data.cache import PreprocessedCache
from client.data.decode import DicomDecodeError
from clinic.domain import assess
from clinic.model import Prepared, ScreeningModel

__all__ = ["ScreenResult", "list_inputs", "screen_file", "screen_prepared", "to_csv"]

POSITIVE, NEGATIVE = "positive", "negative"


@dataclass
class ScreenResult:
    """One file's outcome; ``probability`` in [0, 1] or None when refused."""

    file: str
    probability: float | None
    decision: str | None  # "positive" (>= threshold: refer), "negative", or None when refused
    warnings: list[str] = field(default_factory=list)
    prepared: Prepared | None = None  # kept for heatmaps; not serialised

    def to_dict(self) -> dict:
        """The JSON object of the issue: ``file``, ``probability``, ``decision``, ``warnings``."""
        return {"file": self.file, "probability": self.probability, "decision": self.decision,
                "warnings": list(self.warnings)}


def list_inputs(path: Path) -> Iterator[Path]:
    """The file itself, or every non-hidden file under a folder, sorted."""
    if path.is_file():
        yield path
        return
    for found in sorted(path.rglob("*")):
        if found.is_file() and not any(part.startswith(".") for part in found.relative_to(path).parts):
            yield found


def screen_prepared(model: ScreeningModel, prepared: Prepared, shown: str) -> ScreenResult:
    """Score an already preprocessed file (the domain check decides whether it is scored)."""
    verdict = assess(prepared.meta, prepared.frames, model.spec.intensity)
    if verdict.refused is not None:
        return ScreenResult(shown, None, None, verdict.warnings, prepared)
    probability = float(np.mean(model.probabilities(prepared.inputs)))
    decision = POSITIVE if probability >= model.threshold else NEGATIVE
    return ScreenResult(shown, probability, decision, verdict.warnings, prepared)


def screen_file(model: ScreeningModel, path: Path, shown: str | None = None,
                cache: PreprocessedCache | None = None) -> ScreenResult:
    """Decode, preprocess (the bundle's recipe), check and score one file; never raises for a bad file."""
    shown = shown or str(path)
    try:
        with warnings.catch_warnings():  # pydicom's complaints about odd header values: the data
            warnings.simplefilter("ignore", UserWarning)  # layer keeps the decode ones as notes
            prepared = model.prepare(path, cache)
        return screen_prepared(model, prepared, shown)
    except DicomDecodeError as exc:
        return ScreenResult(shown, None, None, [f"not usable: {exc.reason}"])
    except MemoryError:
        return ScreenResult(shown, None, None, ["not usable: image too large to decode in memory"])
    except Exception as exc:  # one odd file must not stop a clinic's folder
        return ScreenResult(shown, None, None, [f"not usable: internal error ({type(exc).__name__}: {str(exc)[:160]})"])


def screen_all(model: ScreeningModel, root: Path,
               progress: Callable[[int, int, str], None] | None = None) -> list[ScreenResult]:
    """:func:`screen_file` over :func:`list_inputs` of ``root`` (file names relative to a folder)."""
    paths = list(list_inputs(root))
    results = []
    for done, path in enumerate(paths, start=1):
        shown = str(path.relative_to(root)) if root.is_dir() else str(path)
        results.append(screen_file(model, path, shown))
        if progress is not None:
            progress(done, len(paths), shown)
    return results


def to_csv(results: list[ScreenResult], threshold: float) -> str:
    """CSV text: file, probability, decision, threshold, warnings (joined by " | ")."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "probability", "decision", "threshold", "warnings"])
    for r in results:
        writer.writerow([r.file, "" if r.probability is None else f"{r.probability:.6f}", r.decision or "refused",
                         f"{threshold:.6f}", " | ".join(r.warnings)])
    return out.getvalue()
