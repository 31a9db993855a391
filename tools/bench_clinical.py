#!/usr/bin/env python
"""Clinical metrics benchmark: synthetic palsy patients and the wink/blink video.

Sections (all by default; pick with --only):

* ``param``: synthetic patients from exact model parameters (right palsy 30 %, left palsy 50 % with
  fitter-like noise, healthy): affected side and per-region symmetry-ratio error vs the truth.
* ``pose``: one right-palsy smile rendered at head yaws -30..30°: the model-space commissure excursion
  ratio vs a 2D MediaPipe pixel baseline (how much head pose distorts each).
* ``e2e``: the 30 % right palsy rendered to video (SyntheticGenerator: face + eyeball proxies, slow head
  motion), run through MediaPipe → fitter → smoothing → session recorder, loaded back and reported.
  Per-region ratio error next to the "symmetric face" baseline (ratio 1). Also writes the HTML report
  and, with --screenshot, a headless-Chromium screenshot of it.
* ``wink``: eye-closure events on ../shared/data/videos/wink_blink_gaze.mp4 vs the frame ranges
  established by looking at the frames (see tests/test_clinical_pipeline.py).

Every figure is printed next to a trivial baseline. ``--json`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

from realtime.clinical.metrics import ClinicalAnalysis, MetricEvaluator, analyse_session
from realtime.clinical.patient import (
    PatientSpec,
    RenderedTruth,
    RenderSettings,
    compact_protocol_toml,
    patient_series,
    protocol_timeline,
    record_session_from_video,
    render_patient_video,
)
from realtime.facemodel import MorphableModel, load_face_model

log = logging.getLogger("bench_clinical")

# Ground truth of wink_blink_gaze.mp4 (0-based frame indices), established by looking at eye crops of
# every frame in the closure runs and every third frame elsewhere (see tests/test_clinical_pipeline.py).
WINK_VIDEO_BILATERAL = ((16, 19), (51, 52), (66, 66), (79, 79), (94, 94), (108, 111), (211, 211),
                        (284, 285), (347, 347), (371, 371), (457, 457), (475, 475))
WINK_VIDEO_FLICKER = (126, 207)
"""Eyes closed / rapid bilateral blinking (alternating frames)."""
WINK_VIDEO_ONE_SIDED = ((388, 388, "left"),)
"""388: the subject's LEFT eye closed while the right is half open (the clip's only one-sided closure)."""


def region_rows(truth: ClinicalAnalysis, meas: ClinicalAnalysis) -> list[dict[str, Any]]:
    rows = []
    for rt in truth.regions:
        try:
            rm = meas.region(rt.region)
        except KeyError:
            rm = None
        m_ratio = rm.ratio_right_left if rm is not None else float("nan")
        rows.append({"region": rt.region, "truth_ratio": rt.ratio_right_left, "measured_ratio": m_ratio,
                     "error": m_ratio - rt.ratio_right_left, "baseline_error": 1.0 - rt.ratio_right_left,
                     "truth_left": rt.left, "truth_right": rt.right,
                     "measured_left": rm.left if rm else float("nan"),
                     "measured_right": rm.right if rm else float("nan")})
    return rows


def print_regions(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    print(f"{'region':12s} {'truth R/L':>9s} {'meas R/L':>9s} {'error':>7s} {'baseline':>8s}   "
          f"{'truth L/R':>15s}   {'meas L/R':>15s}")
    for r in rows:
        print(f"{r['region']:12s} {r['truth_ratio']:9.3f} {r['measured_ratio']:9.3f} {r['error']:+7.3f} "
              f"{r['baseline_error']:+8.3f}   {r['truth_left']:6.2f}/{r['truth_right']:6.2f}   "
              f"{r['measured_left']:6.2f}/{r['measured_right']:6.2f}")
    errs = np.array([abs(r["error"]) for r in rows if np.isfinite(r["error"])])
    base = np.array([abs(r["baseline_error"]) for r in rows])
    if errs.size:
        print(f"mean |error| {errs.mean():.3f} (baseline 'symmetric' {base.mean():.3f}); "
              f"regions within ±0.10: {int((errs <= 0.10).sum())}/{len(rows)}")


def section_param(model: MorphableModel, ev: MetricEvaluator) -> dict[str, Any]:
    from realtime.session.protocol import load_protocol

    tl = protocol_timeline(load_protocol("palsy-basic"))
    cases = {"right palsy 30 %": (PatientSpec(right_gain=0.3), "right"),
             "right palsy 30 %, noise 0.05": (PatientSpec(right_gain=0.3, noise=0.05), "right"),
             "left palsy 50 %, noise 0.03": (PatientSpec(left_gain=0.5, noise=0.03), "left"),
             "healthy, noise 0.03": (PatientSpec(noise=0.03), None)}
    out: dict[str, Any] = {}
    print("== param: synthetic patients from exact parameters (palsy-basic, 30 FPS) ==")
    for name, (spec, expected) in cases.items():
        exact = PatientSpec(right_gain=spec.right_gain, left_gain=spec.left_gain)
        truth = analyse_session(patient_series(model, tl, exact), model, ev)
        t0 = time.perf_counter()
        meas = analyse_session(patient_series(model, tl, spec), model, ev)
        dt = time.perf_counter() - t0
        rows = region_rows(truth, meas)
        ok = meas.affected.side == expected
        verdict = "OK" if ok else "WRONG"
        print(f"\n{name}: affected side {meas.affected.side} (expected {expected}) {verdict}; "
              f"analysis {dt * 1000:.0f} ms for {meas.n_frames} frames")
        print(f"  {meas.affected.statement}")
        if spec.noise > 0:
            print_regions(rows, "  per-region symmetry ratio vs exact parameters")
        out[name] = {"affected": meas.affected.side, "expected": expected, "correct": ok,
                     "p_value": meas.affected.p_value, "regions": rows, "analysis_ms": dt * 1000}
    return out


def section_e2e(model: MorphableModel, ev: MetricEvaluator, work: Path,
                args: argparse.Namespace) -> dict[str, Any]:
    from realtime.clinical.report import make_report
    from realtime.clinical.sessions import FitCollector, load_series
    from realtime.session.protocol import load_protocol, parse_protocol

    print(f"\n== e2e: rendered right palsy ({args.gain:.0%}) → MediaPipe → fitter → session → report ==")
    proto = parse_protocol(compact_protocol_toml(load_protocol("palsy-basic"), args.repetitions, args.prepare,
                                                 args.hold, args.rest, rest_hold_s=2.0), "compact")
    tl = protocol_timeline(proto)
    spec = PatientSpec(right_gain=args.gain)
    truth_series = patient_series(model, tl, spec, fps=args.fps)
    truth = analyse_session(truth_series, model, ev)
    video = work / "patient.mp4"
    t0 = time.perf_counter()
    last = [0.0]

    def prog(i: int, n: int) -> None:
        if time.perf_counter() - last[0] > 5.0 or i == n:
            last[0] = time.perf_counter()
            log.info("rendering %d/%d frames", i, n)

    settings = RenderSettings(fps=args.fps, distance_mm=args.distance, width=args.size, height=args.size,
                              head_motion_deg=args.head_motion)
    truth_log: list[RenderedTruth] = []
    intr = render_patient_video(model, truth_series, video, settings, progress=prog, truth_log=truth_log)
    t_render = time.perf_counter() - t0
    collector = FitCollector(model)
    t0 = time.perf_counter()
    folder = record_session_from_video(model, video, proto, work / "sessions", intr, folder_name="patient",
                                       extra_sinks=[collector])
    t_pipe = time.perf_counter() - t0
    print(f"{truth_series.n_frames} frames at {args.fps:g} FPS: render {t_render:.0f} s, "
          f"pipeline+recording {t_pipe:.0f} s; session {folder}")
    source = "recorded session"
    live_only: ClinicalAnalysis | None = None
    try:
        meas_series = load_series(folder, model)
    except Exception as exc:  # report which piece is missing, then measure the live fits
        print(f"NOTE: the recorded session cannot be measured ({exc}); measuring the fits collected from "
              "the same pipeline run instead")
        source = "in-memory fits (session table lacks fit columns)"
        meas_series = collector.series("in-memory fits")
        k = meas_series.n_frames
        assert truth_series.exercise is not None and truth_series.repetition is not None
        assert truth_series.phase is not None
        meas_series.exercise = truth_series.exercise[:k]
        meas_series.repetition = truth_series.repetition[:k]
        meas_series.phase = truth_series.phase[:k]
    t_report = 0.0
    made = None
    if source == "recorded session":
        # what the report measures: the live fit, plus the cheek puff re-measured from the session video
        live_only = analyse_session(meas_series, model, ev)
        t0 = time.perf_counter()
        made = make_report(folder, model, Path(args.report or work / "report.html"))
        t_report = time.perf_counter() - t0
        meas = made.analysis
    else:
        meas = analyse_session(meas_series, model, ev)
    rows = region_rows(truth, meas)
    print(f"measured from: {source}; {meas.n_valid}/{meas.n_frames} frames usable; cheek puff from "
          f"{meas.cheek_puff_source} (report {t_report:.1f} s)")
    print_regions(rows, "per-region symmetry ratio (right / left); truth = the same formulas on the known "
                        "parameters")
    live_cheek: dict[str, Any] = {}
    if live_only is not None:
        live_cheek = next((r for r in region_rows(truth, live_only) if r["region"] == "cheek"), {})
        if live_cheek:
            print(f"cheek from the live fit only (report --no-video-evidence): ratio "
                  f"{live_cheek['measured_ratio']:.3f} (error {live_cheek['error']:+.3f}), L/R "
                  f"{live_cheek['measured_left']:.2f}/{live_cheek['measured_right']:.2f} mm")
    true_side = "right" if args.gain < 1.0 else ("left" if args.gain > 1.0 else None)
    print(f"affected side: {meas.affected.side} (truth: {true_side}): {meas.affected.statement}")
    # Where the ratio errors come from: fitted vs true weights at each exercise's peak.
    names = model.expression_names
    diag: list[dict[str, Any]] = []
    n = min(meas_series.n_frames, truth_series.n_frames)
    for ex in truth.exercises:
        rep = ex.repetitions[0]
        i = min(rep.peak_frame, n - 1)
        true_w, fit_w = truth_series.expression[i], meas_series.expression[i]
        top = np.argsort(-np.maximum(true_w, fit_w))[:5]
        weights = {names[j]: (round(float(true_w[j]), 2), round(float(fit_w[j]), 2)) for j in top}
        diag.append({"exercise": ex.exercise, "frame": int(i), "weights": weights})
    print("\nfitted vs true blendshape weights at each exercise's peak (true, fitted):")
    for d in diag:
        pairs = ", ".join(f"{k} {v[0]:.2f}/{v[1]:.2f}" for k, v in d["weights"].items())
        print(f"  {d['exercise']:22s} {pairs}")
    variants = measurement_variants(model, truth_series, folder, truth_log) if source == "recorded session" else {}
    result: dict[str, Any] = {"frames": truth_series.n_frames, "fps": args.fps, "source": source,
                              "measurement_variants": variants,
                              "affected": meas.affected.side, "affected_statement": meas.affected.statement,
                              "regions": rows, "render_s": t_render, "pipeline_s": t_pipe,
                              "cheek_puff_source": meas.cheek_puff_source, "report_s": t_report,
                              "cheek_live_fit_only": live_cheek,
                              "diagnostics": diag}
    if made is not None:
        print(f"report: {made.html_path}")
        result["report"] = str(made.html_path)
        if args.screenshot:
            shot = Path(args.screenshot)
            proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                   "--enable-logging=stderr", "--v=0", "--window-size=1100,3000",
                                   f"--screenshot={shot}", made.html_path.resolve().as_uri()],
                                  capture_output=True, text=True, timeout=120)
            console = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "CONSOLE" in ln]
            print(f"screenshot: {shot} (chromium exit {proc.returncode}, console messages: {len(console)})")
            result["screenshot"] = str(shot)
    return result


# ------------------------------------------------------------------ what to measure: model mesh or landmarks
VARIANT_QUANTITIES = (
    # (name, exercises, MediaPipe landmark on the subject's left, on the right, same-side reference pair)
    ("commissure (smile)", ("smile_closed", "smile_open"), 291, 61, (263, 33)),
    ("commissure (pucker)", ("pucker",), 291, 61, (263, 33)),
    ("commissure (ee)", ("ee",), 291, 61, (263, 33)),
    ("brow (brow raise)", ("brow_raise",), 334, 105, (263, 33)),
    ("cheek (cheek puff)", ("cheek_puff",), 425, 205, (263, 33)),
)
"""Landmark quantities compared across measurement methods. MediaPipe ids: 61/291 mouth corners, 105/334
mid-brow, 205/425 cheek, 33/263 lateral canthi (the Nottingham system's lateral-canthus reference)."""


def _lift(landmarks_px: np.ndarray, rotation: np.ndarray, translation: np.ndarray, depth: np.ndarray,
          intr: Any) -> np.ndarray:
    """MediaPipe pixels back-projected at the given per-landmark camera depth, into the head (model) frame."""
    x = (landmarks_px[..., 0] - intr.cx) / intr.fx * depth
    y = (landmarks_px[..., 1] - intr.cy) / intr.fy * depth
    cam = np.stack([x, y, depth], axis=-1)
    return np.einsum("fji,fpj->fpi", rotation, cam - translation[:, None, :])  # R^T (X - t)


def _per_rep(values: np.ndarray, segs: list[tuple[str, int, np.ndarray]], exercises: tuple[str, ...],
             valid: np.ndarray) -> float:
    """The product's aggregation: 90th percentile over each hold, mean over repetitions."""
    from realtime.clinical.metrics import PEAK_PERCENTILE

    reps = [np.nanpercentile(values[r[valid[r]]], PEAK_PERCENTILE) for e, _, r in segs
            if e in exercises and np.any(valid[r])]
    return float(np.mean(reps)) if reps else float("nan")


def measurement_variants(model: MorphableModel, truth_series: Any, folder: Path,
                         truth_log: list[RenderedTruth]) -> dict[str, Any]:
    """The same left/right quantities measured several ways on the recorded session, each against the same
    quantity computed on the true mesh (MediaPipe landmark positions on it, via the correspondence table).

    * fitted mesh: the fitted model (identity + expression) at the landmarks' surface points, model frame;
    * MediaPipe, fitted pose: MediaPipe pixels back-projected at the fitted mesh's depth, into the fitted head
      frame (the person's own rest as reference);
    * MediaPipe, same-side distance: change of the 3D distance corner/brow/cheek - lateral canthus on the
      same side (rigid-invariant, so head-pose errors cancel; Nottingham-system style); truth = the same
      distance change on the true mesh;
    * MediaPipe, true pose + depth (oracle): what MediaPipe's 2D points give when pose and depth are exact
      (the ceiling of any MediaPipe-based measurement);
    * the oracle with one of the two taken from the fit (the depth motion of the expression, or the head
      pose's change from rest), to show which of them costs the fitted variant its accuracy.
    """
    import json as _json

    import pyarrow.parquet as pq

    from realtime.camera import Intrinsics
    from realtime.clinical.metrics import _segments
    from realtime.clinical.sessions import _list_matrix, load_series
    from realtime.correspondence import load_correspondence

    corr = load_correspondence(model)
    meas = load_series(folder, model)
    table = pq.read_table(folder / "frames.parquet", columns=["rotation", "translation_mm"])
    rot = _list_matrix(table.column("rotation"), 9).reshape(-1, 3, 3)
    trans = _list_matrix(table.column("translation_mm"), 3)
    cam = _json.loads((folder / "manifest.json").read_text())["camera"]["intrinsics"]
    intr = Intrinsics(**cam)
    n = min(truth_series.n_frames, meas.n_frames, len(truth_log))
    segs = [(e, r, rows[rows < n]) for e, r, rows in _segments(truth_series)]
    rest = np.concatenate([rows for e, _, rows in segs if e == "rest"])
    valid = meas.valid[:n] & np.all(np.isfinite(rot[:n]), axis=(1, 2))

    # Only the vertices of the landmarks' triangles are evaluated (a few hundred, not the whole mesh).
    used, inverse = np.unique(corr.vertex_ids, return_inverse=True)
    local_ids = inverse.reshape(corr.vertex_ids.shape)
    mean_u = model.mean_mm[used].astype(np.float64)
    exp_u = model.expression_basis_mm[:, used].astype(np.float64)
    id_u = model.identity_basis_mm[:, used].astype(np.float64)

    def corr_points(identity: np.ndarray | None, expression: np.ndarray) -> np.ndarray:
        v = mean_u[None] + np.tensordot(np.atleast_2d(expression), exp_u, 1)
        if identity is not None:
            ident = np.asarray(identity, dtype=np.float64)
            v = v + (np.tensordot(ident, id_u, 1) if ident.ndim == 2 else np.tensordot(ident, id_u, 1)[None])
        return (v[:, local_ids] * corr.barycentric[None, :, :, None]).sum(axis=-2)

    true_pts = corr_points(truth_series.session_identity(), truth_series.expression[:n])
    ident = meas.identity[:n] if meas.identity is not None and meas.identity.ndim == 2 else meas.identity
    fit_pts = corr_points(np.nan_to_num(ident) if ident is not None else None, meas.expression[:n])
    fit_cam = np.einsum("fij,fpj->fpi", np.nan_to_num(rot[:n]), fit_pts) + np.nan_to_num(trans[:n])[:, None]
    assert meas.landmarks is not None
    lm = meas.landmarks[:n].astype(np.float64)
    mp_fit = _lift(lm, np.nan_to_num(rot[:n]), np.nan_to_num(trans[:n]), fit_cam[..., 2], intr)
    t_rot = np.stack([t.rotation for t in truth_log[:n]])
    t_trans = np.stack([t.translation_mm for t in truth_log[:n]])
    t_depth = np.stack([t.landmarks_cam_mm[:, 2] for t in truth_log[:n]])
    mp_oracle = _lift(lm, t_rot, t_trans, t_depth, intr)
    # Where the fitted variant loses against the oracle: (a) true pose, but the depth of the expression
    # motion from the fit (true neutral face at the true pose + the fitted mesh's depth change from its own
    # neutral face); (b) true depth, but the fitted pose's change from its error at rest applied to the
    # true pose (model-side error E = R_true^T R_fit, relative to its rest median).
    rest_expr = np.median(meas.expression[rest[valid[rest]]], axis=0)
    fit_neutral = corr_points(np.nan_to_num(ident) if ident is not None else None,
                              np.repeat(rest_expr[None], n, axis=0))
    fit_neutral_z = (np.einsum("fij,fpj->fpi", np.nan_to_num(rot[:n]), fit_neutral)
                     + np.nan_to_num(trans[:n])[:, None])[..., 2]
    true_neutral = corr_points(truth_series.session_identity(), np.zeros((1, model.n_expressions)))[0]
    true_neutral_z = (np.einsum("fij,pj->fpi", t_rot, true_neutral) + t_trans[:, None])[..., 2]
    mp_fit_depth = _lift(lm, t_rot, t_trans, true_neutral_z + (fit_cam[..., 2] - fit_neutral_z), intr)
    from scipy.spatial.transform import Rotation

    err_r = np.einsum("fji,fjk->fik", t_rot, np.nan_to_num(rot[:n]))
    err_t = np.einsum("fji,fj->fi", t_rot, np.nan_to_num(trans[:n]) - t_trans)
    ok_rest = rest[valid[rest]]
    err_r0 = Rotation.from_matrix(err_r[ok_rest]).mean().as_matrix()
    hyb_r = np.einsum("fij,fjk,lk->fil", t_rot, err_r, err_r0)
    hyb_t = t_trans + np.einsum("fij,fj->fi", t_rot, err_t - np.median(err_t[ok_rest], axis=0))
    mp_fit_pose = _lift(lm, hyb_r, hyb_t, t_depth, intr)
    all_valid = np.ones(n, dtype=bool)

    def displacement(pts: np.ndarray, k: int, ok: np.ndarray) -> np.ndarray:
        ref = np.median(pts[rest[ok[rest]], k], axis=0)
        return np.linalg.norm(pts[:, k] - ref, axis=-1)

    def distance_change(pts: np.ndarray, k: int, ref_k: int, ok: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(pts[:, k] - pts[:, ref_k], axis=-1)
        return np.abs(d - np.median(d[rest[ok[rest]]]))

    methods = {"fitted mesh": (fit_pts, valid), "MediaPipe, fitted pose": (mp_fit, valid),
               "MediaPipe, true pose (oracle)": (mp_oracle, valid),
               "oracle but fitted depth motion": (mp_fit_depth, valid),
               "oracle but fitted pose change": (mp_fit_pose, valid)}
    rows: list[dict[str, Any]] = []
    for name, exercises, k_left, k_right, (ref_l, ref_r) in VARIANT_QUANTITIES:
        tl = _per_rep(displacement(true_pts, k_left, all_valid), segs, exercises, all_valid)
        tr = _per_rep(displacement(true_pts, k_right, all_valid), segs, exercises, all_valid)
        row: dict[str, Any] = {"quantity": name, "truth_ratio": tr / tl}
        for mname, (pts, ok) in methods.items():
            ml = _per_rep(displacement(pts, k_left, ok), segs, exercises, ok)
            mr = _per_rep(displacement(pts, k_right, ok), segs, exercises, ok)
            row[mname] = mr / ml
        dl = _per_rep(distance_change(true_pts, k_left, ref_l, all_valid), segs, exercises, all_valid)
        dr = _per_rep(distance_change(true_pts, k_right, ref_r, all_valid), segs, exercises, all_valid)
        row["distance_truth_ratio"] = dr / dl
        ml = _per_rep(distance_change(mp_fit, k_left, ref_l, valid), segs, exercises, valid)
        mr = _per_rep(distance_change(mp_fit, k_right, ref_r, valid), segs, exercises, valid)
        row["MediaPipe, same-side distance"] = mr / ml
        rows.append(row)
    cols = [*methods, "MediaPipe, same-side distance"]
    print("\nmeasurement variants: right/left ratio of the same quantity, measured vs true (error in brackets);"
          "\n3D displacement from the rest pose of MediaPipe landmarks (truth: those points on the true mesh);"
          "\nthe same-side distance column has its own truth (distance change to the lateral canthus)")
    print(f"{'quantity':22s} {'truth':>6s} " + " ".join(f"{c:>30s}" for c in cols) + f" {'baseline 1.0':>13s}")
    for r in rows:
        cells = []
        for c in cols:
            truth_c = r["distance_truth_ratio"] if c.endswith("distance") else r["truth_ratio"]
            cells.append(f"{r[c]:>21.2f} ({r[c] - truth_c:+.2f})")
        print(f"{r['quantity']:22s} {r['truth_ratio']:6.2f} " + " ".join(f"{x:>30s}" for x in cells)
              + f" {1.0 - r['truth_ratio']:+13.2f}")
    errs = {c: float(np.mean([abs(r[c] - (r["distance_truth_ratio"] if c.endswith("distance") else
                                          r["truth_ratio"])) for r in rows])) for c in cols}
    base = float(np.mean([abs(1.0 - r["truth_ratio"]) for r in rows]))
    print("mean |error|: " + ", ".join(f"{c} {v:.3f}" for c, v in errs.items()) + f"; baseline 1.0: {base:.3f}")
    return {"rows": rows, "mean_abs_error": errs, "baseline_mean_abs_error": base}


def wink_video_series(model: MorphableModel, video: Path) -> Any:
    from realtime.capture import VideoSource
    from realtime.clinical.sessions import FitCollector
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline
    from realtime.smoothing import SmoothingStage

    collector = FitCollector(model)
    stages: list[Any] = [LandmarkStage(), FitStage(model), SmoothingStage(model)]  # as `realtime-face run`
    with Pipeline(VideoSource(video), stages, [collector]) as pipe:
        pipe.run()
    return collector.series(video.stem)


def score_wink_events(events: list[tuple[int, int, str]]) -> dict[str, Any]:
    """Events vs the labelled closures of wink_blink_gaze.mp4."""
    def overlapping(lo: int, hi: int) -> list[tuple[int, int, str]]:
        return [e for e in events if e[0] <= hi and e[1] >= lo]

    found_bilateral = sum(1 for lo, hi in WINK_VIDEO_BILATERAL
                          if any(e[2] == "both" for e in overlapping(lo, hi)))
    found_one_sided = sum(1 for lo, hi, side in WINK_VIDEO_ONE_SIDED
                          if any(e[2] == side for e in overlapping(lo, hi)))
    truth_windows = [*((lo, hi) for lo, hi in WINK_VIDEO_BILATERAL), WINK_VIDEO_FLICKER,
                     *((lo, hi) for lo, hi, _ in WINK_VIDEO_ONE_SIDED)]
    false_pos = [e for e in events if not any(e[0] <= hi + 2 and e[1] >= lo - 2 for lo, hi in truth_windows)]
    wrong_side = [e for e in events if e[2] != "both"
                  and not any(e[0] <= hi and e[1] >= lo and e[2] == s for lo, hi, s in WINK_VIDEO_ONE_SIDED)]
    wrong_side += [e for lo, hi in WINK_VIDEO_BILATERAL for e in overlapping(lo, hi) if e[2] != "both"
                   and e not in wrong_side]
    return {"events": events, "bilateral_found": found_bilateral, "bilateral_total": len(WINK_VIDEO_BILATERAL),
            "one_sided_found": found_one_sided, "one_sided_total": len(WINK_VIDEO_ONE_SIDED),
            "wrong_side": wrong_side, "false_positives": false_pos}


def section_wink(model: MorphableModel, ev: MetricEvaluator, video: Path) -> dict[str, Any]:
    from dataclasses import replace

    print(f"\n== wink: eye-closure events on {video.name} ==")
    t0 = time.perf_counter()
    series = wink_video_series(model, video)
    dt = time.perf_counter() - t0
    a = analyse_session(series, model, ev)
    # Baseline: the same session measured from the fitted model's eye closure (no landmarks), and a
    # detector blind to sides (every event "both").
    a_model = analyse_session(replace(series, landmarks=None), model, ev)
    runs = {"MediaPipe lids (product)": [(e.start_frame, e.end_frame, e.side) for e in a.eye_closures],
            "fitted model (baseline)": [(e.start_frame, e.end_frame, e.side) for e in a_model.eye_closures]}
    runs["always 'both' (baseline)"] = [(e[0], e[1], "both") for e in runs["MediaPipe lids (product)"]]
    print(f"{series.n_frames} frames, {int(series.valid.sum())} fitted, pipeline {dt:.0f} s")
    print(f"{'detector':28s} {'events':>6s} {'bilateral as both':>18s} {'one-sided correct':>18s} "
          f"{'wrong side':>10s} {'false pos.':>10s}")
    out: dict[str, Any] = {"seconds": dt}
    for name, events in runs.items():
        sc = score_wink_events(events)
        out[name] = sc
        print(f"{name:28s} {len(events):6d} {sc['bilateral_found']:>12d}/{sc['bilateral_total']:<5d} "
              f"{sc['one_sided_found']:>12d}/{sc['one_sided_total']:<5d} {len(sc['wrong_side']):10d} "
              f"{len(sc['false_positives']):10d}")
    for e in a.eye_closures:
        print(f"  frames {e.start_frame:4d}-{e.end_frame:4d}  {e.side:5s}  peak closure L {e.peak_left:.2f} "
              f"R {e.peak_right:.2f}")
    return out


def section_pose(model: MorphableModel, ev: MetricEvaluator) -> dict[str, Any]:
    """Same expression seen under different head yaws: 3D model-space metric vs a 2D landmark baseline."""
    from realtime.fitting import fit_image
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    print("\n== pose: a right-palsy smile (right gain 0.3) rendered at several head yaws ==")
    spec = PatientSpec(right_gain=0.3)
    names = model.expression_names
    smile = np.zeros(model.n_expressions)
    for k, w in (("mouthSmile_L", 1.0), ("mouthSmile_R", 1.0)):
        smile[names.index(k)] = w
    from realtime.clinical.patient import side_gains

    smile *= side_gains(model, spec)
    rest = np.zeros(model.n_expressions)
    truth = ev.evaluate(None, smile[None], rest)["commissure_excursion_mm"][0]
    rows = []
    with SyntheticGenerator(model, 512, 512, seed=3) as gen, FaceMeshTracker(max_faces=1, static=True) as trk:
        base = gen.sample(identity=np.zeros(model.n_identity), expression=rest, seed=3, clean=True,
                          yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, distance_mm=520.0)
        fixed = {"intrinsics": base.intrinsics, "sh_coeffs": base.sh_coeffs, "albedo": base.albedo}
        for yaw in (-30.0, -15.0, 0.0, 15.0, 30.0):
            fits, marks = [], []
            for expr in (rest, smile):
                img = gen.sample(identity=np.zeros(model.n_identity), expression=expr, seed=3, clean=True,
                                 yaw_deg=yaw, pitch_deg=0.0, roll_deg=0.0, distance_mm=520.0, **fixed).image
                fit = fit_image(img, model, intrinsics=base.intrinsics, tracker=trk)
                tracks = trk.track(img)
                if fit is None or not tracks:
                    break
                fits.append(fit)
                marks.append(tracks[0].landmarks_px[:, :2])
            if len(fits) < 2:
                print(f"yaw {yaw:+.0f}: no face found")
                continue
            meas = ev.evaluate(fits[1].identity, fits[1].expression[None], fits[0].expression)
            exc = meas["commissure_excursion_mm"][0]
            # 2D baseline: MediaPipe mouth-corner pixel displacement (61 = subject's right, 291 = left).
            d_r = float(np.linalg.norm(marks[1][61] - marks[0][61]))
            d_l = float(np.linalg.norm(marks[1][291] - marks[0][291]))
            rows.append({"yaw": yaw, "left_mm": float(exc[0]), "right_mm": float(exc[1]),
                         "ratio": float(exc[1] / exc[0]) if exc[0] > 0 else float("nan"),
                         "baseline_ratio_2d": d_r / d_l if d_l > 0 else float("nan")})
    print(f"truth: commissure excursion L {truth[0]:.2f} mm, R {truth[1]:.2f} mm, "
          f"R/L {truth[1] / truth[0]:.3f}")
    print(f"{'yaw':>5s} {'L mm':>7s} {'R mm':>7s} {'R/L 3D':>7s} {'R/L 2D px (baseline)':>21s}")
    for r in rows:
        print(f"{r['yaw']:+5.0f} {r['left_mm']:7.2f} {r['right_mm']:7.2f} {r['ratio']:7.3f} "
              f"{r['baseline_ratio_2d']:21.3f}")
    ratios = np.array([r["ratio"] for r in rows])
    base2d = np.array([r["baseline_ratio_2d"] for r in rows])
    if ratios.size:
        print(f"spread over yaw (max - min): 3D {np.ptp(ratios):.3f}, 2D baseline {np.ptp(base2d):.3f}")
    return {"truth_left_mm": float(truth[0]), "truth_right_mm": float(truth[1]), "rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("param", "pose", "e2e", "wink"), action="append")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--repetitions", type=int, default=2)
    p.add_argument("--prepare", type=float, default=1.0)
    p.add_argument("--hold", type=float, default=2.0)
    p.add_argument("--rest", type=float, default=1.5)
    p.add_argument("--distance", type=float, default=RenderSettings.distance_mm,
                   help="camera distance of the rendered patient, mm (rescaled with the FOV)")
    p.add_argument("--head-motion", type=float, default=RenderSettings.head_motion_deg,
                   help="amplitude of the slow yaw (pitch: half) head motion, degrees")
    p.add_argument("--size", type=int, default=RenderSettings.width, help="rendered video width = height, px")
    p.add_argument("--gain", type=float, default=0.3, help="right-side blendshape gain of the patient")
    p.add_argument("--work", type=Path, default=None, help="keep the video/session here (default: temp)")
    p.add_argument("--report", type=Path, default=None, help="HTML report of the e2e session")
    p.add_argument("--screenshot", type=Path, default=None, help="Chromium screenshot of the report (PNG)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sections = args.only or ["param", "pose", "e2e", "wink"]
    model = load_face_model()
    ev = MetricEvaluator(model)
    results: dict[str, Any] = {}
    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.mkdtemp(prefix="bench_clinical_")
        work = Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if "param" in sections:
            results["param"] = section_param(model, ev)
        if "pose" in sections:
            results["pose"] = section_pose(model, ev)
        if "e2e" in sections:
            if (work / "sessions" / "patient").exists():
                shutil.rmtree(work / "sessions" / "patient")
            results["e2e"] = section_e2e(model, ev, work, args)
        if "wink" in sections:
            from realtime.paths import shared_dir

            video = shared_dir() / "data" / "videos" / "wink_blink_gaze.mp4"
            results["wink"] = section_wink(model, ev, video)
    finally:
        if tmp is not None and args.report is None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1, default=lambda o: o if not isinstance(o, float) else round(o, 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
