"""Charts as inline SVG, drawn on the server from the numbers: nothing loaded from another host,
nothing to run in the browser. Each chart scales to its container (viewBox) and carries a title
and a description for screen readers; the page shows the same numbers in a table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Colours with at least 3:1 contrast against white (WCAG 1.4.11 for graphics).
PALETTE = ("#4338ca", "#b45309", "#047857", "#b91c1c", "#6b21a8")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    color: str


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000,
                 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000):
        if value <= step * 4:
            return float(step * 4)
    return float(value)


def _fmt(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def bar_chart(labels: Sequence[str], series: Sequence[Series], *, title: str,
              description: str, height: int = 220) -> Markup:
    """Grouped vertical bars, one group per label, with a legend."""
    width, left, right, top, bottom = 480, 40, 6, 30, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((v for s in series for v in s.values), default=0))
    n = max(len(labels), 1)
    group = plot_w / n
    bar = max(2.0, group * 0.8 / max(len(series), 1))
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-labelledby="{_id(title)}-t {_id(title)}-d" '
             'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
             f'<title id="{_id(title)}-t">{escape(title)}</title>',
             f'<desc id="{_id(title)}-d">{escape(description)}</desc>']
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#d1d5db" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#374151">{_fmt(peak * i / 4)}</text>')
    for g, label in enumerate(labels):
        x0 = left + g * group + group * 0.1
        for k, s in enumerate(series):
            value = s.values[g] if g < len(s.values) else 0
            h = plot_h * value / peak
            parts.append(f'<rect x="{x0 + k * bar:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar - 1:.1f}" height="{h:.1f}" fill="{s.color}">'
                         f'<title>{escape(label)} · {escape(s.name)}: {_fmt(value)}</title></rect>')
        if n <= 13 or g % 2 == 0:
            parts.append(f'<text x="{left + g * group + group / 2:.1f}" y="{height - bottom + 16}" '
                         f'text-anchor="middle" font-size="11" fill="#374151">'
                         f'{escape(_short(label))}</text>')
    x = left
    for s in series:
        parts.append(f'<rect x="{x}" y="6" width="12" height="12" fill="{s.color}"/>'
                     f'<text x="{x + 16}" y="16" font-size="12" fill="#111827">'
                     f'{escape(s.name)}</text>')
        x += 26 + 6.5 * len(s.name)
    parts.append("</svg>")
    return Markup("".join(parts))


def hbar_chart(rows: Sequence[tuple[str, float, float]], *, title: str, description: str,
               names: tuple[str, str] = ("people", "machines")) -> Markup:
    """Horizontal bars, one row per label: the first value solid, the second beside it."""
    width, label_w, row_h, top = 420, 170, 26, 26
    height = top + row_h * max(len(rows), 1) + 8
    peak = max((max(a, b) for _, a, b in rows), default=0) or 1
    plot_w = width - label_w - 36
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-labelledby="{_id(title)}-t {_id(title)}-d" '
             'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">',
             f'<title id="{_id(title)}-t">{escape(title)}</title>',
             f'<desc id="{_id(title)}-d">{escape(description)}</desc>',
             f'<rect x="{label_w}" y="6" width="12" height="12" fill="{PALETTE[0]}"/>'
             f'<text x="{label_w + 16}" y="16" font-size="12" fill="#111827">{names[0]}</text>',
             f'<rect x="{label_w + 70}" y="6" width="12" height="12" fill="{PALETTE[1]}"/>'
             f'<text x="{label_w + 86}" y="16" font-size="12" fill="#111827">{names[1]}</text>']
    for i, (label, a, b) in enumerate(rows):
        y = top + i * row_h
        wa, wb = plot_w * a / peak, plot_w * b / peak
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="12" '
                     f'fill="#111827">{escape(_short(label, 26))}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{wa:.1f}" height="10" '
                     f'fill="{PALETTE[0]}"><title>{escape(label)}: {_fmt(a)} {names[0]}'
                     '</title></rect>')
        parts.append(f'<rect x="{label_w}" y="{y + 14}" width="{wb:.1f}" height="6" '
                     f'fill="{PALETTE[1]}"><title>{escape(label)}: {_fmt(b)} {names[1]}'
                     '</title></rect>')
        parts.append(f'<text x="{label_w + wa + 6:.1f}" y="{y + 13}" font-size="11" '
                     f'fill="#374151">{_fmt(a)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(text: str, limit: int = 10) -> str:
    if len(text) == 8 and text[4:6] == "-W":  # an ISO week: the year is in the title
        return text[5:]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _id(title: str) -> str:
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in title.lower())[:40]
