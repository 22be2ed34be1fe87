"""Caliper twins: one ultrasound exam written twice, with and without burned-in calipers.

The twins share the participant, pose, speckle, screen text and encoding; only the
endometrial-thickness calipers (marks, dotted line, "D1 12.3 mm" label) differ. Preprocessing
both and comparing them measures how much of the calipers survives annotation removal
(:func:`surviving_caliper_contrast`) and how much tissue the removal changes on a frame that
has nothing to remove (:func:`false_removal_fraction`). Used by the data layer's tests and the
shortcut audit (docs/shortcut_audit.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from client.data.annotations import detect_annotations, inpaint_background
from client.data.decode import DecodedImage, decode_dicom
from client.data.preprocess import PreprocessConfig, preprocess
from simulations.cohort.anatomy import caliper_points_mm, sample_participant
from simulations.cohort.annotations import apply_tint, burn_in_annotations, screen_text_lines
from simulations.cohort.dicom_pixels import SUPPORTED_ENCODINGS
from simulations.cohort.dicom_writer import UltrasoundRegion, make_identity, write_ultrasound
from simulations.cohort.scanners import PHOTOMETRICS, ScannerProfile
from simulations.cohort.ultrasound import body_to_pixel, render_ultrasound, sample_fan_pose

__all__ = ["CaliperTwins", "photometric_variants", "write_caliper_twins", "caliper_footprint", "surviving_caliper_contrast", "false_removal_fraction"]


@dataclass(frozen=True)
class CaliperTwins:
    """Paths of the twin files; ``caliper_pixels``: bool ``[H, W]`` where the displayed frames differ."""

    with_calipers: Path
    without_calipers: Path
    caliper_pixels: np.ndarray


def photometric_variants(profile: ScannerProfile) -> dict[str, ScannerProfile]:
    """The profile stored in every photometric: its own compression where the writer supports
    it with that photometric, JPEG baseline for YBR_FULL_422 (its only encoding), else none."""
    variants = {}
    for photometric in PHOTOMETRICS:
        if (photometric, profile.compression) in SUPPORTED_ENCODINGS:
            compression = profile.compression
        else:
            compression = "jpeg_baseline" if photometric == "YBR_FULL_422" else "none"
        variants[photometric] = replace(profile, photometric=photometric, compression=compression)
    return variants


@lru_cache(maxsize=4)
def _render(display: ScannerProfile, seed: int, label: int):
    """One participant's exam under ``display`` (storage fields normalised), cached across the
    colours and photometrics of a sweep: (participant, render)."""
    rng = np.random.default_rng([seed, 17])
    p = sample_participant(rng, f"TWIN{seed:04d}", label=label)
    return p, render_ultrasound(p, display, rng, pose=sample_fan_pose(p, rng, mirror=bool(seed % 2)))


def write_caliper_twins(
    out_dir: Path,
    profile: ScannerProfile,
    *,
    seed: int,
    caliper_color: tuple[int, int, int],
    label: int = 1,
) -> CaliperTwins:
    """Render one participant with ``profile`` and write ``with.dcm`` and ``without.dcm``.

    Args:
        out_dir: folder for the two files (created).
        profile: the scanner; its ``cine_frames`` is set to 1.
        seed: participant, pose, speckle and screen seed.
        caliper_color: RGB of the calipers and their label.
        label: the participant's screening label (0 or 1).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = replace(profile, cine_frames=1)
    p, render = _render(replace(profile, photometric="MONOCHROME2", compression="none"), seed, label)
    geom = render.geometry
    identity = make_identity(center="twins", patient_id=p.participant_id, index=0, modality="US", seed=seed)
    text = screen_text_lines(profile, institution=identity.institution_name, patient_id=p.participant_id,
                             study_date=identity.study_date, study_time=identity.study_time)
    a, b = caliper_points_mm(p)
    calipers = [(body_to_pixel(geom, render.pose, *a), body_to_pixel(geom, render.pose, *b))]
    region = UltrasoundRegion.from_fan(geom.bbox, (geom.apex_col, geom.apex_row), geom.pixel_mm,
                                       profile.center_frequency_mhz)
    frames = {}
    for name, drawn in (("with", calipers), ("without", [])):
        frames[name] = np.stack([
            burn_in_annotations(
                apply_tint(frame, profile.tint), layout=profile.annotation_layout, text_lines=text,
                calipers=drawn, caliper_label=f"D1 {p.endometrial_thickness_mm:.1f} mm",
                depth_mm=profile.depth_mm, fan_bbox=geom.bbox, rng=np.random.default_rng([seed, 9]),
                pixel_size_mm=geom.pixel_mm, caliper_color=caliper_color,
            )
            for frame in render.frames
        ])
        write_ultrasound(out_dir / f"{name}.dcm", frames[name], profile=profile, identity=identity, region=region)
    caliper_pixels = np.any(frames["with"][0] != frames["without"][0], axis=-1)
    return CaliperTwins(out_dir / "with.dcm", out_dir / "without.dcm", caliper_pixels)


