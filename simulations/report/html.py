"""Small HTML helpers for the report: escaping, tables, sections, a minimal markdown renderer
(for ``privacy.md`` and ``table.md``) and the page itself (inline CSS, no script, no network)."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence

__all__ = ["esc", "num", "table", "section", "figure", "note", "markdown", "page"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;color:#1d1d1f}
h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:1.6em}
h3{font-size:1.0em}table{border-collapse:collapse;margin:8px 0;font-size:0.88em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f2f2f2}img{max-width:100%}
.note{color:#555;font-size:0.9em}.warn{color:#a33}figure{margin:8px 0}figcaption{font-size:0.85em;color:#555}
pre{background:#f6f6f6;padding:8px;font-size:0.8em;overflow-x:auto;max-height:360px}
nav a{margin-right:10px;font-size:0.9em}.sim{background:#fff6d6;padding:2px 5px;border-radius:3px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: object, digits: int = 3) -> str:
    """A number for a table cell; n/a for None and NaN."""
    if value is None or isinstance(value, str):
        return "n/a" if value is None else esc(value)
    if isinstance(value, bool | int):
        return str(value)
    value = float(value)  # type: ignore[arg-type]
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, html_cells: bool = False) -> str:
    """Cells that are already HTML (start with ``<``, or all with ``html_cells``) are kept; others escaped."""
    def cell(value: object) -> str:
        text = str(value)
        return text if html_cells or text.startswith("<") else esc(text)

    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def figure(uri: str | None, caption: str, alt: str) -> str:
    """An embedded image with its caption, or a note that it is missing."""
    if uri is None:
        return note(f"{alt}: nothing to show. {caption}")
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def _inline(text: str) -> str:
    text = esc(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown(text: str) -> str:
    """Headings, bullet lists, pipe tables, bold, code and paragraphs: what the run's own
    markdown files use. Links and images are shown as text."""
    out, items, rows = [], [], []

    def flush() -> None:
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows if not re.fullmatch(r"[|\-: ]+", r.strip())]
            out.append(table(cells[0], [[_inline(c) for c in r] for r in cells[1:]], html_cells=True) if cells else "")
            rows.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            rows.append(stripped)
            continue
        if stripped.startswith(("- ", "* ")):
            items.append(stripped[2:])
            continue
        flush()
        heading = re.match(r"(#{1,4})\s+(.*)", stripped)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif stripped:
            out.append(f"<p>{_inline(stripped)}</p>")
    flush()
    return "\n".join(out)


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are ``(anchor, title, body HTML)``."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(section(a, t, b) for a, t, b in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<link rel="icon" href="data:,"><meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><h1>{esc(title)}</h1><p class="note">{esc(subtitle)}</p><nav>{nav}</nav>\n{body}\n</body></html>\n')
