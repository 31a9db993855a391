"""The clinical report: one self-contained HTML file (inline SVG charts and PNG renders) plus JSON.

Sections: summary with the affected side and its confidence statement; per-region symmetry; resting
measurements; per-exercise left/right charts (per repetition); time series with the exercise segments;
renders of the face coloured by displacement asymmetry (the renderer's heatmap mode); synkinesis
indicators; eye-closure events; and progress across sessions (``--compare``). The HTML references no
external URL, script or font.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from realtime import __version__
from realtime.camera import Intrinsics
from realtime.clinical import svg
from realtime.clinical.cheek import Progress, refine_cheek_puff
from realtime.clinical.metrics import (
    LIVE_CHEEK_SOURCE,
    METRICS,
    ClinicalAnalysis,
    MetricEvaluator,
    analyse_session,
)
from realtime.clinical.sessions import load_series
from realtime.errors import OutputError
from realtime.facemodel import MorphableModel
from realtime.results import FRONTAL_ROTATION

log = logging.getLogger(__name__)

TIME_SERIES_METRICS = ("brow_elevation_mm", "eye_closure", "commissure_excursion_mm",
                       "upper_lip_elevation_mm",
                       "lower_lip_depression_mm", "nasolabial_displacement_mm", "cheek_puff_mm")
RENDER_SIZE = (260, 300)
RENDER_DISTANCE_MM = 520.0
MIN_HEATMAP_RANGE_MM = 2.0
"""The colour scale spans at least ±2 mm so that a symmetric face does not show amplified noise."""



@dataclass
class HeatmapRender:
    exercise: str
    repetition: int
    png: bytes
    range_mm: float


def _log_progress(step: str, i: int, n: int) -> None:
    log.info("report: %s %d/%d", step, i, n)


def _frontal_camera(width: int, height: int) -> tuple[Intrinsics, np.ndarray, np.ndarray]:
    """A camera looking at the model's face from the front: model → camera rotation and translation."""
    f = 1.45 * width * RENDER_DISTANCE_MM / 260.0
    intr = Intrinsics(fx=f, fy=f, cx=width / 2.0, cy=height / 2.0 - 0.02 * height, width=width, height=height)
    rot = FRONTAL_ROTATION
    trans = np.array([0.0, 0.0, RENDER_DISTANCE_MM + 100.0])
    return intr, rot, trans


def render_heatmaps(model: MorphableModel, analysis: ClinicalAnalysis, expression: np.ndarray,
                    evaluator: MetricEvaluator, progress: Progress = _log_progress) -> list[HeatmapRender]:
    """One frontal render per exercise at its peak frame, coloured by displacement asymmetry (mm)."""
    try:
        from realtime.render import OffscreenRenderer
    except ImportError as exc:  # the renderer needs moderngl + EGL; the report is still useful without it
        log.warning("report: no face renders (%s)", exc)
        return []
    w, h = RENDER_SIZE
    intr, rot, trans = _frontal_camera(w, h)
    n_face = model.face_area_vertices
    tris = model.triangles[np.all(model.triangles < n_face, axis=1)].astype(np.int32)
    jobs = []
    for ex in analysis.exercises:
        if not ex.repetitions:
            continue
        lead = ex.metrics[0]
        best = max(ex.repetitions, key=lambda r: float(np.nansum(r.values.get(lead, (0.0, 0.0)))))
        jobs.append((ex.exercise, best.repetition, best.peak_frame))
    out: list[HeatmapRender] = []
    if not jobs:
        return out
    from PIL import Image

    try:
        renderer = OffscreenRenderer(w, h)
    except Exception as exc:  # no usable OpenGL (no EGL, old driver): the report is still useful without
        log.warning("report: cannot create a renderer, no face renders (%s)", exc)
        return out
    with renderer:
        for k, (ex_id, rep, row) in enumerate(jobs, start=1):
            progress("rendering heatmaps", k, len(jobs))
            e = expression[row]
            verts = model.shape(analysis.identity, e).astype(np.float64)
            cam = (verts @ rot.T + trans).astype(np.float32)
            scal = evaluator.displacement_asymmetry(analysis.identity, e, analysis.rest_expression)
            rng = max(MIN_HEATMAP_RANGE_MM, float(np.percentile(np.abs(scal[:n_face]), 99.5)))
            img = renderer.render(cam, tris, intr, mode="heatmap", scalars=scal, scalar_range=(-rng, rng),
                                  clear_color=(1.0, 1.0, 1.0))
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", optimize=True)
            out.append(HeatmapRender(ex_id, rep, buf.getvalue(), rng))
    return out


