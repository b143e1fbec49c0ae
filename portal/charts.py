"""Charts as inline SVG, drawn on the server: no JavaScript library, no external network, and the
page prints and exports as it looks. Three kinds cover the bureau's dashboard: a trend line with
its target, a ranked bar list, and a heat-map matrix."""

from __future__ import annotations

from html import escape

INK, MUTED, GRID, ACCENT, TARGET, BAD, GOOD = "#1f2937", "#6b7280", "#e5e7eb", "#2563eb", "#dc2626", "#dc2626", "#16a34a"
AMBER = "#d97706"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def trend(points: list[tuple[str, float | None]], *, target: float | None = None, title: str = "",
          percent: bool = True, width: int = 360, height: int = 180) -> str:
    """A line over periods; ``target`` as a dashed red line. Values are 0..1 when ``percent``."""
    left, right, top, bottom = 38, 12, 24, 28
    values = [v for _, v in points if v is not None]
    top_value = 1.0 if percent else max([*values, target or 0, 1e-9]) * 1.15
    w, h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (w * i / max(1, len(points) - 1))

    def y(v: float) -> float:
        return top + h - h * min(v, top_value) / top_value

    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        gy = top + h - h * frac
        label = _pct(top_value * frac) if percent else f"{top_value * frac:.1f}"
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="{GRID}"/>'
                     f'<text x="{left - 4}" y="{gy + 4:.1f}" text-anchor="end" font-size="10" fill="{MUTED}">'
                     f'{label}</text>')
    if target is not None:
        ty = y(target)
        parts.append(f'<line class="target" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" '
                     f'stroke="{TARGET}" stroke-dasharray="4 3"/>'
                     f'<text x="{width - right}" y="{ty - 4:.1f}" text-anchor="end" font-size="10" fill="{TARGET}">'
                     f'{_pct(target) if percent else target}</text>')
    path = " ".join(f"{'M' if i == 0 or points[i - 1][1] is None else 'L'}{x(i):.1f},{y(v):.1f}"
                    for i, (_, v) in enumerate(points) if v is not None)
    if path:
        parts.append(f'<path d="{path}" fill="none" stroke="{ACCENT}" stroke-width="2"/>')
    for i, (label, v) in enumerate(points):
        if v is not None:
            shown = _pct(v) if percent else f"{v:.2f}"
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{ACCENT}">'
                         f'<title>{escape(label)}: {shown}</title></circle>')
        if len(points) <= 8 or i % 2 == 0 or i == len(points) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" font-size="10" '
                         f'fill="{MUTED}">{escape(label[2:] if len(label) == 7 else label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(rows: list[tuple[str, str, float | None]], *, target: float | None = None, lower_is_better: bool = False,
         width: int = 520, row_height: int = 22) -> str:
    """Horizontal bars, one per (link, label, value 0..1), in the order given; the target as a rule. A bar
    that meets the target is green, one behind it red (without a target: blue). A row without a link (a page
    the reader may not open) names its label without one."""
    label_w, pad = 170, 46
    w = width - label_w - pad
    height = row_height * len(rows) + 8
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'aria-label="ranking">']
    for i, (href, label, value) in enumerate(rows):
        cy = 4 + i * row_height
        bar = 0 if value is None else w * max(0.0, min(1.0, value))
        met = None if value is None or target is None else (value <= target if lower_is_better else value >= target)
        color = MUTED if value is None else ACCENT if met is None else GOOD if met else BAD
        state = "none" if met is None else "ontarget" if met else "behind"
        opened, closed = (f'<a href="{escape(href)}" class="bar-{state}">', "</a>") if href else \
            (f'<g class="bar-{state}">', "</g>")
        parts.append(f'{opened}<text x="{label_w - 6}" y="{cy + 14}" text-anchor="end" '
                     f'font-size="12" fill="{INK}">{escape(label)}</text>{closed}'
                     f'<rect x="{label_w}" y="{cy + 3}" width="{bar:.1f}" height="{row_height - 8}" fill="{color}" '
                     f'rx="2"><title>{escape(label)}: {_pct(value)}</title></rect>'
                     f'<text x="{label_w + bar + 4:.1f}" y="{cy + 14}" font-size="11" fill="{MUTED}">'
                     f'{_pct(value)}</text>')
    if target is not None:
        tx = label_w + w * target
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="0" y2="{height}" stroke="{TARGET}" '
                     'stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return "".join(parts)


