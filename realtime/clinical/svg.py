"""Small inline-SVG charts for the self-contained HTML report (no scripts, no external resources)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

LEFT_COLOUR = "#0072B2"
"""Subject's left side (colour-blind-safe blue)."""
RIGHT_COLOUR = "#E69F00"
"""Subject's right side (colour-blind-safe orange)."""
SERIES_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _nice_max(x: float) -> float:
    if not math.isfinite(x) or x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= x:
            return float(m * exp)
    return float(10 * exp)


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
            f'font-family="DejaVu Sans, sans-serif" font-size="11">' + "".join(body) + "</svg>")


def legend_lr(x: float, y: float) -> list[str]:
    return [f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{LEFT_COLOUR}"/>',
            f'<text x="{x + 14}" y="{y}">left</text>',
            f'<rect x="{x + 50}" y="{y - 9}" width="10" height="10" fill="{RIGHT_COLOUR}"/>',
            f'<text x="{x + 64}" y="{y}">right</text>']


def bar_chart_lr(labels: Sequence[str], left: Sequence[float], right: Sequence[float], unit: str,
                 title: str, width: int = 520) -> str:
    """Horizontal paired bars: one group per label, left (blue) above right (orange)."""
    row_h, pad_l, pad_r, top = 34, 170, 100, 28
    height = top + row_h * len(labels) + 24
    vals = np.array([*left, *right], dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    vmax = _nice_max(float(np.max(np.abs(finite))) if finite.size else 1.0)
    vmin = -vmax if finite.size and float(finite.min()) < 0 else 0.0
    span = vmax - vmin
    plot_w = width - pad_l - pad_r

    def xpos(v: float) -> float:
        return pad_l + (v - vmin) / span * plot_w

    body = [f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>', *legend_lr(width - 110, 14)]
    zero = xpos(0.0)
    body.append(f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{height - 20}" stroke="#888"/>')
    for i, lab in enumerate(labels):
        y = top + i * row_h
        body.append(f'<text x="{pad_l - 6}" y="{y + 19}" text-anchor="end">{escape(lab)}</text>')
        for j, (v, colour) in enumerate(((left[i], LEFT_COLOUR), (right[i], RIGHT_COLOUR))):
            yy = y + 3 + j * 14
            if not math.isfinite(v):
                body.append(f'<text x="{zero + 4:.1f}" y="{yy + 10}" fill="#888">n/a</text>')
                continue
            x0, x1 = sorted((zero, xpos(v)))
            body.append(f'<rect x="{x0:.1f}" y="{yy}" width="{max(x1 - x0, 0.5):.1f}" height="12" '
                        f'fill="{colour}"/>')
            body.append(f'<text x="{max(x1, zero) + 4:.1f}" y="{yy + 10}">{_fmt(v)} {escape(unit)}</text>')
    body.append(f'<text x="{pad_l}" y="{height - 6}" fill="#555">{_fmt(vmin)}</text>')
    body.append(f'<text x="{pad_l + plot_w}" y="{height - 6}" fill="#555" text-anchor="end">{_fmt(vmax)} '
                f'{escape(unit)}</text>')
    return _svg(width, height, body, title)


def time_series_lr(t: np.ndarray, left: np.ndarray, right: np.ndarray,
                   segments: Sequence[tuple[str, float, float]],
                   unit: str, title: str, width: int = 900, height: int = 170) -> str:
    """Left/right curves over time with shaded, labelled exercise segments (NaN = gaps)."""
    pad_l, pad_r, top, bottom = 48, 10, 22, 22
    plot_w, plot_h = width - pad_l - pad_r, height - top - bottom
    if t.size == 0:
        return _svg(width, 40, [f'<text x="4" y="20">{escape(title)}: no frames</text>'], title)
    t0, t1 = float(np.nanmin(t)), float(np.nanmax(t))
    t1 = t1 if t1 > t0 else t0 + 1.0
    vals = np.concatenate([left[np.isfinite(left)], right[np.isfinite(right)]])
    lo = min(0.0, float(vals.min())) if vals.size else 0.0
    hi = _nice_max(float(vals.max())) if vals.size and vals.max() > 0 else 1.0
    span = hi - lo if hi > lo else 1.0

    def xp(v: np.ndarray | float) -> np.ndarray | float:
        return pad_l + (np.asarray(v) - t0) / (t1 - t0) * plot_w

    def yp(v: np.ndarray | float) -> np.ndarray | float:
        return top + (1.0 - (np.asarray(v) - lo) / span) * plot_h

    body = [f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>', *legend_lr(width - 110, 14)]
    for k, (name, s0, s1) in enumerate(segments):
        x0, x1 = float(xp(s0)), float(xp(s1))
        shade = "#eef" if k % 2 == 0 else "#efe"
        body.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" height="{plot_h}" '
                    f'fill="{shade}">'
                    f'<title>{escape(name)}</title></rect>')
    body.append(f'<rect x="{pad_l}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    for v in (lo, (lo + hi) / 2, hi):
        y = float(yp(v))
        body.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(v)}</text>')
    body.append(f'<text x="{pad_l - 4}" y="{top - 8}" text-anchor="end" fill="#555">{escape(unit)}</text>')
    # Decimate to at most ~2 points per pixel column so the SVG stays small for long sessions.
    step = max(1, int(len(t) / (2 * plot_w)))
    for series, colour in ((left, LEFT_COLOUR), (right, RIGHT_COLOUR)):
        xs, ys = xp(t[::step]), yp(series[::step])
        ok = np.isfinite(ys)
        parts, cur = [], []
        for x, y, good in zip(np.atleast_1d(xs), np.atleast_1d(ys), ok, strict=True):
            if good:
                cur.append(f"{x:.1f},{y:.1f}")
            elif cur:
                parts.append(cur)
                cur = []
        if cur:
            parts.append(cur)
        for p in parts:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" '
                        f'points="{" ".join(p)}"/>')
    body.append(f'<text x="{pad_l}" y="{height - 6}" fill="#555">{t0:.0f} s</text>')
    body.append(f'<text x="{pad_l + plot_w}" y="{height - 6}" fill="#555" '
                f'text-anchor="end">{t1:.0f} s</text>')
    return _svg(width, height, body, title)


def progress_chart(session_labels: Sequence[str], series: Mapping[str, Sequence[float]], unit: str,
                   title: str, width: int = 640, height: int = 220) -> str:
    """One line per region over successive sessions (e.g. symmetry % per session)."""
    pad_l, pad_r, top, bottom = 48, 150, 24, 40
    plot_w, plot_h = width - pad_l - pad_r, height - top - bottom
    n = len(session_labels)
    vals = np.array([v for s in series.values() for v in s if v is not None and math.isfinite(v)])
    hi = _nice_max(float(vals.max())) if vals.size else 100.0
    lo = min(0.0, float(vals.min())) if vals.size else 0.0

    def xp(i: int) -> float:
        return pad_l + (i / max(n - 1, 1)) * plot_w

    def yp(v: float) -> float:
        return top + (1.0 - (v - lo) / (hi - lo if hi > lo else 1.0)) * plot_h

    body = [f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>',
            f'<rect x="{pad_l}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for v in (lo, (lo + hi) / 2, hi):
        body.append(f'<text x="{pad_l - 4}" y="{yp(v) + 4:.1f}" text-anchor="end" '
                    f'fill="#555">{_fmt(v)}</text>')
    body.append(f'<text x="{pad_l - 4}" y="{top - 8}" text-anchor="end" fill="#555">{escape(unit)}</text>')
    for i, lab in enumerate(session_labels):
        body.append(f'<text x="{xp(i):.1f}" y="{height - bottom + 14}" text-anchor="middle" fill="#555">'
                    f'{escape(lab[:16])}</text>')
    for k, (name, vs) in enumerate(series.items()):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        pts = [(xp(i), yp(v)) for i, v in enumerate(vs) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                        + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        ly = top + 12 + k * 15
        body.append(f'<rect x="{width - pad_r + 10}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        body.append(f'<text x="{width - pad_r + 24}" y="{ly}">{escape(name)}</text>')
    return _svg(width, height, body, title)
