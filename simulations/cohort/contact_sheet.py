"""Contact sheets: one PNG per center showing its ultrasound and MRI, both classes, as stored.

Images are read back through the platform's own DICOM layer (:func:`client.data.decode_dicom`),
so a sheet shows exactly what a hospital's files decode to. Run it on any cohort::

    python -m simulations.cohort.contact_sheet COHORT_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from client.data.decode import decode_dicom
from client.data.labels import LabelRow, read_label_file

__all__ = ["center_contact_sheet", "write_contact_sheets"]

TILE = 200  # tile edge, pixels


def _tile(path: Path, caption: str) -> Image.Image:
    frame = decode_dicom(path).frames[0]
    img = Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8))
    img.thumbnail((TILE, TILE - 14))
    tile = Image.new("L", (TILE, TILE), 40)
    tile.paste(img, ((TILE - img.width) // 2, 14 + (TILE - 14 - img.height) // 2))
    ImageDraw.Draw(tile).text((3, 1), caption, fill=255)
    return tile


def _pick(rows: list[LabelRow], modality: str, label: int, n: int) -> list[LabelRow]:
    chosen, seen = [], set()
    for row in rows:
        if row.modality == modality and row.label == label and row.patient_id not in seen:
            chosen.append(row)
            seen.add(row.patient_id)
        if len(chosen) == n:
            break
    return chosen


def center_contact_sheet(center_dir: str | Path, *, per_class: int = 4) -> Image.Image:
    """A grid with one row per (modality, label): up to ``per_class`` patients each.

    Captions give the label, invasion class, depth ratio and endometrial thickness (mm).
    """
    center_dir = Path(center_dir)
    rows = read_label_file(center_dir / "manifest.csv")
    lines = []
    for modality in ("US", "MR"):
        for label in (0, 1):
            picked = _pick(rows, modality, label, per_class)
            if not picked:
                continue
            tiles = []
            for r in picked:
                extra = r.hard_negative or (f"d={r.depth_ratio:.2f}" if r.label else "")
                caption = f"{modality} y={r.label} {r.invasion} {extra} ET{r.endometrial_thickness_mm:.0f}"
                tiles.append(_tile(center_dir / r.file, caption))
            lines.append(tiles)
    width = TILE * max((len(t) for t in lines), default=1)
    sheet = Image.new("L", (width, 22 + TILE * max(len(lines), 1)), 0)
    ImageDraw.Draw(sheet).text((4, 4), f"center {center_dir.name}", fill=255)
    for i, tiles in enumerate(lines):
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (j * TILE, 22 + i * TILE))
    return sheet


def write_contact_sheets(cohort_dir: str | Path, out_dir: str | Path, *, per_class: int = 4) -> list[Path]:
    """Write ``contact_sheet_<center>.png`` for every center folder of a cohort; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for center_dir in sorted(p.parent for p in Path(cohort_dir).glob("*/manifest.csv")):
        path = out_dir / f"contact_sheet_{center_dir.name}.png"
        center_contact_sheet(center_dir, per_class=per_class).save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m simulations.cohort.contact_sheet COHORT_DIR OUT_DIR``."""
    parser = argparse.ArgumentParser(description="Write one contact-sheet PNG per center of a cohort.")
    parser.add_argument("cohort_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--per-class", type=int, default=4, help="patients per (modality, label) row")
    args = parser.parse_args(argv)
    for path in write_contact_sheets(args.cohort_dir, args.out_dir, per_class=args.per_class):
        print(path)


if __name__ == "__main__":
    main()
