"""Write a synthetic multicenter cohort: one folder per center with DICOM files and a label file.

Layout of ``output_dir``::

    cohort.json                  resolved config, seed, versions, per-center roles and counts
    <center>/manifest.csv        the label file (client.data.labels format), one row per DICOM
    <center>/truth.jsonl         full ground truth per participant (anatomy parameters)
    <center>/us/<pid>_<k>.dcm    ultrasound stills or cines
    <center>/mr/<pid>.dcm        T2 sagittal MRI (other people than the ultrasound participants)
    <center>/paired/             held-back participants rendered in both modalities on one pixel
                                 grid, with tissue masks: for synthesis evaluation only, never
                                 listed in manifest.csv

Every participant draws from its own generator seeded by (seed, center, kind, index), so the
files are byte-identical for the same seed and config, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import scipy

from client.data.labels import LabelRow, write_label_file
from simulations.cohort.anatomy import (
    Participant,
    caliper_points_mm,
    sample_participant,
    tissue_map,
)
from simulations.cohort.annotations import apply_tint, burn_in_annotations, screen_text_lines
from simulations.cohort.dicom_writer import (
    DicomIdentity,
    UltrasoundRegion,
    make_identity,
    write_mri,
    write_ultrasound,
)
from simulations.cohort.mri import MriProfile, mri_grid, render_mri
from simulations.cohort.scanners import ScannerProfile
from simulations.cohort.spec import CohortSpec
from simulations.cohort.ultrasound import (
    body_to_pixel,
    pixel_body_coords,
    render_ultrasound,
    sample_fan_pose,
)

__all__ = ["GENERATOR_VERSION", "CohortExistsError", "generate_cohort", "cohort_fingerprint"]

GENERATOR_VERSION = "2"
_KIND_CODE = {"us": 1, "mr": 2, "paired": 3}


class CohortExistsError(FileExistsError):
    """The output folder already holds something that is not this cohort."""


@dataclass(frozen=True)
class _Job:
    center_index: int
    kind: str  # "us" | "mr" | "paired"
    index: int
    label: int
    split: str
    mirror: bool  # the center's display convention (fundus left or right)


@dataclass(frozen=True)
class _JobResult:
    center_index: int
    rows: tuple[LabelRow, ...]
    truth: dict
    paired: dict | None
    n_frames: int


def cohort_fingerprint(spec: CohortSpec, seed: int) -> str:
    """SHA-256 of everything that determines the files: the spec, the seed, the generator version."""
    payload = json.dumps({"spec": asdict(spec), "seed": seed, "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def pseudonym(seed: int, center: str, kind: str, index: int) -> str:
    """Pseudonymous patient ID: stable for (seed, center, kind, index), reveals nothing else."""
    digest = hashlib.sha256(f"{seed}:{center}:{kind}:{index}".encode()).hexdigest()
    return f"PX{digest[:10].upper()}"


def _assign_labels(n: int, prevalence: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(n * prevalence) positives (at least one when prevalence > 0), shuffled."""
    n_pos = int(round(n * prevalence))
    if prevalence > 0 and n >= 2:
        n_pos = max(n_pos, 1)
    labels = np.zeros(n, dtype=np.int64)
    labels[:n_pos] = 1
    return rng.permutation(labels)


def _assign_splits(labels: np.ndarray, spec: CohortSpec, held_out: bool, rng: np.random.Generator) -> list[str]:
    """Per-patient splits, stratified by label; every split gets a positive when there are >= 3."""
    splits = [""] * len(labels)
    if held_out:
        return ["test"] * len(labels)
    for value in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == value))
        m = len(idx)
        n_val = int(round(m * spec.split_val))
        n_test = int(round(m * spec.split_test))
        if m >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        for rank, i in enumerate(idx):
            splits[i] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return splits


def _plan(spec: CohortSpec, seed: int) -> list[_Job]:
    jobs: list[_Job] = []
    for ci, center in enumerate(spec.centers):
        rng = np.random.default_rng([seed, ci, 0])
        mirror = bool(rng.random() < 0.5)
        for kind, n, prevalence in (
            ("us", center.n_us, center.prevalence),
            ("mr", center.n_mri, center.mri_prevalence),
            ("paired", center.n_paired, 0.5),
        ):
            labels = _assign_labels(n, prevalence, rng)
            splits = _assign_splits(labels, spec, center.held_out, rng) if kind != "paired" else ["test"] * n
            jobs += [_Job(ci, kind, i, int(labels[i]), splits[i], mirror) for i in range(n)]
    return jobs


