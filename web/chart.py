"""A small server-rendered SVG bar chart: no JavaScript, no library, readable on a phone."""

from __future__ import annotations

from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 600, 180, 30, 22, 10


def bar_chart(series: list[tuple[date, int]], *, title: str) -> Markup:
    """One bar per day; hovering (or long-pressing) a bar shows its date and count."""
    if not series:
        return Markup("")
    peak = max(count for _day, count in series) or 1
    slot = (WIDTH - PAD_LEFT) / len(series)
    plot_height = HEIGHT - PAD_BOTTOM - PAD_TOP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet"><title>{escape(title)}</title>',
        f'<text x="2" y="{PAD_TOP + 8}" class="axis">{peak}</text>',
        f'<text x="2" y="{HEIGHT - PAD_BOTTOM}" class="axis">0</text>',
        f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - PAD_BOTTOM}" class="baseline"/>',
    ]
    for index, (day, count) in enumerate(series):
        height = plot_height * count / peak
        x = PAD_LEFT + index * slot + slot * 0.15
        y = HEIGHT - PAD_BOTTOM - height
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}" class="bar">'
                     f'<title>{day.isoformat()}: {count} order(s)</title></rect>')
        if index % 5 == 0 or index == len(series) - 1:
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" class="axis">{day.strftime("%d %b")}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