@dataclass
class ReportInput:
    analysis: ClinicalAnalysis
    expression: np.ndarray
    timestamps: np.ndarray


def analyse_path(path: str | Path, model: MorphableModel, evaluator: MetricEvaluator,
                 video_evidence: bool = True, progress: Progress = _log_progress) -> ReportInput:
    """Load and analyse one session. ``video_evidence``: re-measure what the live fit cannot see (the cheek
    puff) from a session folder's video (``realtime.clinical.cheek``)."""
    series = load_series(path, model)
    source = LIVE_CHEEK_SOURCE
    if video_evidence and Path(path).is_dir():
        refined = refine_cheek_puff(series, path, model, progress=progress)
        if refined is not None:
            series, source = refined.series, refined.source
    analysis = replace(analyse_session(series, model, evaluator), cheek_puff_source=source)
    return ReportInput(analysis, series.expression, np.asarray(series.timestamp_s, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px;margin-bottom:4px}
h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.summary{padding:10px 14px;border-radius:6px;background:#fff6e0;border:1px solid #e6c36a;font-size:14px}
.summary.none{background:#eef6ee;border-color:#8c8}
.muted{color:#666;font-size:12px} .flag{color:#b00;font-weight:bold}
.renders{display:flex;flex-wrap:wrap;gap:10px} .renders figure{margin:0;text-align:center;font-size:12px}
.left{color:#0072B2;font-weight:bold} .right{color:#E69F00;font-weight:bold}
"""


def _f(v: float, digits: int = 2) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.0f} %"


def _colourbar() -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="300" height="34" font-size="11" '
            'font-family="DejaVu Sans, sans-serif"><defs><linearGradient id="cw" x1="0" x2="1">'
            '<stop offset="0" stop-color="#3b4cc0"/><stop offset="0.5" stop-color="#dddddd"/>'
            '<stop offset="1" stop-color="#b40426"/></linearGradient></defs>'
            '<rect x="0" y="0" width="300" height="12" fill="url(#cw)"/>'
            '<text x="0" y="28">moves less than mirror</text><text x="300" y="28" text-anchor="end">'
            'moves more than mirror</text></svg>')


def _summary_html(a: ClinicalAnalysis) -> str:
    cls = "summary none" if a.affected.side is None else "summary"
    return (f'<div class="{cls}"><b>{escape(a.affected.statement)}</b></div>'
            f'<p class="muted">{a.n_frames} frames, {a.n_valid} usable for measurement; neutral reference: '
            f'{escape(a.rest_source)}. Left/right are the subject\'s sides. Measurements on the fitted '
            '3D mesh '
            'in model space (head pose removed), millimetres from the iris-based metric scale.</p>')


def _regions_html(a: ClinicalAnalysis) -> str:
    if not a.regions:
        return "<p>No protocol exercises in this recording: no per-region symmetry.</p>"
    rows = []
    for r in a.regions:
        unit = METRICS[r.metric].unit
        weak = f'<span class="{r.weaker_side}">{r.weaker_side}</span>' if r.weaker_side else "–"
        rows.append(f'<tr><td class="l">{escape(r.title)}</td>'
                    f'<td class="l">{escape(METRICS[r.metric].title)}</td>'
                    f'<td>{_f(r.left)}</td><td>{_f(r.right)}</td><td class="l">{escape(unit)}</td>'
                    f'<td>{_f(r.ratio_right_left)}</td><td>{_pct(r.symmetry_pct)}</td><td>{weak}</td>'
                    f'<td>{r.n_repetitions}</td></tr>')
    table = ('<table><tr><th class="l">Region</th><th class="l">Metric</th><th>Left</th><th>Right</th>'
             '<th class="l">Unit</th><th>Right / left</th><th>Symmetry</th><th>Weaker</th><th>Reps</th></tr>'
             + "".join(rows) + "</table>")
    # Symmetry chart: both sides as % of the stronger side per region (units differ between regions).
    labels, left, right = [], [], []
    for r in a.regions:
        if not r.measurable:
            continue
        hi = max(r.left, r.right, 1e-9)
        labels.append(r.title)
        left.append(100.0 * r.left / hi)
        right.append(100.0 * r.right / hi)
    chart = (svg.bar_chart_lr(labels, left, right, "%", "Movement per region, % of the stronger side")
             if labels else "")
    note = (f'<p class="muted">Cheek puff measured from {escape(a.cheek_puff_source)}.</p>'
            if any(r.region == "cheek" for r in a.regions) else "")
    return table + note + chart


def _rest_html(a: ClinicalAnalysis) -> str:
    names = {"brow_height_mm": "Brow height above the canthi", "fissure_mm": "Palpebral fissure height",
             "commissure_height_mm": "Commissure height relative to the stomion",
             "commissure_distance_mm": "Commissure distance from the stomion"}
    rows = "".join(f'<tr><td class="l">{escape(names.get(k, k))}</td><td>{_f(v[0])}</td><td>{_f(v[1])}</td>'
                   f'<td>{_f(v[0] - v[1])}</td></tr>' for k, v in a.rest_values.items())
    return ('<table><tr><th class="l">At rest (mm)</th><th>Left</th><th>Right</th>'
            '<th>Left − right</th></tr>'
            + rows + "</table>")


def _exercises_html(a: ClinicalAnalysis) -> str:
    parts = []
    for ex in a.exercises:
        parts.append(f"<h3>{escape(ex.exercise)} ({len(ex.repetitions)} repetitions)</h3>")
        for m in ex.metrics:
            spec = METRICS[m]
            labels = [f"rep {r.repetition}" for r in ex.repetitions] + ["mean"]
            left = [r.values[m][0] for r in ex.repetitions] + [ex.mean(m)[0]]
            right = [r.values[m][1] for r in ex.repetitions] + [ex.mean(m)[1]]
            parts.append(svg.bar_chart_lr(labels, left, right, spec.unit, spec.title, width=480))
    return "".join(parts) if parts else "<p>No exercises recorded.</p>"


def _timeseries_html(a: ClinicalAnalysis, t: np.ndarray) -> str:
    segs = [(f"{e} #{r}", s0, s1) for e, r, s0, s1 in a.segments]
    parts = []
    for m in TIME_SERIES_METRICS:
        v = a.per_frame[m]
        parts.append(svg.time_series_lr(t, v[:, 0], v[:, 1], segs, METRICS[m].unit, METRICS[m].title))
    return "".join(parts)


def _renders_html(renders: Sequence[HeatmapRender]) -> str:
    if not renders:
        return "<p class=\"muted\">No renders (no exercises, or no OpenGL renderer available).</p>"
    figs = []
    for r in renders:
        b64 = base64.b64encode(r.png).decode("ascii")
        figs.append(f'<figure><img alt="{escape(r.exercise)}" src="data:image/png;base64,{b64}"/>'
                    f'<figcaption>{escape(r.exercise)} rep {r.repetition}<br/>'
                    f'±{r.range_mm:.1f} mm</figcaption>'
                    '</figure>')
    return ('<p class="muted">Frontal view at the peak of each exercise '
            '(subject\'s left on the image right). '
            'Colour: |displacement from rest| of each vertex minus that of its mirror vertex.</p>'
            + _colourbar() + '<div class="renders">' + "".join(figs) + "</div>")


def _synkinesis_html(a: ClinicalAnalysis) -> str:
    if not a.synkinesis:
        return "<p>No exercises that test for synkinesis were recorded.</p>"
    rows = []
    for s in a.synkinesis:
        unit = METRICS[s.metric].unit
        what = ("eye narrowing (fraction of resting fissure)" if s.kind == "ocular"
                else "mouth-corner displacement")
        flag = f'<span class="flag">possible, {s.flagged_side}</span>' if s.flagged_side else "–"
        rows.append(f'<tr><td class="l">{escape(s.kind)}</td><td class="l">{escape(s.exercise)}</td>'
                    f'<td class="l">{escape(what)}</td><td>{_f(s.left)}</td><td>{_f(s.right)}</td>'
                    f'<td class="l">{escape(unit)}</td><td>{flag}</td></tr>')
    return ('<table><tr><th class="l">Kind</th><th class="l">During</th><th class="l">Indicator</th>'
            '<th>Left</th>'
            '<th>Right</th><th class="l">Unit</th><th>Flag</th></tr>' + "".join(rows) + "</table>")


def _closures_html(a: ClinicalAnalysis) -> str:
    if not a.eye_closures:
        return "<p>No eye closures detected.</p>"
    rows = "".join(f'<tr><td>{e.start_frame}</td><td>{e.end_frame}</td><td class="l">{e.side}</td>'
                   f'<td>{_f(e.peak_left)}</td><td>{_f(e.peak_right)}</td></tr>' for e in a.eye_closures)
    return (f"<p>Measured from: {escape(a.eye_closure_source)}.</p>"
            '<table><tr><th>First frame</th><th>Last frame</th><th class="l">Side</th>'
            '<th>Peak closure left</th>'
            '<th>Peak closure right</th></tr>' + rows + "</table>")


def _progress_html(history: Sequence[ClinicalAnalysis]) -> str:
    if len(history) < 2:
        return ""
    labels = [(h.started[:10] or h.label) for h in history]
    regions = [r.region for r in history[-1].regions]
    series: dict[str, list[float]] = {}
    for name in regions:
        vals = []
        for h in history:
            try:
                vals.append(h.region(name).symmetry_pct)
            except KeyError:
                vals.append(math.nan)
        series[name] = vals
    rows = "".join(f'<tr><td class="l">{escape(h.label)}</td><td class="l">{escape(h.started)}</td>'
                   f'<td class="l">{escape(h.affected.side or "none")}</td>'
                   + "".join(f"<td>{_pct(series[n][i])}</td>" for n in regions) + "</tr>"
                   for i, h in enumerate(history))
    head = "".join(f"<th>{escape(n)}</th>" for n in regions)
    return ("<h2>Progress across sessions</h2>"
            + svg.progress_chart(labels, series, "%",
                                 "Symmetry per region (weaker side as % of the stronger)")
            + '<table><tr><th class="l">Session</th><th class="l">Started</th><th class="l">Affected</th>'
            + head + "</tr>" + rows + "</table>")


def build_html(current: ReportInput, renders: Sequence[HeatmapRender],
               history: Sequence[ClinicalAnalysis] = ()) -> str:
    a = current.analysis
    title = f"Facial movement report: {a.label}"
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">realtime-face {escape(__version__)} · session started '
        f'{escape(a.started or "unknown")}</p>',
        _summary_html(a),
        "<h2>Symmetry per region</h2>", _regions_html(a),
        "<h2>Resting measurements</h2>", _rest_html(a),
        "<h2>Exercises (left / right per repetition)</h2>", _exercises_html(a),
        "<h2>Time series</h2>",
        '<p class="muted">Shaded bands: the hold phase of each exercise repetition.</p>',
        _timeseries_html(a, current.timestamps),
        "<h2>Displacement asymmetry renders</h2>", _renders_html(renders),
        "<h2>Synkinesis indicators</h2>", _synkinesis_html(a),
        "<h2>Eye-closure events</h2>", _closures_html(a),
        _progress_html(history),
        '<p class="muted">Formulas and clinical sources (Sunnybrook, eFACE, Emotrics): docs/clinical.md of '
        "realtime-face. These measurements support, and do not replace, a clinician's grading.</p>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def report_json(current: ClinicalAnalysis, history: Sequence[ClinicalAnalysis] = ()) -> dict[str, Any]:
    return {
        "software": f"realtime-face {__version__}",
        "session": current.to_json(),
        "progress": [{"label": h.label, "started": h.started, "affected": h.affected.side,
                      "symmetry_pct": {r.region: (None if not math.isfinite(r.symmetry_pct)
                                                  else round(r.symmetry_pct, 2)) for r in h.regions}}
                     for h in history],
    }


@dataclass
class ReportResult:
    html_path: Path
    json_path: Path
    data: dict[str, Any]
    analysis: ClinicalAnalysis


def make_report(session: str | Path, model: MorphableModel, out_html: str | Path,
                compare: Sequence[str | Path] = (), renders: bool = True,
                progress: Progress = _log_progress, video_evidence: bool = True) -> ReportResult:
    """Analyse a session (and older ones to compare with) and write ``out_html`` plus ``.json`` beside it."""
    out = Path(out_html)
    evaluator = MetricEvaluator(model)
    paths = [*compare, session]
    inputs: list[ReportInput] = []
    for i, p in enumerate(paths, start=1):
        progress("analysing sessions", i, len(paths))
        inputs.append(analyse_path(p, model, evaluator, video_evidence, progress))
    current = inputs[-1]
    history = sorted((x.analysis for x in inputs), key=lambda a: a.started) if compare else []
    pics = (render_heatmaps(model, current.analysis, current.expression, evaluator, progress)
            if renders else [])
    html = build_html(current, pics, history)
    data = report_json(current.analysis, history)
    json_path = out.with_suffix(".json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
        json_path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return ReportResult(out, json_path, data, current.analysis)