def _participant(spec: CohortSpec, seed: int, job: _Job) -> tuple[Participant, np.random.Generator]:
    center = spec.centers[job.center_index]
    rng = np.random.default_rng([seed, job.center_index, _KIND_CODE[job.kind], job.index])
    pid = pseudonym(seed, center.name, job.kind, job.index)
    p = sample_participant(
        rng, pid, label=job.label, deep_fraction=center.deep_fraction,
        hard_negative_rate=spec.hard_negative_rate,
    )
    return p, rng


def _row(p: Participant, file: str, modality: str, split: str) -> LabelRow:
    return LabelRow(
        patient_id=p.participant_id, file=file, modality=modality, label=p.label, split=split,
        invasion=p.invasion, depth_ratio=round(p.depth_ratio, 4),
        endometrial_thickness_mm=round(p.endometrial_thickness_mm, 4), hard_negative=p.hard_negative,
    )


def _write_us_exam(spec: CohortSpec, seed: int, job: _Job, out: Path) -> _JobResult:
    center = spec.centers[job.center_index]
    profile = spec.scanner_profile(center)
    p, rng = _participant(spec, seed, job)
    n_images = 1 + int(rng.random() < spec.extra_image_rate)
    rows, n_frames = [], 0
    for k in range(n_images):
        mirror = job.mirror if rng.random() < 0.9 else not job.mirror
        render = render_ultrasound(p, profile, rng, pose=sample_fan_pose(p, rng, mirror=mirror))
        geom = render.geometry
        identity = make_identity(center=center.name, patient_id=p.participant_id, index=k, modality="US", seed=seed)
        text = screen_text_lines(
            profile, institution=identity.institution_name, patient_id=p.participant_id,
            study_date=identity.study_date, study_time=identity.study_time,
        )
        calipers, caliper_label = [], None
        if rng.random() < profile.caliper_probability:
            a, b = caliper_points_mm(p)
            calipers = [(body_to_pixel(geom, render.pose, *a), body_to_pixel(geom, render.pose, *b))]
            caliper_label = f"D1 {p.endometrial_thickness_mm:.1f} mm"
        annotation_seed = [seed, job.center_index, 9, job.index, k]
        frames_rgb = np.stack([
            burn_in_annotations(
                apply_tint(frame, profile.tint), layout=profile.annotation_layout, text_lines=text,
                calipers=calipers, caliper_label=caliper_label, depth_mm=profile.depth_mm,
                fan_bbox=geom.bbox, rng=np.random.default_rng(annotation_seed), pixel_size_mm=geom.pixel_mm,
            )
            for frame in render.frames
        ])
        region = UltrasoundRegion.from_fan(geom.bbox, (geom.apex_col, geom.apex_row), geom.pixel_mm, profile.center_frequency_mhz)
        file = f"us/{p.participant_id}_{k}.dcm"
        write_ultrasound(out / file, frames_rgb, profile=profile, identity=identity, region=region)
        rows.append(_row(p, file, "US", job.split))
        n_frames += len(frames_rgb)
    return _JobResult(job.center_index, tuple(rows), _truth(p, "US", rows), None, n_frames)


def _write_mr_exam(spec: CohortSpec, seed: int, job: _Job, out: Path) -> _JobResult:
    center = spec.centers[job.center_index]
    profile = spec.mri_profile(center)
    p, rng = _participant(spec, seed, job)
    x, y, pixel = mri_grid(profile, rng)
    image = render_mri(p, x, y, profile, rng, pixel_mm=pixel)
    identity = make_identity(center=center.name, patient_id=p.participant_id, index=0, modality="MR", seed=seed)
    file = f"mr/{p.participant_id}.dcm"
    _write_mr_file(out / file, image, profile, identity, pixel)
    row = _row(p, file, "MR", job.split)
    return _JobResult(job.center_index, (row,), _truth(p, "MR", [row]), None, 1)