def _preprocessed(path: Path, cfg: PreprocessConfig) -> np.ndarray:
    return preprocess(decode_dicom(path), cfg)[0]


def caliper_footprint(twins: CaliperTwins, cfg: PreprocessConfig, decoded: DecodedImage | None = None) -> np.ndarray:
    """The drawn caliper pixels carried through ``cfg``'s crop and resize: float32 ``[S, S]`` in [0, 1].

    ``decoded``: the with-calipers twin already decoded (read from its file otherwise).
    """
    decoded = decode_dicom(twins.with_calipers) if decoded is None else decoded
    drawn = replace(decoded, frames=twins.caliper_pixels[None].astype(np.float32), color_deviation=None)
    return preprocess(drawn, replace(cfg, remove_annotations=False, mask_fan=False))[0]


def _with_annotations_removed(decoded: DecodedImage, mask: np.ndarray) -> DecodedImage:
    """``decoded`` cropped to its region and in-painted under ``mask`` (bool ``[h, w]``, region
    coordinates): what the pipeline does before the fan mask, with a given annotation mask."""
    x0, y0, x1, y1 = decoded.region
    frames = np.stack([inpaint_background(frame[y0:y1 + 1, x0:x1 + 1], mask) for frame in decoded.frames])
    return replace(decoded, frames=frames, color_deviation=None, region=None)


def _annotation_mask(decoded: DecodedImage) -> np.ndarray:
    x0, y0, x1, y1 = decoded.region
    deviation = None if decoded.color_deviation is None else decoded.color_deviation[0][y0:y1 + 1, x0:x1 + 1]
    return detect_annotations(decoded.frames[0][y0:y1 + 1, x0:x1 + 1], deviation)


def surviving_caliper_contrast(twins: CaliperTwins, cfg: PreprocessConfig) -> float:
    """Share of the calipers' contrast left after preprocessing: 0 = removed, 1 = untouched.

    With removal off, the twins' preprocessed frames differ by the calipers' contrast
    ``d0 = P0(with) - P0(without)``. With removal on, both twins are in-painted under the same
    mask (what the detector finds on either) and preprocessed; they then differ, by ``d``, only
    where a caliper pixel was missed, since the in-painting reads identical tissue in both.
    Over the calipers' footprint (the drawn pixels through the same crop and resize,
    :func:`caliper_footprint`) the share is ``sum(sign(d0) * d) / sum(|d0|)``. In-painting error
    (tissue against its local mean) is the same in both twins and so not counted as caliper;
    compression ringing of a lossy file away from the strokes is outside the footprint.
    """
    untouched = replace(cfg, remove_annotations=False)
    with_calipers, without_calipers = decode_dicom(twins.with_calipers), decode_dicom(twins.without_calipers)
    if with_calipers.region is None:
        raise ValueError(f"{twins.with_calipers}: no ultrasound region to crop to")
    d0 = preprocess(with_calipers, untouched)[0] - preprocess(without_calipers, untouched)[0]
    mask = _annotation_mask(with_calipers) | _annotation_mask(without_calipers)
    if not cfg.remove_annotations:
        mask[:] = False
    d = (preprocess(_with_annotations_removed(with_calipers, mask), untouched)[0]
         - preprocess(_with_annotations_removed(without_calipers, mask), untouched)[0])
    footprint = (caliper_footprint(twins, cfg, with_calipers) > 0.05) & (np.abs(d0) > 1.0 / 255.0)
    if not footprint.any():
        raise ValueError("the twins do not differ after preprocessing: no caliper in the field of view")
    return float(np.sum(np.sign(d0[footprint]) * d[footprint]) / np.sum(np.abs(d0[footprint])))