def matrix(rows: list[str], columns: list[str], cells: dict[tuple[str, str], str], *,
           row_labels: dict[str, str] | None = None, column_labels: dict[str, str] | None = None) -> str:
    """A department x element grid: ``cells[(row, column)]`` is ``authority``, ``duplicate`` or absent."""
    cell, label_w, head_h = 18, 150, 110
    width, height = label_w + cell * len(columns) + 4, head_h + cell * len(rows) + 4
    fill = {"authority": GOOD, "duplicate": BAD}
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'aria-label="duplicate collection matrix">']
    for j, col in enumerate(columns):
        cx = label_w + j * cell + cell / 2
        parts.append(f'<text transform="translate({cx + 4:.1f},{head_h - 6}) rotate(-60)" font-size="11" '
                     f'fill="{INK}">{escape((column_labels or {}).get(col, col))}</text>')
    for i, row in enumerate(rows):
        cy = head_h + i * cell
        parts.append(f'<text x="{label_w - 6}" y="{cy + 13}" text-anchor="end" font-size="11" fill="{INK}">'
                     f'{escape((row_labels or {}).get(row, row))}</text>')
        for j, col in enumerate(columns):
            kind = cells.get((row, col))
            color = fill.get(kind or "", "#f3f4f6")
            tip = f"{row} × {col}: {kind or 'not collected'}"
            parts.append(f'<rect x="{label_w + j * cell}" y="{cy}" width="{cell - 2}" height="{cell - 2}" '
                         f'fill="{color}" class="cell-{kind or "none"}"><title>{escape(tip)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def runs(points: list[tuple[str, bool, str]], *, width: int = 520, height: int = 40) -> str:
    """Quality runs as a strip of squares, oldest first: green passed, red failed; each (label, passed, tip)."""
    size = 14
    gap = max(2, min(8, (width - size * max(1, len(points))) // max(1, len(points))))
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             'aria-label="quality runs">']
    for i, (label, passed, tip) in enumerate(points):
        x = i * (size + gap)
        parts.append(f'<rect class="run-{"passed" if passed else "failed"}" x="{x}" y="4" width="{size}" '
                     f'height="{size}" rx="2" fill="{GOOD if passed else BAD}"><title>{escape(label)}: '
                     f'{escape(tip)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


KIND_COLORS = ("#dc2626", "#d97706", "#7c3aed", "#2563eb", "#0891b2", "#6b7280")


def stacked(labels: list[str], series: dict[str, list[int]], *, title: str = "", width: int = 520,
            height: int = 160) -> str:
    """Counts per day as stacked columns, one colour per series (the security alerts per day and kind),
    with a legend; a day without any count is an empty slot."""
    left, right, top, bottom = 30, 8, 10, 44
    w, h = width - left - right, height - top - bottom
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    peak = max([*totals, 1])
    slot = w / max(1, len(labels))
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line x1="{left}" x2="{width - right}" y1="{top + h}" y2="{top + h}" stroke="{GRID}"/>'
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="10" fill="{MUTED}">{peak}</text>']
    for i, label in enumerate(labels):
        base = top + h
        for j, (name, values) in enumerate(series.items()):
            if not values[i]:
                continue
            bar = h * values[i] / peak
            base -= bar
            parts.append(f'<rect class="alerts-{escape(name)}" x="{left + i * slot + 1:.1f}" y="{base:.1f}" '
                         f'width="{max(1.0, slot - 2):.1f}" height="{bar:.1f}" fill="{KIND_COLORS[j % len(KIND_COLORS)]}">'
                         f'<title>{escape(label)} {escape(name)}: {values[i]}</title></rect>')
        if i % max(1, len(labels) // 7) == 0 or i == len(labels) - 1:
            parts.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{top + h + 12}" text-anchor="middle" '
                         f'font-size="10" fill="{MUTED}">{escape(label[5:])}</text>')
    x = left
    for j, name in enumerate(series):
        parts.append(f'<rect x="{x}" y="{height - 14}" width="9" height="9" fill="{KIND_COLORS[j % len(KIND_COLORS)]}"/>'
                     f'<text x="{x + 12}" y="{height - 6}" font-size="10" fill="{INK}">{escape(name)}</text>')
        x += 14 + 6.2 * len(name)
    parts.append("</svg>")
    return "".join(parts)
