"""Calipers found by their shape, where compression has blurred their one exact level.

A caliper is a pair of "+" or "x" crosses joined by a dotted line, with its measurement label
("D1 12.3 mm") on a line of glyphs nearby, all in one screen colour. :mod:`client.data.annotations`
finds such graphics by that exact colour or gray level; a lossy file (JPEG) spreads a stroke's
level over about +-10 gray levels, and a mid-gray stroke then looks like the 1-pixel speckle
ridges around it, pixel by pixel. Geometry still tells them apart:

1. **Marks**: a matched filter for a cross. Every arm pixel (past the first) stands out by
   :data:`MARK_CONTRAST` from both of its flanks 2 px away, across the arm, on at least
   :data:`MARK_SHARE` of them, and the cross's pixels share one level (their 10-90 % spread at most
   :data:`MARK_SPREAD_LEVELS`). Speckle does not draw four straight arms of one level.
2. **The level and tolerance are the marks' own**: the median and three standard deviations of
   their pixels (within :data:`TOLERANCE_LEVELS`); exact on a lossless file, the compression's
   own spread on a lossy one. No header is needed to know how lossy the file was.
3. **Dotted line**: pixels at that level within 1 px of the segment between two such marks. A
   mark on tissue as bright as itself fails step 1; when one mark of a caliper is found alone,
   its partner is the cross of its style and size at its level that stands out (either way) on
   :data:`PARTNER_SHARE` of its arm pixels and is joined to it by the dotted line
   (:func:`_find_partner`).
4. **Label**: pieces at that level (connected, standing out from their background, brighter or
   darker: a glyph over brighter tissue is the darker; with no neighbour beyond the level on that
   side: a plateau, not the flank of a speckle) that are glyph-sized and sit on one text line: at
   least :data:`LABEL_MIN_GLYPHS` of them, three with the same top and bottom (within 2-3 px) and
   the rest with the line's top or its bottom (a glyph broken at one end), gaps under
   :data:`LABEL_GAP_HEIGHTS` glyph heights, within reach of the marks. When a caliper with both
   marks has no such line, pieces one row apart are joined and the search is repeated. In the
   line's box, what is at the level and differs from its background by a third of
   :data:`MARK_CONTRAST` is the label.

Nothing is searched for without a mark, so a frame without calipers loses nothing here. Images
are float32 ``[H, W]`` in [0, 1]; levels are 8-bit gray levels (0-255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CaliperMark", "detect_caliper_marks", "find_caliper_marks"]

MARK_ARMS = (4, 8)  # arm lengths tried, px: crosses 9 to 17 px wide (a 7-px cross is a speckle grain)
MARK_CONTRAST = 0.06  # an arm pixel above (or below) both of its flanks, ~15 gray levels
MARK_SHARE = 0.85  # of the arm pixels; one or two may sit on tissue of their own brightness
MARK_SPREAD_LEVELS = 28.0  # 10-90 % spread of a cross's pixels: JPEG quality 85 spreads a stroke ~+-10
DARK_FLOOR_LEVELS = 0.1 * 255.0  # a dark mark must be above the black of fluid and the fan's outside
TOLERANCE_LEVELS = (2.0, 16.0)  # bounds of the band around the marks' level
LABEL_MIN_GLYPHS = 4  # tall pieces on one text line: "D1 8.4 mm" has six or seven
LABEL_GAP_HEIGHTS = 3.0  # gap between neighbouring glyphs, in glyph heights (a space, a broken "1")
LABEL_REACH_ARMS = 8  # the label's line must come this close to a mark, in arm lengths (twice as far, speckle formed lines)
PARTNER_REACH_ARMS = 30  # a lone mark's partner is looked for this far, in arm lengths (a caliper's length)
PARTNER_SHARE = 0.5  # of its arm pixels stand out (either way) from their flanks by half MARK_CONTRAST, and are at the level
PARTNER_LINE_SHARE = 0.3  # of the points between the two marks lie on the dotted line (it is half dots)
_MIN_GLYPH_HEIGHT = 4  # px; shorter pieces ('.', '-', fragments) join a line but cannot found one


@dataclass(frozen=True)
class CaliperMark:
    """One cross: centre ``(row, col)``, ``style`` "+" or "x", ``arm`` length in px, ``level``
    (median 8-bit gray level of its pixels), ``spread`` (their 5-95 % spread, levels) and
    ``polarity`` (+1 brighter than its surroundings, -1 darker)."""

    row: int
    col: int
    style: str
    arm: int
    level: float
    spread: float
    polarity: int


def _arm_offsets(style: str, arm: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Four arms of a cross, each ``(dy, dx)`` int arrays of length ``arm`` from the centre out."""
    k = np.arange(1, arm + 1)
    zero = np.zeros_like(k)
    if style == "+":
        return [(zero, k), (zero, -k), (k, zero), (-k, zero)]
    return [(k, k), (-k, -k), (k, -k), (-k, k)]