def false_removal_fraction(path: Path, cfg: PreprocessConfig) -> float:
    """Share of the fan's pixels that annotation removal changes (by > 1 gray level) in ``path``."""
    removed = _preprocessed(path, cfg)
    kept = _preprocessed(path, replace(cfg, remove_annotations=False))
    fan = kept > 0
    if not fan.any():
        raise ValueError(f"{path}: empty fan after preprocessing")
    return float(np.mean(np.abs(removed - kept)[fan] > 1.0 / 255.0))


def sweep(out_dir: Path, seeds: list[int], cfg: PreprocessConfig,
          profiles: dict[str, ScannerProfile] | None = None, log=print) -> list[dict]:
    """Surviving contrast and false removal for every profile x photometric x caliper colour x seed.

    Returns one row per case: ``profile``, ``photometric``, ``compression``, ``color``, ``seed``,
    ``surviving`` (share, 0-1) and ``false_removal`` (share of fan pixels, 0-1; per profile,
    photometric and seed, the same for both colours).
    """
    from simulations.cohort.annotations import CALIPER_GREEN, CALIPER_YELLOW
    from simulations.cohort.scanners import SCANNER_PROFILES

    rows = []
    for name, profile in (profiles or SCANNER_PROFILES).items():
        for photometric, variant in photometric_variants(profile).items():
            for seed in seeds:
                case = out_dir / f"{name}_{photometric.replace(' ', '_')}_{seed}"
                false_removal = None
                for color_name, rgb in (("yellow", CALIPER_YELLOW), ("green", CALIPER_GREEN)):
                    twins = write_caliper_twins(case / color_name, variant, seed=seed, caliper_color=rgb)
                    if false_removal is None:
                        false_removal = false_removal_fraction(twins.without_calipers, replace(cfg, output_size=None))
                    row = {"profile": name, "photometric": photometric, "compression": variant.compression,
                           "color": color_name, "seed": seed,
                           "surviving": surviving_caliper_contrast(twins, cfg), "false_removal": false_removal}
                    rows.append(row)
                    log(f"{name:18s} {photometric:14s} {variant.compression:13s} {color_name:6s} seed {seed}: "
                        f"surviving {row['surviving']:+.3f}, false removal {100 * false_removal:.3f} %")
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.cohort.caliper_twins``: the caliper-removal sweep as a table."""
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(
        prog="python -m simulations.cohort.caliper_twins",
        description="How much of burned-in calipers survives the training preprocessing, and how much "
                    "tissue the removal changes, on caliper twins of every scanner profile x photometric x "
                    "colour (docs/shortcut_audit.md).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="participants (default: 0 1 2)")
    parser.add_argument("--output-size", type=int, default=256, help="preprocessing output side, px (default: 256)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="caliper-twins-") as tmp:
        rows = sweep(Path(tmp), args.seeds, PreprocessConfig(output_size=args.output_size))
    print("\n| profile | photometric | compression | surviving yellow (max over seeds) | surviving green | "
          "false removal (max) |\n|---|---|---|---|---|---|")
    for key in dict.fromkeys((r["profile"], r["photometric"], r["compression"]) for r in rows):
        case = [r for r in rows if (r["profile"], r["photometric"], r["compression"]) == key]
        worst = {c: max(r["surviving"] for r in case if r["color"] == c) for c in ("yellow", "green")}
        print(f"| {' | '.join(key)} | {worst['yellow']:+.3f} | {worst['green']:+.3f} | "
              f"{100 * max(r['false_removal'] for r in case):.3f} % |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
