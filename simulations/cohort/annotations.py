"""Display artefacts of a real ultrasound screen: colour tint maps and burned-in annotations.

Scanners export what the sonographer saw: the fan in a gray / sepia / blue display map, text in
the margins (institution, patient ID, date, probe, frequency, depth, gain / dynamic range), an
orientation marker, a depth scale and a TGC curve along the fan, and measurement calipers inside
the fan (``shared/reference/realism.md`` sections 2.4 item 10 and 4.6). Everything is drawn in
a few fixed colours (:data:`ANNOTATION_COLORS`) so a palette-colour writer can represent them.

Text uses Pillow's built-in bitmap font (offline, no anti-aliasing, deterministic); glyph masks
are cached per string, and all drawing is numpy indexing, so one 640x480 frame takes about a
millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from simulations.cohort.scanners import ScannerProfile

__all__ = [
    "TINTS",
    "LAYOUTS",
    "TEXT_RGB",
    "GRAPHICS_RGB",
    "CALIPER_YELLOW",
    "CALIPER_GREEN",
    "ANNOTATION_COLORS",
    "PALETTE_GRAY_LEVELS",
    "tint_lut",
    "apply_tint",
    "display_palette",
    "screen_text_lines",
    "burn_in_annotations",
]

TINTS = ("gray", "sepia", "blue")
LAYOUTS = ("top_left", "top_bar", "side")

TEXT_RGB = (230, 230, 230)  # burned-in text, depth-scale labels
GRAPHICS_RGB = (150, 150, 150)  # depth-scale ticks, TGC curve, orientation marker
CALIPER_YELLOW = (255, 255, 0)
CALIPER_GREEN = (0, 255, 64)
ANNOTATION_COLORS = (TEXT_RGB, GRAPHICS_RGB, CALIPER_YELLOW, CALIPER_GREEN)
PALETTE_GRAY_LEVELS = 256 - len(ANNOTATION_COLORS)  # tint levels an 8-bit palette keeps

# Per-channel exponents of the display maps: channel = 255 * (gray / 255) ** exponent.
_TINT_EXPONENTS = {"gray": (1.0, 1.0, 1.0), "sepia": (0.8, 1.0, 1.45), "blue": (1.35, 1.1, 0.75)}
_LINE_HEIGHT_PX = 12  # the bitmap font is 11 px tall
_GAP_PX = 3  # between text columns, and between items and the fan


@lru_cache(maxsize=8)
def tint_lut(tint: str) -> np.ndarray:
    """Display map of ``tint``: uint8 [256, 3], row g = RGB shown for gray level g."""
    if tint not in _TINT_EXPONENTS:
        raise ValueError(f"tint {tint!r} not in {TINTS}")
    level = np.linspace(0.0, 1.0, 256)[:, None]
    lut = np.rint(255.0 * level ** np.asarray(_TINT_EXPONENTS[tint])).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def apply_tint(gray: np.ndarray, tint: str) -> np.ndarray:
    """Map a gray B-mode image uint8 [H, W] to its display colours uint8 [H, W, 3].

    Every map is monotone in luminance (0.299 R + 0.587 G + 0.114 B); "gray" is the identity.
    """
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"gray must be uint8 [H, W], got {gray.dtype} {gray.shape}")
    return tint_lut(tint).take(gray, axis=0)  # 3-4x faster than tint_lut(tint)[gray]


@lru_cache(maxsize=8)
def display_palette(tint: str) -> np.ndarray:
    """8-bit palette of a PALETTE COLOR scanner: uint8 [256, 3].

    Entries 0..PALETTE_GRAY_LEVELS-1 are the tint map sampled at evenly spaced gray levels
    (0 and 255 included), the last entries are :data:`ANNOTATION_COLORS` in order.
    """
    levels = np.rint(np.linspace(0, 255, PALETTE_GRAY_LEVELS)).astype(np.intp)
    palette = np.concatenate([tint_lut(tint)[levels], np.asarray(ANNOTATION_COLORS, np.uint8)])
    palette.setflags(write=False)
    return palette


def screen_text_lines(
    profile: ScannerProfile, *, institution: str, patient_id: str, study_date: str, study_time: str
) -> list[str]:
    """Text a scanner shows for one exam (dates as DICOM DA "YYYYMMDD" and TM "HHMMSS")."""
    gain = int(round(50 + 2 * profile.gain_db))
    frame_rate = 1000.0 / profile.frame_time_ms if profile.cine_frames > 1 else 25.0
    return [
        institution[:28],
        f"ID: {patient_id}",
        f"{study_date[:4]}/{study_date[4:6]}/{study_date[6:8]} {study_time[:2]}:{study_time[2:4]}",
        f"{profile.probe}  GYN/TV",
        f"{profile.center_frequency_mhz:.1f}MHz",
        f"D {profile.depth_mm / 10:.1f}cm",
        f"G{gain} DR{profile.dynamic_range_db:.0f}",
        f"FR {frame_rate:.0f}Hz",
    ]


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1: bitmap font
    return loader() if loader is not None else ImageFont.load_default()


@lru_cache(maxsize=4096)
def _text_mask(text: str) -> np.ndarray:
    """Binary glyph mask of ``text`` in the bitmap font: bool [h, w] (read-only, cached)."""
    _, _, width, height = _font().getbbox(text)
    image = Image.new("L", (max(width, 1), max(height, 1)), 0)
    ImageDraw.Draw(image).text((0, 0), text, font=_font(), fill=255)
    mask = np.asarray(image) > 127
    mask.setflags(write=False)
    return mask


def _disc_mask(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx * xx + yy * yy <= radius * radius + radius


class _Screen:
    """An RGB frame with a fan bounding box that margin items must avoid."""

    def __init__(self, rgb: np.ndarray, fan_bbox: Sequence[int]) -> None:
        self.rgb = rgb
        self.height, self.width = rgb.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in fan_bbox)
        self.fan = (max(x0, 0), max(y0, 0), min(x1, self.width - 1), min(y1, self.height - 1))
        self.occupied: list[tuple[int, int, int, int]] = []

    def margin_free(self, x: int, y: int, w: int, h: int) -> bool:
        """True if the box [x, x+w) x [y, y+h) is on screen, outside the fan and unused."""
        if x < 0 or y < 0 or x + w > self.width or y + h > self.height:
            return False
        fx0, fy0, fx1, fy1 = self.fan
        if x <= fx1 and x + w > fx0 and y <= fy1 and y + h > fy0:
            return False
        return all(
            x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y
            for ox, oy, ow, oh in self.occupied
        )

    def paste(self, mask: np.ndarray, x: int, y: int, color: tuple[int, int, int]) -> None:
        h, w = mask.shape
        self.rgb[y : y + h, x : x + w][mask] = color
        self.occupied.append((x - 1, y - 1, w + 2, h + 2))

    def place(self, mask: np.ndarray, candidates: Sequence[tuple[int, int]], color) -> bool:
        """Paste ``mask`` at the first free candidate top-left corner; False if none is free."""
        h, w = mask.shape
        for x, y in candidates:
            if self.margin_free(x, y, w, h):
                self.paste(mask, x, y, color)
                return True
        return False

    def margins(self) -> dict[str, tuple[int, int, int, int]]:
        """Margin rectangles (x0, y0, x1, y1 exclusive) around the fan, by side."""
        fx0, fy0, fx1, fy1 = self.fan
        g, W, H = _GAP_PX, self.width, self.height
        return {
            "top": (g, g, W - g, fy0 - g),
            "left": (g, g, fx0 - g, H - g),
            "right": (fx1 + 1 + g, g, W - g, H - g),
            "bottom": (g, fy1 + 1 + g, W - g, H - g),
        }


def _flow_lines(screen: _Screen, lines: Sequence[str], regions: Sequence[tuple]) -> None:
    """Stack lines top to bottom inside the regions, in a new column when one is full.

    Lines keep their order; a line too wide for the current column moves on to the next
    region, and lines that fit in no region are left out.
    """
    pending = [line for line in lines if line.strip()]
    for rx0, ry0, rx1, ry1 in regions:
        x, y, column_width = rx0, ry0, 0
        while pending:
            mask = _text_mask(pending[0])
            h, w = mask.shape
            if x + w > rx1:
                break
            if y + h > ry1:
                if column_width == 0:
                    break
                x, y, column_width = x + column_width + 2 * _GAP_PX, ry0, 0
                continue
            if screen.margin_free(x, y, w, h):
                screen.paste(mask, x, y, TEXT_RGB)
                column_width = max(column_width, w)
                pending.pop(0)
            y += _LINE_HEIGHT_PX


def _bar_rows(lines: Sequence[str], width_px: int) -> list[str]:
    """Join lines into as few rows as fit ``width_px`` (a top status bar)."""
    rows: list[str] = []
    for line in (line for line in lines if line.strip()):
        joined = f"{rows[-1]}   {line}" if rows else line
        if rows and _text_mask(joined).shape[1] <= width_px:
            rows[-1] = joined
        else:
            rows.append(line)
    return rows


def _draw_text(screen: _Screen, layout: str, lines: Sequence[str]) -> None:
    m = screen.margins()
    if layout == "top_bar":
        top = m["top"]
        _flow_lines(screen, _bar_rows(lines, top[2] - top[0]), [top, m["bottom"]])
    elif layout == "top_left":
        _flow_lines(screen, lines, [m["left"], m["top"], m["bottom"]])
    elif layout == "side":
        _flow_lines(screen, lines, [m["left"], m["right"], m["top"], m["bottom"]])
    else:
        raise ValueError(f"layout {layout!r} not in {LAYOUTS}")


def _draw_depth_scale(screen: _Screen, depth_mm: float, px_per_mm: float) -> None:
    """Tick marks every cm (longer, labelled every 5 cm) right of the fan, from its top."""
    fx0, fy0, fx1, fy1 = screen.fan
    n_cm = int(depth_mm // 10)
    ticks = [(k, fy0 + int(round(k * 10 * px_per_mm))) for k in range(n_cm + 1)]
    ticks = [(k, y) for k, y in ticks if y <= fy1]
    for k, y in ticks:
        length = 6 if k % 5 == 0 else 3
        x = fx1 + 1 + _GAP_PX
        if screen.margin_free(x, y, length, 1):
            screen.paste(np.ones((1, length), bool), x, y, GRAPHICS_RGB)
        if k % 5 == 0 and k > 0:
            label = _text_mask(str(k))
            screen.place(label, [(x + length + 2, y - label.shape[0] // 2)], TEXT_RGB)


def _tgc_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A TGC curve: gain offset vs depth through five slider positions, bool [height, width]."""
    nodes = rng.uniform(0.25, 0.95, size=5) * (width - 1)
    depth = np.arange(height)
    x = np.rint(np.interp(depth, np.linspace(0, height - 1, 5), nodes)).astype(np.intp)
    mask = np.zeros((height, width), bool)
    mask[depth, x] = True
    mask[:, 0] = depth % 4 == 0  # dotted baseline
    return mask


