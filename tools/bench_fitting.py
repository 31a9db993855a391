"""Fitting benchmark: every figure of issue 3's "Done means", each next to its trivial baseline.

    .venv/bin/python tools/bench_fitting.py [--n 200] [--json] [--seed 2026]

Sections (all on real MediaPipe, real renders of the project's synthetic generator, the shared media):
  synthetic set      --n renders (|yaw| ≤ 45°, random identities/expressions, a third one-sided), single-image
                     fits: expression motion on truly moving vertices (zero-expression baseline), one-sided
                     recovery rate, shape error by yaw bin after rigid alignment (mean-face baseline) and
                     point-to-surface after ICP (mean-face baseline); the same shape error for what
                     `realtime-face reconstruct` writes (the fit refined photometrically, ≈ 1.5 s/render)
  one-sided set      --one-sided renders, each with a one-sided blink or smile (plus random others): recovery
                     rate with and without the learned landmark prior
  head-turn sequence ±40° yaw with changing expressions, tracked as video: locked-identity error (mean face) of
                     the landmark lock and of the lock refined in the background (realtime.identity_refine:
                     front + side frames, photometric; the jobs run synchronously at the frames where
                     `realtime-face run` hands them to its worker); --sequence-seeds, --no-identity-refine
  talking_720p.mp4   jitter: second-difference RMS of the mesh (raw vs smoothed fit, mm) and of the 68
                     landmarks (MediaPipe's own 68-subset vs raw fit vs smoothed fit, px); fit ms/frame
  step response      frames for the smoothed output to reach 90 % of a sudden expression / head-turn step
  photos             2D 68-landmark NME (bbox-normalised) vs MediaPipe's own 68-subset
  speed              fit ms/frame on one core; tracking+fitting+smoothing end-to-end FPS on the 720p video
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # "on one core": the fit is measured single-threaded

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from realtime.camera import Intrinsics  # noqa: E402
from realtime.correspondence import load_correspondence  # noqa: E402
from realtime.facemodel import MorphableModel, load_face_model  # noqa: E402
from realtime.fitting import FaceFitter, FitOptions, FitStage, IntrinsicsResolver  # noqa: E402
from realtime.paths import shared_dir  # noqa: E402
from realtime.results import FaceResult, Frame, FrameResult  # noqa: E402
from realtime.smoothing import PoseExpressionSmoother, SmoothingOptions, SmoothingStage  # noqa: E402

log = logging.getLogger("bench_fitting")

ONE_SIDED_PAIRS = (("eyeBlink_L", "eyeBlink_R"), ("eyeBlink_R", "eyeBlink_L"),
                   ("mouthSmile_L", "mouthSmile_R"), ("mouthSmile_R", "mouthSmile_L"))
YAW_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 45.1))
SINGLE_IMAGE = FitOptions.single_image()
NO_PRIOR = FitOptions.single_image(landmark_prior=False)


@dataclass
class Row:
    section: str
    metric: str
    value: float
    baseline: float | None
    baseline_name: str
    target: str
    unit: str
    n: int = 0


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, *args: Any, **kw: Any) -> None:
        self.rows.append(Row(*args, **kw))


# --- helpers -----------------------------------------------------------------------------------------------

def rigid_align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` moved by the least-squares rotation + translation onto ``b`` (same vertex order)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(u @ vt))
    r = (u @ np.diag([1.0, 1.0, d]) @ vt).T
    return (a - ca) @ r.T + cb


def icp_point_to_surface(a: np.ndarray, b: np.ndarray, tree: Any, iters: int = 15) -> float:
    """Mean distance from ``a``'s points to ``b``'s (dense) vertices after rigid ICP (no correspondence)."""
    x = rigid_align(a, b)   # start from the correspondence alignment, then forget the correspondence
    for _ in range(iters):
        _, idx = tree.query(x)
        x = rigid_align(x, b[idx])
    dist, _ = tree.query(x)
    return float(dist.mean())


def mediapipe68(model: MorphableModel, corr: Any) -> np.ndarray:
    """MediaPipe's own 68-subset: for each iBUG-68 model vertex, the MediaPipe landmark whose surface
    point (on the mean face) is nearest. Computed from the correspondence, not typed in."""
    pts = corr.points(model.mean_mm.astype(np.float64))[:468]
    target = model.mean_mm[model.landmarks68].astype(np.float64)
    d = np.linalg.norm(pts[None, :, :] - target[:, None, :], axis=2)
    return np.argmin(d, axis=1)


def second_diff_rms(x: np.ndarray) -> float:
    """RMS over frames and points of |x[t+1] − 2x[t] + x[t−1]| (x: frames × points × dims)."""
    d2 = x[2:] - 2.0 * x[1:-1] + x[:-2]
    return float(np.sqrt((d2**2).sum(axis=-1).mean()))


def read_pts(path: Path) -> np.ndarray:
    body = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(body, float).reshape(-1, 2) - 1.0


# --- sections ----------------------------------------------------------------------------------------------

def synthetic_set(rep: Report, model: MorphableModel, corr: Any, n: int, seed: int,
                  photometric: bool = True) -> None:
    from scipy.spatial import cKDTree

    from realtime.landmarks import FaceMeshTracker
    from realtime.refine.photometric import PhotometricFitter, PhotoView
    from realtime.synthetic import SyntheticGenerator

    photo_fitter = PhotometricFitter(model, corr) if photometric else None
    # reconstruct's output: the landmark fit refined against the image's shading (identity and pose).
    shape_photo: dict[int, list[float]] = {i: [] for i in range(len(YAW_BINS))}
    photo_ms: list[float] = []

    names = model.expression_names
    fa = model.face_area_vertices
    exp_fa = model.expression_basis_mm[:, :fa].astype(np.float64)
    mean_fa = model.mean_mm[:fa].astype(np.float64)
    em, eb, one, fit_ms = [], [], [], []
    em0, one0, shape0 = [], [], []   # the same fit without the learned landmark prior (landmarks alone)
    shape: dict[int, list[tuple[float, float, float, float]]] = {i: [] for i in range(len(YAW_BINS))}
    found = 0
    t0 = time.perf_counter()
    with SyntheticGenerator(model, 512, 512, seed=seed) as gen, \
            FaceMeshTracker(max_faces=1, static=True) as tr:
        for i in range(n):
            s = gen.sample()
            tracks = tr.track(s.image)
            if (i + 1) % 25 == 0:
                log.info("synthetic set: %d/%d renders (%.0f s)", i + 1, n, time.perf_counter() - t0)
            if not tracks:
                continue
            found += 1
            fitter = FaceFitter(model, corr, s.intrinsics, SINGLE_IMAGE)
            t1 = time.perf_counter()
            fit = fitter.fit(tracks[0])
            fit_ms.append((time.perf_counter() - t1) * 1e3)
            fit0 = FaceFitter(model, corr, s.intrinsics, NO_PRIOR).fit(tracks[0], mesh=False)
            true_d = np.tensordot(s.expression.astype(np.float64), exp_fa, axes=1)
            moving = np.linalg.norm(true_d, axis=1) > 1.0
            for f, errs in ((fit, em), (fit0, em0)):
                pred_d = np.tensordot(f.expression.astype(np.float64), exp_fa, axes=1)
                if moving.any():
                    errs.append(float(np.linalg.norm(pred_d[moving] - true_d[moving], axis=1).mean()))
            if moving.any():
                eb.append(float(np.linalg.norm(true_d[moving], axis=1).mean()))
            for act, mirror in ONE_SIDED_PAIRS:
                ia, ib = names.index(act), names.index(mirror)
                if s.expression[ia] >= 0.6 and s.expression[ib] == 0.0:
                    one.append(bool(fit.expression[ia] - fit.expression[ib] >= 0.3))
                    one0.append(bool(fit0.expression[ia] - fit0.expression[ib] >= 0.3))
            truth = model.shape(s.identity, s.expression)[:fa].astype(np.float64)
            pred0 = model.shape(fit0.identity, fit0.expression)[:fa].astype(np.float64)
            shape0.append(float(np.linalg.norm(rigid_align(pred0, truth) - truth, axis=1).mean()))
            pred = model.shape(fit.identity, fit.expression)[:fa].astype(np.float64)
            tree = cKDTree(truth)
            yaw = abs(s.pose.euler_deg()[0])
            b = next(k for k, (lo, hi) in enumerate(YAW_BINS) if lo <= yaw < hi)
            if photo_fitter is not None:
                t1 = time.perf_counter()
                try:
                    refined = photo_fitter.fit_views([PhotoView(s.image, s.intrinsics, fit, tracks[0])]).fits[0]
                except ValueError:   # too little visible skin: reconstruct keeps the landmark fit
                    refined = fit
                photo_ms.append((time.perf_counter() - t1) * 1e3)
                pred_p = model.shape(refined.identity, refined.expression)[:fa].astype(np.float64)
                shape_photo[b].append(float(np.linalg.norm(rigid_align(pred_p, truth) - truth, axis=1).mean()))
            shape[b].append((
                float(np.linalg.norm(rigid_align(pred, truth) - truth, axis=1).mean()),
                float(np.linalg.norm(rigid_align(mean_fa, truth) - truth, axis=1).mean()),
                icp_point_to_surface(pred, truth, tree),
                icp_point_to_surface(mean_fa, truth, tree),
            ))
    sec = f"synthetic set ({found}/{n} renders tracked)"
    rep.add(sec, "expression motion error on moving vertices", float(np.mean(em)), float(np.mean(eb)),
            "zero expression", "≤ 1.0 (goal 0.6)", "mm", len(em))
    rep.add(sec, "expression motion error, landmarks alone (no learned prior)", float(np.mean(em0)),
            float(np.mean(eb)), "zero expression", "for comparison", "mm", len(em0))
    rate = 100.0 * float(np.mean(one)) if one else math.nan
    rep.add(sec, "one-sided recovered (active − mirror ≥ 0.3)", rate,
            0.0, "zero expression or any symmetric fit", "≥ 95", "%", len(one))
    rep.add(sec, "one-sided recovered, landmarks alone (no learned prior)",
            100.0 * float(np.mean(one0)) if one0 else math.nan, 0.0, "zero expression or any symmetric fit",
            "for comparison", "%", len(one0))
    allv = [v for b in shape.values() for v in b]
    for k, (lo, hi) in enumerate(YAW_BINS):
        v = np.array(shape[k]) if shape[k] else np.full((1, 4), math.nan)
        rep.add(sec, f"shape error, rigid, |yaw| {lo:.0f}-{min(hi, 45):.0f}°", float(v[:, 0].mean()),
                float(v[:, 1].mean()), "mean face", "≥ 25 % below baseline (goal ≤ 2.0)", "mm", len(shape[k]))
    av = np.array(allv)
    rep.add(sec, "shape error, rigid, all yaws", float(av[:, 0].mean()), float(av[:, 1].mean()), "mean face",
            "≥ 25 % below baseline", "mm", len(av))
    rep.add(sec, "shape error, rigid, all yaws, landmarks alone (no learned prior)", float(np.mean(shape0)),
            float(av[:, 1].mean()), "mean face", "for comparison", "mm", len(shape0))
    if photo_fitter is not None:
        for k, (lo, hi) in enumerate(YAW_BINS):
            v = np.array(shape[k])[:, 1] if shape[k] else np.full(1, math.nan)
            rep.add(sec, f"shape error, rigid, |yaw| {lo:.0f}-{min(hi, 45):.0f}°, reconstruct (+ photometric)",
                    float(np.mean(shape_photo[k])) if shape_photo[k] else math.nan, float(v.mean()), "mean face",
                    "≥ 25 % below baseline (goal ≤ 2.0)", "mm", len(shape_photo[k]))
        allp = [x for b in shape_photo.values() for x in b]
        rep.add(sec, "shape error, rigid, all yaws, reconstruct (+ photometric)", float(np.mean(allp)),
                float(av[:, 1].mean()), "mean face", "≥ 25 % below baseline", "mm", len(allp))
        rep.add(sec, "photometric refinement time (reconstruct)", float(np.median(photo_ms)), None, "", "", "ms",
                len(photo_ms))
    rep.add(sec, "point-to-surface after ICP (forgiving)", float(av[:, 2].mean()), float(av[:, 3].mean()),
            "mean face", "reported only", "mm", len(av))
    rep.add(sec, "single-image fit time (cold, identity free)", float(np.median(fit_ms)), None, "", "", "ms",
            len(fit_ms))


def one_sided_set(rep: Report, model: MorphableModel, corr: Any, n: int, seed: int) -> None:
    """More one-sided cases than the random set holds (it has ~20 blink/smile ones in 200): each render has one
    of eyeBlink_L/R, mouthSmile_L/R at U(0.6, 1) with its mirror at 0, plus the generator's random others."""
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    names = model.expression_names
    hits: dict[str, list[bool]] = {"fit": [], "landmarks alone": []}
    with SyntheticGenerator(model, 512, 512, seed=seed + 1000) as gen, \
            FaceMeshTracker(max_faces=1, static=True) as tr:
        rng = np.random.default_rng(seed + 1000)
        for i in range(n):
            act, mirror = ONE_SIDED_PAIRS[i % 4]
            ia, ib = names.index(act), names.index(mirror)
            w = gen.random_expression(rng)
            w[ia], w[ib] = rng.uniform(0.6, 1.0), 0.0
            s = gen.sample(expression=w)
            tracks = tr.track(s.image)
            if not tracks:
                continue
            for label, opts in (("fit", SINGLE_IMAGE), ("landmarks alone", NO_PRIOR)):
                e = FaceFitter(model, corr, s.intrinsics, opts).fit(tracks[0], mesh=False).expression
                hits[label].append(bool(e[ia] - e[ib] >= 0.3))
    sec = f"one-sided set ({n} renders)"
    rep.add(sec, "one-sided recovered (active − mirror ≥ 0.3)", 100.0 * float(np.mean(hits["fit"])), 0.0,
            "zero expression or any symmetric fit", "≥ 95", "%", len(hits["fit"]))
    rep.add(sec, "one-sided recovered, landmarks alone (no learned prior)",
            100.0 * float(np.mean(hits["landmarks alone"])), 0.0, "zero expression or any symmetric fit",
            "for comparison", "%", len(hits["landmarks alone"]))