def _write_mr_file(path: Path, image: np.ndarray, profile: MriProfile, identity: DicomIdentity, pixel: float) -> None:
    write_mri(
        path, image, identity=identity, pixel_spacing_mm=(pixel, pixel),
        slice_thickness_mm=profile.slice_thickness_mm, repetition_time_ms=profile.repetition_time_ms,
        echo_time_ms=profile.echo_time_ms, field_strength_t=profile.field_strength_t,
        manufacturer=profile.manufacturer, model=profile.model, bits_stored=profile.bits_stored,
    )


def _write_paired(spec: CohortSpec, seed: int, job: _Job, out: Path) -> _JobResult:
    """Same anatomy, same pose, same pixel grid: a clean US still, an MR and the tissue map."""
    center = spec.centers[job.center_index]
    profile = spec.scanner_profile(center)
    mr_profile = spec.mri_profile(center)
    p, rng = _participant(spec, seed, job)
    render = render_ultrasound(p, profile, rng, pose=sample_fan_pose(p, rng, mirror=job.mirror), n_frames=1)
    geom = render.geometry
    bx, by = pixel_body_coords(geom, render.pose)
    mr_image = render_mri(p, bx, by, mr_profile, rng, pixel_mm=geom.pixel_mm)
    stem = f"paired/{p.participant_id}"
    us_id = make_identity(center=center.name, patient_id=p.participant_id, index=0, modality="US", seed=seed)
    mr_id = make_identity(center=center.name, patient_id=p.participant_id, index=0, modality="MR", seed=seed)
    region = UltrasoundRegion.from_fan(geom.bbox, (geom.apex_col, geom.apex_row), geom.pixel_mm, profile.center_frequency_mhz)
    write_ultrasound(out / f"{stem}_us.dcm", apply_tint(render.frames[0], "gray")[None], profile=_mono(profile), identity=us_id, region=region)
    _write_mr_file(out / f"{stem}_mr.dcm", mr_image, mr_profile, mr_id, geom.pixel_mm)
    np.savez_compressed(out / f"{stem}_tissue.npz", tissue=tissue_map(p, bx, by), fan=render.fan)
    paired = {
        "patient_id": p.participant_id, "us_file": f"{stem}_us.dcm", "mr_file": f"{stem}_mr.dcm",
        "tissue_file": f"{stem}_tissue.npz", "label": p.label, "invasion": p.invasion,
        "depth_ratio": round(p.depth_ratio, 4), "pixel_mm": round(geom.pixel_mm, 6),
    }
    return _JobResult(job.center_index, (), _truth(p, "paired", []), paired, 1)


def _mono(profile: ScannerProfile) -> ScannerProfile:
    """Paired renders are stored losslessly in grayscale, whatever the center's encoding."""
    return replace(profile, photometric="MONOCHROME2", compression="none", cine_frames=1)


def _truth(p: Participant, modality: str, rows: list[LabelRow]) -> dict:
    record = asdict(p)
    record["modality"] = modality
    record["files"] = [r.file for r in rows]
    return record


_WRITERS: dict[str, Callable[[CohortSpec, int, _Job, Path], _JobResult]] = {
    "us": _write_us_exam, "mr": _write_mr_exam, "paired": _write_paired,
}


def _run(args: tuple[CohortSpec, int, _Job, str]) -> _JobResult:
    spec, seed, job, out = args
    center_dir = Path(out) / spec.centers[job.center_index].name
    return _WRITERS[job.kind](spec, seed, job, center_dir)


def _results(jobs: list[_Job], spec: CohortSpec, seed: int, out: Path, workers: int) -> Iterator[_JobResult]:
    args = [(spec, seed, job, str(out)) for job in jobs]
    if workers <= 1:
        yield from map(_run, args)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run, args, chunksize=4)