def _margin_candidates(screen: _Screen, sides: Sequence[str], w: int, h: int, step: int = 4):
    for side in sides:
        x0, y0, x1, y1 = screen.margins()[side]
        for y in range(y0, y1 - h + 1, step):
            for x in range(x0, x1 - w + 1, step):
                yield x, y


def _caliper_mark(style: str, arm: int = 4) -> np.ndarray:
    size = 2 * arm + 1
    mark = np.zeros((size, size), bool)
    if style == "+":
        mark[arm, :] = mark[:, arm] = True
    else:
        mark[np.arange(size), np.arange(size)] = mark[np.arange(size), size - 1 - np.arange(size)] = True
    return mark


def _paint_points_inside_fan(screen: _Screen, xs: np.ndarray, ys: np.ndarray, color) -> None:
    """Colour the pixels (xs, ys), dropping every one outside the fan bbox."""
    fx0, fy0, fx1, fy1 = screen.fan
    keep = (xs >= fx0) & (xs <= fx1) & (ys >= fy0) & (ys <= fy1)
    screen.rgb[ys[keep], xs[keep]] = color


def _paint_inside_fan(screen: _Screen, mask: np.ndarray, x: int, y: int, color) -> None:
    """Paste ``mask`` with top-left (x, y), dropping every pixel outside the fan bbox."""
    ys, xs = np.nonzero(mask)
    _paint_points_inside_fan(screen, xs + x, ys + y, color)