def render_head_turn(model: MorphableModel, seed: int, frames: int = 120) -> tuple[np.ndarray, list[Any]]:
    """The head-turn video: 20 near-neutral frontal frames, then ±40° yaw turns with changing expressions.
    Returns the true identity and, per frame, (image, MediaPipe track or None) tracked as video."""
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator, pose_from_euler

    rng = np.random.default_rng(seed)
    identity = rng.normal(0.0, 1.0, model.n_identity).astype(np.float32)
    n_exp = model.n_expressions
    keys = [np.zeros(n_exp)]
    out: list[Any] = []
    with SyntheticGenerator(model, 640, 480, seed=seed + 1) as gen:
        for _ in range(frames // 15 + 2):
            keys.append(gen.random_expression(rng).astype(np.float64))
        fixed = dict(identity=identity, horizontal_fov_deg=55.0, clean=False)
        sh = gen.sample(**fixed, expression=np.zeros(n_exp), yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0,
                        distance_mm=550.0)
        background = sh.image.copy()
        with FaceMeshTracker(max_faces=1, static=False) as tr:
            for f in range(frames):
                if f < 20:
                    expr = np.zeros(n_exp)
                    yaw = 5.0 * math.sin(2 * math.pi * f / 20)
                else:
                    u = (f - 20) / 15.0
                    k = int(u)
                    w = u - k
                    expr = (1 - w) * keys[k] + w * keys[k + 1]
                    yaw = 40.0 * math.sin(2 * math.pi * (f - 20) / 60.0)
                pose = pose_from_euler(yaw, 3.0 * math.sin(f / 9.0), 0.0, 550.0)
                s = gen.sample(**fixed, expression=expr.astype(np.float32), pose=pose, background=background,
                               seed=seed + f)
                tracks = tr.track(s.image)
                out.append((s.image, tracks[0] if tracks else None))
    return identity, out


def run_head_turn(model: MorphableModel, corr: Any, video: list[Any], refine: bool = True,
                  options: Any = None, fps: float = 30.0) -> dict[str, Any]:
    """Replays the tracked head-turn video through the app's stages: fit, then the identity refinement
    stage with its jobs run synchronously at the frames where the app hands them to its worker (the app
    adopts each result a few seconds of stream later). Returns the landmark lock, the final identity,
    the adopted results, the fit stage's ms per frame after the last adoption."""
    from realtime.identity_refine import IdentityRefiner, IdentityRefineStage, SyncExecutor

    intr = Intrinsics.from_fov(640, 480, 55.0)
    fit = FitStage(model, corr, IntrinsicsResolver(intr), FitOptions())
    stage = None
    if refine:
        opts = options
        photo = getattr(opts, "photo", None)
        stage = IdentityRefineStage(fit, SyncExecutor(IdentityRefiner(model, corr, photo)), opts)
    landmark: np.ndarray | None = None
    cpu_ms: dict[str, list[float]] = {"landmark lock": [], "refined lock": []}
    for f, (image, track) in enumerate(video):
        r = FrameResult(Frame(image, f, f / fps, 0.0))
        if track is not None:
            r.faces.append(FaceResult(track))
        phase = None
        if fit.fitters and fit.fitters[0].identity_locked and not fit.fitters[0].identity_verifying:
            phase = "refined lock" if stage is not None and stage.adopted else "landmark lock"
        c0 = time.thread_time()
        fit.process(r)
        if phase is not None and r.faces:
            cpu_ms[phase].append((time.thread_time() - c0) * 1e3)
        if stage is not None:
            stage.process(r)
        fitter = fit.fitters[0] if fit.fitters else None
        if fitter is not None and landmark is None and fitter.identity_locked:
            landmark = fitter.reid_reference
    fitter = fit.fitters[0] if fit.fitters else None
    final = fitter.identity if fitter is not None and fitter.identity_locked else None
    return {"landmark": landmark, "final": final, "adopted": list(stage.adopted) if stage else [],
            "rejected": list(stage.rejected) if stage else [], "cpu_ms": cpu_ms}


def shape_error(model: MorphableModel, identity: np.ndarray, truth_identity: np.ndarray,
                scale: bool = False) -> float:
    """Mean per-vertex distance (mm, face area) after rigid alignment (``scale``: similarity alignment, the
    size error left out), neutral expression."""
    fa = model.face_area_vertices
    truth = model.shape(truth_identity)[:fa].astype(np.float64)
    pred = model.shape(np.asarray(identity, np.float32))[:fa].astype(np.float64)
    aligned = rigid_align(pred, truth)
    if scale:
        c, tc = aligned.mean(axis=0), truth.mean(axis=0)
        k = float(((aligned - c) * (truth - tc)).sum() / ((aligned - c) ** 2).sum())
        aligned = c + k * (aligned - c)
    return float(np.linalg.norm(aligned - truth, axis=1).mean())


def head_turn_sequence(rep: Report, model: MorphableModel, corr: Any, seed: int, frames: int = 120,
                       refine: bool = True) -> None:
    """Locked identity on the head-turn video: the landmark lock, the lock refined in the background
    (``realtime.identity_refine``, as ``realtime-face run`` does; jobs run synchronously here), mean face."""
    truth_id, video = render_head_turn(model, seed, frames)
    sec = f"head-turn sequence ({frames} frames, seed {seed})"
    fa = model.face_area_vertices
    truth = model.shape(truth_id)[:fa].astype(np.float64)
    mean = model.mean_mm[:fa].astype(np.float64)
    base = float(np.linalg.norm(rigid_align(mean, truth) - truth, axis=1).mean())
    t0 = time.perf_counter()
    run = run_head_turn(model, corr, video, refine=refine)
    wall = time.perf_counter() - t0
    if run["landmark"] is None or run["final"] is None:
        rep.add(sec, "locked identity error (NOT LOCKED)", math.nan, base, "mean face", "≤ 2.0 (goal 1.2)",
                "mm", frames)
        return
    rep.add(sec, "locked identity error, landmark lock", shape_error(model, run["landmark"], truth_id), base,
            "mean face", "≤ 2.0 (goal 1.2)", "mm", frames)
    if not refine:
        return
    for r in run["adopted"]:
        log.info("adopted at frame > %d (%s, %.1f s): %.2f mm", r.frame_index, "+".join(r.slots),
                 r.elapsed_ms / 1e3, shape_error(model, r.identity, truth_id))
    rep.add(sec, "locked identity error, refined lock (final)", shape_error(model, run["final"], truth_id), base,
            "mean face", "≤ 2.0 (goal 1.2)", "mm", frames)
    rep.add(sec, "  the same after a similarity alignment (size error left out)",
            shape_error(model, run["final"], truth_id, scale=True), shape_error(model, run["landmark"], truth_id,
                                                                               scale=True),
            "landmark lock, same alignment", "diagnostic", "mm", frames)
    views = "+".join(run["adopted"][-1].slots) if run["adopted"] else "none"
    rep.add(sec, f"refinement jobs adopted (last: {views}; {len(run['rejected'])} rejected)",
            float(len(run["adopted"])), None, "", "", "jobs")
    if run["adopted"]:
        rep.add(sec, "refinement job time, mean (worker, one core)",
                float(np.mean([r.elapsed_ms for r in run["adopted"]])) / 1e3, None, "", "off the hot path", "s")
    ms = run["cpu_ms"]
    if ms["refined lock"] and ms["landmark lock"]:
        rep.add(sec, "fit CPU ms/frame with the refined identity (median)", float(np.median(ms["refined lock"])),
                float(np.median(ms["landmark lock"])), "landmark lock, same run", "≤ 3", "ms",
                len(ms["refined lock"]))
    log.info("sequence replay with refinement: %.0f s", wall)


def head_turn_sequences(rep: Report, model: MorphableModel, corr: Any, seeds: list[int], refine: bool) -> None:
    for seed in seeds:
        head_turn_sequence(rep, model, corr, seed, refine=refine)


def talking_video(rep: Report, model: MorphableModel, corr: Any, video: Path,
                  smoothing: SmoothingOptions) -> None:
    import av

    from realtime.landmarks import FaceMeshTracker

    mp68 = mediapipe68(model, corr)
    fa_sub = np.arange(0, model.face_area_vertices, 4)
    raw_v, sm_v, raw68, sm68, mp_68, fit_ms, locked_ms = [], [], [], [], [], [], []
    locked_flags: list[bool] = []
    tracks = []
    stage_fit: FitStage | None = None
    stage_sm: SmoothingStage | None = None
    with av.open(str(video)) as container, FaceMeshTracker(max_faces=1, static=False) as tr:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            img = frame.to_ndarray(format="rgb24")
            if stage_fit is None:
                resolver = IntrinsicsResolver()
                stage_fit = FitStage(model, corr, resolver, FitOptions())
                stage_sm = SmoothingStage(model, resolver, smoothing)
            t = float(frame.time) if frame.time is not None else i / 30.0
            r = FrameResult(frame=Frame(img, i, t, 0.0), faces=[FaceResult(track=x) for x in tr.track(img)])
            if not r.faces:
                continue
            stage_fit.process(r)
            fit = r.faces[0].fit
            assert fit is not None and stage_sm is not None
            fit_ms.append(r.timings_ms["fit"])
            tracks.append(r.faces[0].track)
            locked_flags.append(bool(fit.identity_locked))
            if fit.identity_locked:
                locked_ms.append(r.timings_ms["fit"])
            raw_v.append(fit.vertices_mm[fa_sub].astype(np.float64))
            raw68.append(fit.landmarks68_px.astype(np.float64))
            mp_68.append(r.faces[0].track.landmarks_px[mp68, :2].astype(np.float64))
            stage_sm.process(r)
            sfit = r.faces[0].fit
            assert sfit is not None
            sm_v.append(sfit.vertices_mm[fa_sub].astype(np.float64))
            sm68.append(sfit.landmarks68_px.astype(np.float64))
    sec = f"talking_720p.mp4 ({len(raw_v)} frames)"
    locked = np.array(locked_flags)
    first = int(np.argmax(locked)) if locked.any() else len(locked)
    for label, sl in (("identity locked", slice(first, None)), ("all frames incl. the lock", slice(None))):
        jr, js = second_diff_rms(np.array(raw_v[sl])), second_diff_rms(np.array(sm_v[sl]))
        n = len(raw_v[sl])
        rep.add(sec, f"mesh jitter (2nd-diff RMS), smoothed, {label}", js, jr, "raw per-frame fit",
                "≥ 3× lower than raw", "mm", n)
        rep.add(sec, f"jitter reduction raw/smoothed, {label}", jr / js if js > 0 else math.nan, 1.0,
                "no smoothing", "≥ 3", "×", n)
    lk = slice(first, None)
    rep.add(sec, "68-landmark jitter, smoothed fit (no look-ahead), locked", second_diff_rms(np.array(sm68[lk])),
            second_diff_rms(np.array(mp_68[lk])), "raw MediaPipe 68-subset", "goal ≤ 2.0", "px", len(sm68[lk]))
    rep.add(sec, "68-landmark jitter, raw fit, locked", second_diff_rms(np.array(raw68[lk])),
            second_diff_rms(np.array(mp_68[lk])), "raw MediaPipe 68-subset", "", "px", len(raw68[lk]))
    # CPU time of the fitting thread (one core), immune to other processes competing for the cores.
    fitter = FaceFitter(model, corr, Intrinsics.from_fov(1280, 720), FitOptions())
    cpu_ms = []
    for track in tracks:
        c0 = time.thread_time()
        fit = fitter.fit(track)
        if fit.identity_locked:
            cpu_ms.append((time.thread_time() - c0) * 1e3)
    rep.add("speed", "fit CPU ms/frame, identity locked, one core (median)", float(np.median(cpu_ms)), None,
            "", "≤ 3", "ms", len(cpu_ms))
    rep.add("speed", "fit CPU ms/frame, identity locked, one core (p95)", float(np.percentile(cpu_ms, 95)),
            None, "", "", "ms", len(cpu_ms))
    rep.add("speed", "fit wall ms/frame, identity locked (median)", float(np.median(locked_ms)), None,
            "", "≤ 3", "ms", len(locked_ms))
    rep.add("speed", "fit wall ms/frame, all frames incl. identity estimation (median)",
            float(np.median(fit_ms)), None, "", "", "ms", len(fit_ms))


def step_response(rep: Report, smoothing: SmoothingOptions) -> None:
    from realtime.synthetic import pose_from_euler

    def frames_to_90(kind: str) -> int:
        sm = PoseExpressionSmoother(smoothing)
        p0 = pose_from_euler(0.0, 0.0, 0.0, 600.0)
        e0 = np.zeros(53)
        for i in range(30):
            sm(i / 30.0, p0.rotation, p0.translation_mm, e0)
        p1 = pose_from_euler(20.0, 0.0, 0.0, 600.0) if kind == "rotation" else p0
        if kind == "translation":
            p1 = pose_from_euler(0.0, 0.0, 0.0, 600.0, (50.0, 0.0))
        e1 = e0.copy()
        if kind == "expression":
            e1[10] = 1.0
        for k in range(1, 30):
            r, t, e = sm((29 + k) / 30.0, p1.rotation, p1.translation_mm, e1)
            if kind == "expression":
                reached = e[10] >= 0.9
            elif kind == "translation":
                reached = t[0] - p0.translation_mm[0] >= 45.0
            else:
                ang = math.degrees(math.acos(float(np.clip((np.trace(r @ p0.rotation.T) - 1) / 2, -1, 1))))
                reached = ang >= 18.0
            if reached:
                return k
        return 99

    rep.add("step response", "frames to 90 %, expression step 0→1", frames_to_90("expression"), None, "",
            "≤ 2", "frames")
    rep.add("step response", "frames to 90 %, 20° head-turn step", frames_to_90("rotation"), None, "", "≤ 2",
            "frames")
    rep.add("step response", "frames to 90 %, 50 mm sideways step", frames_to_90("translation"), None, "",
            "≤ 2", "frames")


def photos(rep: Report, model: MorphableModel, corr: Any, images: Path) -> None:
    import cv2

    from realtime.landmarks import FaceMeshTracker

    mp68 = mediapipe68(model, corr)
    nme, base = [], []
    with FaceMeshTracker(max_faces=1, static=True) as tr:
        for pts in sorted(images.glob("*.pts")):
            img = cv2.imread(str(pts.with_suffix(".jpg")))[..., ::-1].copy()
            gt = read_pts(pts)
            box = float(np.sqrt(np.prod(gt.max(axis=0) - gt.min(axis=0))))
            tracks = tr.track(img)
            if not tracks:
                nme.append(math.nan)
                continue
            h, w = img.shape[:2]
            fit = FaceFitter(model, corr, Intrinsics.from_fov(w, h), SINGLE_IMAGE).fit(tracks[0])
            nme.append(float(np.linalg.norm(fit.landmarks68_px - gt, axis=1).mean()) / box)
            base.append(float(np.linalg.norm(tracks[0].landmarks_px[mp68, :2] - gt, axis=1).mean()) / box)
    rep.add(f"photos ({len(nme)})", "2D 68-landmark NME (bbox), fit", 100 * float(np.nanmean(nme)),
            100 * float(np.mean(base)), "MediaPipe's own 68-subset", "goal ≤ 4", "%", len(nme))


def end_to_end(rep: Report, video: Path) -> None:
    from realtime.capture import open_source
    from realtime.cli.reconstruct import fit_stages_from_args
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline

    args = argparse.Namespace(fov=None, calibration=None, no_fit=False, no_smooth=False, smooth_rotation=None,
                              smooth_translation=None, smooth_expression=None)
    # Tracking alone right before, on the same machine state: the baseline the fit stages add to.
    with Pipeline(open_source(video=str(video)), [LandmarkStage(max_faces=1)], []) as pipe:
        tracking_only = pipe.run()
    stages = [LandmarkStage(max_faces=1), *fit_stages_from_args(args)]
    with Pipeline(open_source(video=str(video)), stages, []) as pipe:
        stats = pipe.run()
    rep.add("speed", "tracking+fitting+smoothing end-to-end FPS, 720p", stats.fps, tracking_only.fps,
            "tracking alone", "≥ 90", "FPS", stats.frames)
    for name in ("landmarks", "fit", "smooth"):
        if name in stats.stages:
            rep.add("speed", f"stage '{name}' in the pipeline (median)", stats.stages[name].median_ms, None,
                    "", "", "ms", stats.stages[name].count)


def calibrate_iris(rep: Report, model: MorphableModel, n: int, seed: int) -> None:
    """What MediaPipe's iris ring chords measure on the generator's 11.7 mm iris (FitOptions.iris_chords_mm):
    each observed chord divided by its foreshortened, perspective-scaled unit length at the true depth."""
    from realtime.facemodel import eye_rig
    from realtime.fitting import iris_chords_px
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    rig = eye_rig(model)
    implied: list[tuple[float, float]] = []
    edges: list[float] = []   # the image-measured limbus (realtime.iris), NaN where not measured
    with SyntheticGenerator(model, 512, 512, seed=seed) as gen, \
            FaceMeshTracker(max_faces=1, static=True) as tr:
        for _ in range(n):
            s = gen.sample()
            tracks = tr.track(s.image)
            if not tracks:
                continue
            chords = iris_chords_px(tracks[0].landmarks_px)
            rot = s.pose.rotation
            fore = np.hypot(rot[0, :2], rot[1, :2])
            centres = rig.centres(model.shape(s.identity).astype(np.float64))
            for e in range(2):
                q = rot @ (centres[e] + [0.0, 0.0, rig.iris_depth_mm]) + s.pose.translation_mm
                unit = s.intrinsics.fx / q[2] * fore
                implied.append((chords[e, 0] / unit[0], chords[e, 1] / unit[1]))
                edge = tracks[0].iris_diameter_px
                edges.append(float(edge[e]) / unit[0] if edge is not None else math.nan)
    a = np.array(implied)
    ed = np.array(edges)
    ok = ed[np.isfinite(ed)]
    sec = f"iris calibration ({len(a)} eyes, seed {seed})"
    for k, name in enumerate(("horizontal 469-471", "vertical 470-472")):
        rep.add(sec, f"MediaPipe ring chord {name}: median", float(np.median(a[:, k])), 11.7, "true iris",
                "→ FitOptions.iris_chords_mm", "mm", len(a))
        rep.add(sec, f"MediaPipe ring chord {name}: sd", float(a[:, k].std()), None, "",
                "→ FitOptions.iris_chords_sd_mm", "mm", len(a))
        rep.add(sec, f"MediaPipe ring chord {name}: robust sd (1.4826 MAD)",
                float(1.4826 * np.median(np.abs(a[:, k] - np.median(a[:, k])))), None, "", "", "mm", len(a))
    if ok.size:
        rep.add(sec, "image limbus diameter (realtime.iris): median", float(np.median(ok)), 11.7, "true iris",
                "→ FitOptions.iris_edge_mm", "mm", len(ok))
        rep.add(sec, "image limbus diameter: sd", float(ok.std()), None, "", "", "mm", len(ok))
        rep.add(sec, "image limbus diameter: robust sd (1.4826 MAD)",
                float(1.4826 * np.median(np.abs(ok - np.median(ok)))), None, "", "", "mm", len(ok))
        rep.add(sec, "image limbus diameter: eyes measured", 100.0 * ok.size / max(ed.size, 1), None, "",
                "", "%", ed.size)


# --- main --------------------------------------------------------------------------------------------------

def print_table(rep: Report) -> None:
    section = None
    for r in rep.rows:
        if r.section != section:
            section = r.section
            print(f"\n{section}")
        base = f"{r.baseline:8.2f}  ({r.baseline_name})" if r.baseline is not None else ""
        print(f"  {r.metric:<58} {r.value:8.2f} {r.unit:<6} | baseline {base:<40} target {r.target}"
              + (f"  n={r.n}" if r.n else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="synthetic renders (default 200)")
    p.add_argument("--seed", type=int, default=2026,
                   help="seed of the synthetic set (not the correspondence's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--calibrate-iris", action="store_true",
                   help="only measure MediaPipe's iris ring chords on renders (seed 7, --n renders)")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["synthetic", "photometric", "one-sided", "sequence", "video", "step", "photos", "speed"],
                   help="sections to leave out ('photometric': the reconstruct rows of the synthetic set, "
                        "≈ 1.5 s per render)")
    p.add_argument("--one-sided", type=int, default=120, help="renders of the one-sided set (default 120)")
    p.add_argument("--sequence-seeds", type=int, nargs="*", default=None, metavar="SEED",
                   help="seeds of the head-turn sequence (default: --seed)")
    p.add_argument("--no-identity-refine", action="store_true",
                   help="head-turn sequence: the landmark lock only (no photometric identity refinement)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    model = load_face_model()
    corr = load_correspondence(model)
    smoothing = SmoothingOptions()
    shared = shared_dir()
    video = shared / "data" / "videos" / "talking_720p.mp4"
    rep = Report()
    if args.calibrate_iris:
        calibrate_iris(rep, model, args.n, 7)
        print(json.dumps([r.__dict__ for r in rep.rows], indent=1) if args.json else "", end="")
        if not args.json:
            print_table(rep)
        return 0
    steps = [
        ("synthetic", lambda: synthetic_set(rep, model, corr, args.n, args.seed,
                                            photometric="photometric" not in args.skip)),
        ("one-sided", lambda: one_sided_set(rep, model, corr, args.one_sided, args.seed)),
        ("sequence", lambda: head_turn_sequences(rep, model, corr, args.sequence_seeds or [args.seed],
                                                 refine=not args.no_identity_refine)),
        ("video", lambda: talking_video(rep, model, corr, video, smoothing)),
        ("step", lambda: step_response(rep, smoothing)),
        ("photos", lambda: photos(rep, model, corr, shared / "data" / "images")),
        ("speed", lambda: end_to_end(rep, video)),
    ]
    for name, fn in steps:
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        log.info("%s ...", name)
        fn()
        log.info("%s done in %.0f s", name, time.perf_counter() - t0)
    if args.json:
        print(json.dumps([r.__dict__ for r in rep.rows], indent=1))
    else:
        print_table(rep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