def _across(style: str) -> list[tuple[int, int]]:
    """Unit step across each arm of :func:`_arm_offsets` (towards its flanks)."""
    return [(1, 0), (1, 0), (0, 1), (0, 1)] if style == "+" else [(0, 1)] * 4


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """bool ``[H, W]``: ``out[y, x] = mask[y + dy, x + dx]``, False where that is outside."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    out[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)] = \
        mask[max(dy, 0):height - max(-dy, 0), max(dx, 0):width - max(-dx, 0)]
    return out


def _candidate_centres(strong: np.ndarray, arms: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """bool ``[H, W]``: strong pixels with at least 3 of the 4 arm pixels strong at 1 px and at 2 px.

    A cheap first cut (a cross's centre passes, most speckle does not) before the full test.
    """
    keep = strong.copy()
    for k in (0, 1):
        count = np.zeros(strong.shape, dtype=np.int8)
        for dy, dx in arms:
            count += _shifted(strong, int(dy[k]), int(dx[k]))
        keep &= count >= 3
    return keep


def find_caliper_marks(levels: np.ndarray, contrast: np.ndarray) -> list[CaliperMark]:
    """Crosses of one level that stand out along every arm (see the module docstring).

    Args:
        levels: float32 ``[H, W]``, the frame in 8-bit gray levels.
        contrast: float32 ``[H, W]``, ``levels`` minus the local background (same units).

    Returns:
        The marks, at most one per centre and style (the longest arm that passes).
    """
    arm_min, arm_max = MARK_ARMS
    threshold = MARK_CONTRAST * 255.0
    pad = arm_max + 2
    padded = np.pad(levels, pad, constant_values=np.nan)
    marks = []
    for style in ("+", "x"):
        arms = _arm_offsets(style, arm_max)
        rows, cols = np.nonzero(_candidate_centres(contrast >= threshold, arms)
                                | _candidate_centres(contrast <= -threshold, arms))
        if rows.size == 0:
            continue
        rows_p, cols_p = rows[None] + pad, cols[None] + pad
        values = np.stack([padded[rows_p + dy[:, None], cols_p + dx[:, None]] for dy, dx in arms])  # [4, A, N]
        flanks = [np.stack([padded[rows_p + dy[:, None] + s * ay, cols_p + dx[:, None] + s * ax]
                            for (dy, dx), (ay, ax) in zip(arms, _across(style), strict=True)]) for s in (2, -2)]
        centre = levels[rows, cols]
        best = np.zeros(rows.size, dtype=np.intp)
        polarity = np.zeros(rows.size, dtype=np.int8)
        for arm in range(arm_min, arm_max + 1):
            pixels = np.sort(np.concatenate([centre[None], values[:, :arm].reshape(-1, rows.size)]), axis=0)
            n = pixels.shape[0]
            # NaN (outside the frame) sorts last: a cross cut by the border is not a mark
            flat = (pixels[int(0.9 * n) - 1] - pixels[int(0.1 * n)] <= MARK_SPREAD_LEVELS) & ~np.isnan(pixels[-1])
            for pol, extreme in ((1, np.fmax), (-1, np.fmin)):
                rise = pol * (values[:, 1:arm] - extreme(flanks[0][:, 1:arm], flanks[1][:, 1:arm]))
                share = np.mean(rise.reshape(-1, rows.size) >= threshold, axis=0)
                ok = flat & (share >= MARK_SHARE) & (pol * contrast[rows, cols] > 0)
                if pol == -1:
                    ok &= pixels[n // 2] >= DARK_FLOOR_LEVELS
                best[ok], polarity[ok] = arm, pol
        for i in np.nonzero(best)[0]:
            arm = int(best[i])
            pixels = np.concatenate([centre[i:i + 1], values[:, :arm, i].ravel()])
            low, mid, high = np.percentile(pixels, [5, 50, 95])
            marks.append(CaliperMark(int(rows[i]), int(cols[i]), style, arm, float(mid), float(high - low),
                                     int(polarity[i])))
    return marks


def _cross_pixels(shape: tuple[int, int], mark: CaliperMark) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the mark's pixels inside ``shape``."""
    arms = _arm_offsets(mark.style, mark.arm)
    rows = np.concatenate([[mark.row]] + [mark.row + dy for dy, _ in arms])
    cols = np.concatenate([[mark.col]] + [mark.col + dx for _, dx in arms])
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return rows[inside], cols[inside]


def _segment(a: CaliperMark, b: CaliperMark) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns within 1 px (8-neighbourhood) of the segment between two centres."""
    steps = int(np.ceil(np.hypot(b.row - a.row, b.col - a.col))) + 1
    t = np.linspace(0.0, 1.0, steps)
    rows = np.rint(a.row + t * (b.row - a.row)).astype(np.intp)
    cols = np.rint(a.col + t * (b.col - a.col)).astype(np.intp)
    step = np.array([-1, 0, 1])
    return ((rows[:, None, None] + step[None, :, None]).repeat(3, axis=2).ravel(),
            (cols[:, None, None] + step[None, None, :]).repeat(3, axis=1).ravel())


def _find_partner(levels: np.ndarray, band: np.ndarray, origin: tuple[int, int], mark: CaliperMark,
                  level: float, tolerance: float) -> CaliperMark | None:
    """The other end of a lone mark's caliper, where the shape test of :func:`find_caliper_marks`
    fails because the mark lies on tissue as bright as itself: a cross of the mark's style and
    size whose pixels are at ``level`` (within ``tolerance``) and stand out, brighter or darker,
    from their flanks on :data:`PARTNER_SHARE` of its arm pixels, joined to the mark by a dotted
    line (:data:`PARTNER_LINE_SHARE` of the points between them within 1 px of ``band``). The
    best-joined such cross within :data:`PARTNER_REACH_ARMS` arm lengths; None when there is none.

    ``band``: bool, the caliper's level band over the window starting at ``origin`` (row, col).
    """
    arm, radius = mark.arm, PARTNER_REACH_ARMS * mark.arm
    y0, x0 = max(origin[0], mark.row - radius), max(origin[1], mark.col - radius)
    y1 = min(origin[0] + band.shape[0], mark.row + radius + 1)
    x1 = min(origin[1] + band.shape[1], mark.col + radius + 1)
    rows, cols = np.nonzero(np.abs(levels[y0:y1, x0:x1] - level) <= tolerance)
    rows, cols = rows + y0, cols + x0
    keep = np.hypot(rows - mark.row, cols - mark.col) >= 3 * arm  # the segment holds at least one dash
    rows, cols = rows[keep], cols[keep]
    if rows.size == 0:
        return None
    pad = arm + 2
    padded = np.pad(levels, pad, constant_values=np.nan)
    arms = _arm_offsets(mark.style, arm)
    rows_p, cols_p = rows[None] + pad, cols[None] + pad
    values = np.stack([padded[rows_p + dy[:, None], cols_p + dx[:, None]] for dy, dx in arms])  # [4, arm, N]
    flanks = [np.stack([padded[rows_p + dy[:, None] + s * ay, cols_p + dx[:, None] + s * ax]
                        for (dy, dx), (ay, ax) in zip(arms, _across(mark.style), strict=True)]) for s in (2, -2)]
    step = 0.5 * MARK_CONTRAST * 255.0
    stands = ((values - np.fmax(*flanks) >= step) | (np.fmin(*flanks) - values >= step))[:, 1:].reshape(-1, rows.size)
    at_level = (np.abs(values - level) <= tolerance).reshape(-1, rows.size)
    cross_score = stands.mean(axis=0) + at_level.mean(axis=0)
    ok = (stands.mean(axis=0) >= PARTNER_SHARE) & (at_level.mean(axis=0) >= PARTNER_SHARE)
    near_band = ndimage.binary_dilation(band, structure=np.ones((3, 3), dtype=bool))
    best, best_score = None, 0.0
    for i in np.nonzero(ok)[0]:
        length = float(np.hypot(rows[i] - mark.row, cols[i] - mark.col))
        t = np.arange(arm + 2, length - arm - 1) / length  # between the two crosses
        if t.size < 4:
            continue
        r = np.rint(mark.row + t * (rows[i] - mark.row)).astype(np.intp) - origin[0]
        c = np.rint(mark.col + t * (cols[i] - mark.col)).astype(np.intp) - origin[1]
        share = float(near_band[r, c].mean())
        if share >= PARTNER_LINE_SHARE and share + cross_score[i] > best_score:  # on the line, and the most cross-like
            best, best_score = i, share + cross_score[i]
    if best is None:
        return None
    return CaliperMark(int(rows[best]), int(cols[best]), mark.style, arm, level, tolerance, mark.polarity)


def _text_lines(band: np.ndarray, near: np.ndarray, *, join_rows: bool = False) -> np.ndarray:
    """bool ``[H, W]``: the boxes of text lines in ``band`` that touch ``near`` (see the module
    docstring); ``join_rows``: first join pieces one row apart (a second try, see the caller)."""
    if join_rows:  # a glyph broken across one row (JPEG, tissue at its level) is one piece
        band = band | ndimage.binary_closing(band, structure=np.ones((3, 1), dtype=bool))
    labels, n = ndimage.label(band, structure=np.ones((3, 3), dtype=bool))
    boxes = np.zeros(band.shape, dtype=bool)
    if n < LABEL_MIN_GLYPHS:
        return boxes
    slices = ndimage.find_objects(labels)
    top = np.array([s[0].start for s in slices])
    bottom = np.array([s[0].stop for s in slices])
    left = np.array([s[1].start for s in slices])
    right = np.array([s[1].stop for s in slices])
    height, width = bottom - top, right - left
    size = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    # glyph-sized: tall enough to be a letter or digit, not a blob or a long ridge
    glyph = (height >= _MIN_GLYPH_HEIGHT) & (height <= 4 * _MIN_GLYPH_HEIGHT + 8) & (width <= 2 * height + 4) & (size >= 4)
    found = np.nonzero(glyph)[0]
    found = found[np.argsort(left[found])]
    parent = {int(i): int(i) for i in found}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k, i in enumerate(found):  # sorted by left edge: stop at the first piece too far right
        for j in found[k + 1:]:
            if left[j] - right[i] > LABEL_GAP_HEIGHTS * max(height[i], height[j]):
                break
            if abs(bottom[i] - bottom[j]) <= 2 and abs(top[i] - top[j]) <= 3:
                parent[root(int(i))] = root(int(j))
    lines: dict[int, list[int]] = {}
    for i in found:
        lines.setdefault(root(int(i)), []).append(int(i))
    cores = [m for m in lines.values() if len(m) >= 3]
    loose = [m[0] for m in lines.values() if len(m) == 1]  # pieces on no line of their own
    for members in cores:
        # a glyph broken at one end (JPEG, tissue at its level) keeps the line's top or its bottom:
        # single pieces beside a line of three or more join it by either edge
        mid_top, mid_bottom = np.median(top[members]), np.median(bottom[members])
        for _ in range(2):
            reach = LABEL_GAP_HEIGHTS * height[members].max()
            l0, r0 = left[members].min() - reach, right[members].max() + reach
            members = members + [i for i in loose if i not in members and l0 <= right[i] and left[i] <= r0
                                 and (abs(top[i] - mid_top) <= 2 or abs(bottom[i] - mid_bottom) <= 2)]
        if len(members) >= LABEL_MIN_GLYPHS:
            _add_box(boxes, near, top[members].min(), bottom[members].max(), left[members].min(), right[members].max())
    return boxes


def _add_box(boxes: np.ndarray, near: np.ndarray, t0: int, b0: int, l0: int, r0: int) -> None:
    """A text line's box (rows ``t0:b0``, columns ``l0:r0``) widened by one glyph height each side,
    into ``boxes`` when it touches ``near``."""
    margin = b0 - t0  # one glyph height each side: a '.' or a broken glyph at the ends
    box = (slice(max(t0 - 1, 0), b0 + 1), slice(max(l0 - margin, 0), r0 + margin))
    if near[box].any():
        boxes[box] = True


def detect_caliper_marks(gray: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Mask of calipers found by shape: marks, the dotted lines between them, their labels.

    Args:
        gray: float32 ``[H, W]`` in [0, 1].
        background: float32 ``[H, W]``, the local background of ``gray`` (same units), e.g.
            :func:`client.data.annotations.local_background`.

    Returns:
        bool ``[H, W]``, dilated by one pixel (a lossy stroke's blurred edge); all False when no
        mark is found.
    """
    levels = np.asarray(gray, dtype=np.float32) * 255.0
    contrast = levels - np.asarray(background, dtype=np.float32) * 255.0
    marks = find_caliper_marks(levels, contrast)
    mask = np.zeros(levels.shape, dtype=bool)
    if not marks:
        return mask
    for mark in marks:
        mask[_cross_pixels(levels.shape, mark)] = True
    marks.sort(key=lambda m: (m.polarity, m.level))
    groups: list[list[CaliperMark]] = []
    for mark in marks:  # marks of one polarity and level (within their spread) draw one caliper
        last = groups[-1][-1] if groups else None
        if last is not None and last.polarity == mark.polarity and mark.level - last.level <= max(last.spread, mark.spread) / 2:
            groups[-1].append(mark)
        else:
            groups.append([mark])
    for group in groups:
        pixels = np.concatenate([levels[_cross_pixels(levels.shape, m)] for m in group])
        level = float(np.median(pixels))
        # three standard deviations of the marks' own pixels: the compression's spread (0 if lossless)
        tolerance = float(np.clip(3.0 * pixels.std(), *TOLERANCE_LEVELS))
        # the label must come within `reach` of a mark; its line may run on for three times as long
        reach = LABEL_REACH_ARMS * max(m.arm for m in group)
        y0, x0 = max(min(m.row for m in group) - 4 * reach, 0), max(min(m.col for m in group) - 4 * reach, 0)
        window = (slice(y0, max(m.row for m in group) + 4 * reach + 1), slice(x0, max(m.col for m in group) + 4 * reach + 1))
        local, local_contrast = levels[window], contrast[window]
        # at the level and standing out, brighter or darker than what is around (a stroke over
        # brighter tissue is the darker), with no neighbour beyond the level on the side it stands
        # out from (not the flank of a brighter or darker speckle)
        threshold = MARK_CONTRAST * 255.0
        band = (np.abs(local - level) <= tolerance) & (
            ((local_contrast >= threshold) & (ndimage.maximum_filter(local, size=3) - level <= 1.5 * tolerance))
            | ((local_contrast <= -threshold) & (level - ndimage.minimum_filter(local, size=3) <= 1.5 * tolerance)))
        if len(group) == 1 and (partner := _find_partner(levels, band, (y0, x0), group[0], level, tolerance)) is not None:
            group = [*group, partner]
            mask[_cross_pixels(levels.shape, partner)] = True
        found = np.zeros(band.shape, dtype=bool)
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                rows, cols = _segment(a, b)
                rows, cols = rows - y0, cols - x0
                inside = (rows >= 0) & (rows < band.shape[0]) & (cols >= 0) & (cols < band.shape[1])
                found[rows[inside], cols[inside]] = True
        near = np.zeros(band.shape, dtype=bool)
        for m in group:
            near[max(m.row - reach - y0, 0):m.row + reach + 1 - y0, max(m.col - reach - x0, 0):m.col + reach + 1 - x0] = True
        # inside a label's box every pixel at the level that differs a little from its background
        # goes: a glyph over tissue of nearly its own brightness stands out by less than the band asks
        lines = _text_lines(band, near)
        if not lines.any() and len(group) > 1:  # no label whole enough: try again with broken glyphs joined
            lines = _text_lines(band, near, join_rows=True)
        mask[window] |= (band & found) | (lines & (np.abs(local - level) <= tolerance) & (np.abs(local_contrast) >= threshold / 3))
    rows, cols = np.nonzero(mask)
    box = (slice(max(rows.min() - 1, 0), rows.max() + 2), slice(max(cols.min() - 1, 0), cols.max() + 2))
    mask[box] = ndimage.binary_dilation(mask[box], structure=np.ones((3, 3), dtype=bool))
    return mask