def _draw_calipers(screen: _Screen, calipers, label: str | None, rng: np.random.Generator,
                   color: tuple[int, int, int] | None = None) -> None:
    """'+' or 'x' marks at each end, a dotted line between them, and the measurement label.

    ``color`` None draws yellow or green at random; the draw is made either way, so the style
    of a frame does not depend on whether its colour was forced.
    """
    style = "+" if rng.random() < 0.5 else "x"
    random_color = CALIPER_YELLOW if rng.random() < 0.5 else CALIPER_GREEN
    color = random_color if color is None else color
    mark = _caliper_mark(style)
    arm = mark.shape[0] // 2
    for p, q in calipers:
        (px, py), (qx, qy) = np.asarray(p, float), np.asarray(q, float)
        length = float(np.hypot(qx - px, qy - py))
        t = np.arange(0.0, length, 1.0) / max(length, 1e-9)
        dots = (np.arange(t.size) % 4 < 2) & (t * length > arm + 2) & ((1 - t) * length > arm + 2)
        xs = np.rint(px + t[dots] * (qx - px)).astype(np.intp)
        ys = np.rint(py + t[dots] * (qy - py)).astype(np.intp)
        _paint_points_inside_fan(screen, xs, ys, color)
        for cx, cy in ((px, py), (qx, qy)):
            _paint_inside_fan(screen, mark, int(round(cx)) - arm, int(round(cy)) - arm, color)
    if label and calipers:
        _draw_caliper_label(screen, calipers[0], label, color)