def generate_cohort(
    spec: CohortSpec, output_dir: str | Path, *, seed: int, workers: int = 1,
    overwrite: bool = False, log: Callable[[str], None] | None = None,
) -> dict:
    """Generate the cohort into ``output_dir`` and return the summary written to cohort.json.

    If ``output_dir`` already holds this exact cohort (same fingerprint) it is reused as is.
    Anything else there raises :class:`CohortExistsError`, unless ``overwrite`` replaces it.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(output_dir)
    fingerprint = cohort_fingerprint(spec, seed)
    summary_path = out / "cohort.json"
    if summary_path.is_file():
        existing = json.loads(summary_path.read_text())
        if existing.get("fingerprint") == fingerprint:
            log(f"cohort already present in {out} (fingerprint {fingerprint[:12]}); reusing it")
            return existing
        if not overwrite:
            raise CohortExistsError(f"{out} holds a different cohort; choose another output_dir or set overwrite=true")
        log(f"replacing the different cohort in {out}")
    leftovers = [c for c in out.iterdir() if c.name not in (".hydra", "ecs-cohort.log")] if out.is_dir() else []
    if leftovers and not overwrite:
        raise CohortExistsError(f"{out} is not empty ({leftovers[0].name}, ...); choose another output_dir or set overwrite=true")
    for center in spec.centers:
        shutil.rmtree(out / center.name, ignore_errors=True)
        for sub in ("us", "mr", "paired"):
            (out / center.name / sub).mkdir(parents=True, exist_ok=True)
    summary_path.unlink(missing_ok=True)

    jobs = _plan(spec, seed)
    log(f"generating cohort {spec.name!r}: {len(spec.centers)} centers, {len(jobs)} participants, seed {seed}, {workers} worker(s)")
    per_center = [{"rows": [], "truth": [], "paired": [], "frames": 0} for _ in spec.centers]
    start = last = time.perf_counter()
    frames = 0
    for done, result in enumerate(_results(jobs, spec, seed, out, workers), start=1):
        bucket = per_center[result.center_index]
        bucket["rows"] += result.rows
        bucket["truth"].append(result.truth)
        if result.paired:
            bucket["paired"].append(result.paired)
        bucket["frames"] += result.n_frames
        frames += result.n_frames
        now = time.perf_counter()
        if now - last > 2.0 or done == len(jobs):
            last = now
            log(f"  {done}/{len(jobs)} participants, {frames} images, {now - start:.1f} s ({frames / (now - start):.1f} images/s)")

    summary = _summarise(spec, seed, fingerprint, per_center)
    for center, bucket in zip(spec.centers, per_center, strict=True):
        _write_center_files(out / center.name, bucket)
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log(f"done: {frames} images in {time.perf_counter() - start:.1f} s -> {out}")
    return summary


def _write_center_files(center_dir: Path, bucket: dict) -> None:
    write_label_file(center_dir / "manifest.csv", bucket["rows"])
    with (center_dir / "truth.jsonl").open("w") as handle:
        for record in bucket["truth"]:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    if bucket["paired"]:
        keys = list(bucket["paired"][0])
        lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in bucket["paired"]]
        (center_dir / "paired" / "paired.csv").write_text("\n".join(lines) + "\n")
    else:
        shutil.rmtree(center_dir / "paired", ignore_errors=True)
    for sub in ("us", "mr"):
        if not any((center_dir / sub).iterdir()):
            (center_dir / sub).rmdir()


def _summarise(spec: CohortSpec, seed: int, fingerprint: str, per_center: list[dict]) -> dict:
    centers = []
    for center, bucket in zip(spec.centers, per_center, strict=True):
        us_rows = [r for r in bucket["rows"] if r.modality == "US"]
        us_patients = {r.patient_id: r.label for r in us_rows}
        mr_patients = {r.patient_id: r.label for r in bucket["rows"] if r.modality == "MR"}
        centers.append({
            "name": center.name,
            "role": "held_out" if center.held_out else "train",
            "scanner": center.scanner,
            "mri": center.mri,
            "us_patients": len(us_patients),
            "us_files": len(us_rows),
            "us_positives": sum(us_patients.values()),
            "mr_patients": len(mr_patients),
            "mr_positives": sum(mr_patients.values()),
            "paired": len(bucket["paired"]),
            "images": bucket["frames"],
        })
    return {
        "name": spec.name,
        "seed": seed,
        "fingerprint": fingerprint,
        "generator_version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "centers": centers,
        "held_out_centers": [c.name for c in spec.centers if c.held_out],
        "versions": {
            "python": sys.version.split()[0], "numpy": np.__version__,
            "scipy": scipy.__version__, "pydicom": pydicom.__version__,
        },
    }

