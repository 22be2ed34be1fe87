"""An IID control of a generated cohort: the training centers' patients dealt at random.

Federated training on hospitals that each have their own scanner, case mix and size is
non-IID. To tell what of a federated-vs-pooled gap comes from that heterogeneity and what from
federated averaging itself, the same experiment runs on an *IID* copy of the cohort: the
training centers' ultrasound patients are shuffled and dealt back so that every site keeps
its number of patients per split (train / val / test) but draws them from all training
centers alike. The pooled data are identical, site sizes are identical, only who-holds-what
changes. Held-out centers are left as they are.

The copy is links, not new pixels: ``<output>/iid_<center>/us/<file>`` is a symbolic link to
the source file (content-addressed caches stay warm), each site keeps its original center's
MRI and paired renders (linked folders), and ``cohort.json`` records the source, its
fingerprint and the seed. :func:`is_partition_of` lets the apps accept the copy as the
configured cohort.

    python -m simulations.cohort.repartition /tmp/ecs/cohorts/quick-seed0 /tmp/ecs/cohorts/quick-seed0-iid0 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from client.cohort import read_cohort
from client.data.labels import LabelFileError, LabelRow, read_label_file, write_label_file

__all__ = ["SITE_PREFIX", "repartition_iid", "is_partition_of"]

SITE_PREFIX = "iid_"  # an IID site takes the size of the center it is named after
SPLIT_ORDER = ("train", "val", "test", "")


def _training_rows(source: Path, centers: list[str]) -> dict[str, list[LabelRow]]:
    rows = {}
    for center in centers:
        try:
            rows[center] = read_label_file(source / center / "manifest.csv")
        except LabelFileError as exc:
            raise ValueError(f"cannot repartition {source}: {exc}") from None
    return rows


def _patients_by_split(rows: list[LabelRow]) -> dict[str, list[str]]:
    """US patient ids per split, in first-appearance order."""
    out: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for row in rows:
        if row.modality == "US" and row.patient_id not in seen:
            seen.add(row.patient_id)
            out[row.split].append(row.patient_id)
    return out


def repartition_iid(source: str | Path, output: str | Path, *, seed: int, log: Callable[[str], None] = print) -> dict:
    """Write an IID copy of the cohort at ``source`` into ``output``; return its summary.

    Every training center ``c`` becomes a site ``iid_c`` with as many ultrasound patients per
    split as ``c`` had, drawn without replacement from all training centers' patients of that
    split (``random.Random(seed)``). A patient's images stay together. MRI rows, ``mr/`` and
    ``paired/`` stay with the site named after their center. Held-out centers are linked as they
    are.

    Raises:
        ValueError: ``source`` is not a generated cohort, ``output`` is not empty, or two
            centers use the same ultrasound file name.
    """
    source, output = Path(source).resolve(), Path(output)
    try:
        summary = read_cohort(source)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} is not empty; choose a new folder")
    if "partition" in summary:
        raise ValueError(f"{source} is itself a repartitioned copy; start from the generated cohort")
    training = [c["name"] for c in summary["centers"] if c["role"] == "train"]
    rows = _training_rows(source, training)
    by_patient: dict[str, tuple[str, list[LabelRow]]] = {}
    pools: dict[str, list[str]] = defaultdict(list)
    quota: dict[str, dict[str, int]] = {}
    file_owner: dict[str, str] = {}
    for center in training:
        for row in rows[center]:
            if row.modality == "US":
                by_patient.setdefault(row.patient_id, (center, []))[1].append(row)
                name = Path(row.file).name
                if file_owner.setdefault(name, center) != center:
                    raise ValueError(f"file name {name} is used by {file_owner[name]} and {center}")
        split_patients = _patients_by_split(rows[center])
        quota[center] = {split: len(ids) for split, ids in split_patients.items()}
        for split, ids in split_patients.items():
            pools[split].extend(ids)

    rng = random.Random(seed)
    assigned: dict[str, list[str]] = {center: [] for center in training}
    for split in SPLIT_ORDER:
        pool = list(pools.get(split, []))
        rng.shuffle(pool)
        for center in training:
            take = quota[center].get(split, 0)
            assigned[center] += pool[:take]
            pool = pool[take:]

    output.mkdir(parents=True, exist_ok=True)
    new_centers = []
    for entry in summary["centers"]:
        name = entry["name"]
        if entry["role"] != "train":
            (output / name).symlink_to(source / name, target_is_directory=True)
            new_centers.append(entry)
            continue
        site = output / f"{SITE_PREFIX}{name}"
        (site / "us").mkdir(parents=True)
        for sub in ("mr", "paired"):
            if (source / name / sub).is_dir():
                (site / sub).symlink_to(source / name / sub, target_is_directory=True)
        site_rows: list[LabelRow] = []
        for patient in assigned[name]:
            owner, patient_rows = by_patient[patient]
            for row in patient_rows:
                link = site / "us" / Path(row.file).name
                link.symlink_to(source / owner / row.file)
                site_rows.append(replace(row, file=f"us/{link.name}"))
        site_rows += [r for r in rows[name] if r.modality == "MR"]
        write_label_file(site / "manifest.csv", site_rows)
        us_patients = {r.patient_id: r.label for r in site_rows if r.modality == "US"}
        origins = Counter(by_patient[patient][0] for patient in us_patients)
        new_centers.append({
            **entry, "name": site.name, "scanner": "mixed",
            "us_patients": len(us_patients), "us_files": sum(r.modality == "US" for r in site_rows),
            "us_positives": sum(us_patients.values()), "patients_from": dict(sorted(origins.items())),
        })
        log(f"  {site.name}: {len(us_patients)} patients ({sum(us_patients.values())} positive) from "
            + ", ".join(f"{c} {n}" for c, n in sorted(origins.items())))
    new_summary = {
        **summary, "centers": new_centers,
        "partition": {"kind": "iid", "seed": int(seed), "source": str(source), "source_fingerprint": summary["fingerprint"]},
    }
    (output / "cohort.json").write_text(json.dumps(new_summary, indent=2, sort_keys=True) + "\n")
    log(f"IID copy of {source.name} ({len(training)} training sites, seed {seed}) -> {output}")
    return new_summary


def is_partition_of(cohort_dir: str | Path, fingerprint: str) -> bool:
    """True when ``cohort_dir`` holds a repartitioned copy of the cohort with ``fingerprint``."""
    try:
        partition = read_cohort(cohort_dir).get("partition") or {}
    except (FileNotFoundError, ValueError):
        return False
    return partition.get("source_fingerprint") == fingerprint


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m simulations.cohort.repartition SOURCE OUTPUT --seed N``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations.cohort.repartition",
        description="Write an IID copy of a generated cohort (training centers' patients dealt at random, "
                    "site sizes per split kept, held-out centers unchanged; files are symbolic links).",
    )
    parser.add_argument("source", help="a generated cohort folder (with cohort.json)")
    parser.add_argument("output", help="new, empty folder for the copy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default 0)")
    args = parser.parse_args(argv)
    try:
        repartition_iid(args.source, args.output, seed=args.seed)
    except (ValueError, OSError) as exc:
        print(f"repartition: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