def _draw_caliper_label(screen: _Screen, caliper, label: str, color) -> None:
    text = _text_mask(label)
    h, w = text.shape
    fx0, fy0, fx1, fy1 = screen.fan
    (px, py), (qx, qy) = caliper
    x = int(round(max(px, qx))) + 8
    y = int(round(max(py, qy))) + 6
    x, y = min(max(x, fx0), fx1 + 1 - w), min(max(y, fy0), fy1 + 1 - h)
    if x >= fx0 and y >= fy0:  # the label fits inside the fan bbox
        _paint_inside_fan(screen, text, x, y, color)


def burn_in_annotations(
    rgb: np.ndarray,
    *,
    layout: str,
    text_lines: Sequence[str],
    calipers: Sequence[tuple[tuple[float, float], tuple[float, float]]],
    caliper_label: str | None,
    depth_mm: float,
    fan_bbox: tuple[int, int, int, int],
    rng: np.random.Generator,
    pixel_size_mm: float | None = None,
    caliper_color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Burn a scanner's screen annotations into a display frame; returns a new uint8 [H, W, 3].

    ``fan_bbox`` = (x0, y0, x1, y1), inclusive pixel bounds of the fan. Text (``text_lines``,
    placed per ``layout``: "top_left" stacks them in the left margin, then the top strip;
    "top_bar" joins them into rows across the top; "side" stacks them in a side panel, left
    or right), the orientation marker, the depth scale (ticks every cm right of the fan, from
    y0 over ``depth_mm``; ``pixel_size_mm`` sets the tick spacing, default (y1 - y0 + 1) /
    depth_mm px per mm) and the TGC curve all go in the margins outside the bbox, so leave
    margins of about 4 text lines (12 px each) or a ~130 px side panel; what does not fit is
    left out. ``calipers`` are pairs of (x, y) pixel points
    inside the fan; marks, dotted lines and ``caliper_label`` (e.g. "D1 12.3 mm", next to the
    first pair) are clipped to the bbox. ``rng`` picks the caliper style/colour and TGC shape;
    ``caliper_color`` (RGB) forces the colour (tests sweep every colour a screen uses).
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} not in {LAYOUTS}")
    screen = _Screen(rgb.copy(), fan_bbox)
    fx0, fy0, fx1, fy1 = screen.fan
    px_per_mm = 1.0 / pixel_size_mm if pixel_size_mm else (fy1 - fy0 + 1) / max(depth_mm, 1e-6)
    _draw_depth_scale(screen, depth_mm, px_per_mm)
    marker = _disc_mask(3)
    near_fan_top = [(fx0 - 12 - dx, fy0 + dy) for dy in range(0, 40, 4) for dx in range(0, 24, 4)]
    above_fan = [(fx0 + dx, fy0 - 12 - dy) for dy in range(0, 24, 4) for dx in range(0, 60, 4)]
    _draw_text(screen, layout, text_lines)
    screen.place(marker, near_fan_top + above_fan, GRAPHICS_RGB)
    tgc = _tgc_mask(min(64, max(16, (fy1 - fy0) // 4)), 16, rng)
    tgc_sides = ("right", "left", "bottom", "top")
    screen.place(tgc, _margin_candidates(screen, tgc_sides, *tgc.shape[::-1]), GRAPHICS_RGB)
    if calipers:
        _draw_calipers(screen, calipers, caliper_label, rng, caliper_color)
    return screen.rgb
