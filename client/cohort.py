"""A generated cohort's summary, ``cohort.json``, read in one place.

In simulation the ClientApp maps its ``partition-id`` to a center of the cohort; the research
harness (``simulations``) reads the centers' roles and counts from the same functions.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["COHORT_FILE", "read_cohort", "cohort_centers", "center_roles"]

COHORT_FILE = "cohort.json"


def read_cohort(cohort_dir: str | Path) -> dict:
    """The summary the generator wrote (config, seed, fingerprint, per-center roles and counts)."""
    path = Path(cohort_dir) / COHORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{Path(cohort_dir)}: no {COHORT_FILE} (not a generated cohort)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def center_roles(cohort_dir: str | Path) -> tuple[list[str], list[str]]:
    """(training centers, held-out centers) of the cohort, in the summary's order."""
    summary = read_cohort(cohort_dir)
    return [c["name"] for c in summary["centers"] if c["role"] == "train"], list(summary["held_out_centers"])


def cohort_centers(cohort_dir: str | Path) -> list[str]:
    """Center names of a generated cohort, held-out ones included: the partition-id order.

    Largest first (number of ultrasound files, then name). Flower's Simulation Runtime queues
    the messages of a round in partition-id order onto its CPU slots, so this is
    longest-job-first scheduling: with 4 sites on 2 slots the biggest site no longer starts last
    and waits for a small one (docs/benchmarks.md, round overhead).
    """
    summary = read_cohort(cohort_dir)
    return [c["name"] for c in sorted(summary["centers"], key=lambda c: (-int(c["us_files"]), c["name"]))]
