"""Cheek puff from the video's shading (report time).

Why this exists: MediaPipe's landmarks do not follow a cheek puff. On the synthetic right-palsy patient
(``tools/bench_clinical.py``, still head) a full left puff (8.6 mm outward on the cheek patch) moves the
cheek and contour landmarks by less than 1 px on a 512 px video, so the live fit reads ``cheekPuff`` at
0.2 of 1.0 on the healthy side and 0.01 of 0.3 on the weak one. The inflated cheek does change the image:
its shading and outline. At report time, for the frames of the ``cheek_puff`` exercise, this module
re-estimates the two ``cheekPuff`` weights by analysis by synthesis against the recorded video
(:class:`realtime.refine.photometric.PhotometricFitter`, with the two blendshapes as the only shape
coefficients and the live fit's pose, identity and other expression weights as the start).

First the person's neutral face (the landmark lock's identity) is refined against a few neutral frames of the
session spread over its head yaw (:func:`refine_neutral_face`): otherwise the two cheek blendshapes explain the
neutral face's own shading error, which changes as the head turns. The estimate still has a small bias that
depends on the person and on the head pose (a neutral cheek can read slightly puffed or hollow: on the
synthetic patient −0.1 to 0, changing by up to 0.016 per degree of yaw). It is therefore calibrated on the same
session's *neutral* frames (the ``rest`` exercise and the relaxed phases around the cheek-puff
repetitions): per side, bias = a + b·yaw + c·pitch by least squares with a ridge on the slopes, and each
cheek-puff frame's weight is the live rest value plus its estimate minus the predicted bias. The
recording itself is never changed; the report states how the cheek puff was measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from realtime.camera import Intrinsics
from realtime.clinical.metrics import HOLD_PHASE, REST_EXERCISE, SessionSeries
from realtime.correspondence import Correspondence, load_correspondence
from realtime.facemodel import MorphableModel
from realtime.fitting import MeshBuilder
from realtime.refine.photometric import PhotoFitOptions, PhotometricFitter, PhotoView

log = logging.getLogger(__name__)

CHEEK_EXERCISE = "cheek_puff"
CHEEK_SHAPES = ("cheekPuff_L", "cheekPuff_R")
"""Re-estimated blendshapes, in (left, right) order."""
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CheekEvidenceOptions:
    frames_per_repetition: int = 10
    """Hold frames measured per repetition (evenly spread; the others are interpolated)."""
    neutral_frames: int = 24
    """Neutral frames measured for the bias calibration (evenly spread over the candidates)."""
    settle_s: float = 0.5
    """The first part of a rest phase is skipped: the face is still relaxing from the exercise."""
    min_neutral_frames: int = 4
    identity_views: int = 8
    """Neutral frames (spread over the session's head yaw) on which the person's neutral face is refined
    against the video before the cheeks are measured; 0 keeps the landmark lock."""
    identity_photo: PhotoFitOptions = field(default_factory=lambda: PhotoFitOptions(identity_sigma=0.25))
    """The neutral-face refinement's settings (identity prior width relative to the landmark lock)."""
    slope_sigma_per_deg: float = 0.02
    """Prior scale of the bias's yaw/pitch slopes (weights per degree; measured on the synthetic patient:
    0.01-0.035). With ``bias_sigma`` it is a ridge worth 25 frames·deg²: the slopes are learned only when
    the neutral frames span a range of head poses (24 frames over ±10° outweigh it fifty-fold), otherwise
    the bias is a constant and nothing is extrapolated."""
    bias_sigma: float = 0.1
    """Expected scatter of the neutral estimates (weights), the scale the ridge is relative to."""
    photo: PhotoFitOptions = field(default_factory=lambda: PhotoFitOptions(
        iterations=8, face_px=320, max_vertices=1500, identity_sigma=1.0, pose_iterations=3))
    """The analysis-by-synthesis settings. No landmark anchor is used (they do not see the puff and pull
    it back to zero: p90 weights 0.74 / 0.14 with them vs 1.02 / 0.33 without, truth 1.0 / 0.3)."""


@dataclass(frozen=True)
class FrameParams:
    """One frame's image and live-fit parameters (model space → camera space)."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    expression: np.ndarray
    rotation: np.ndarray
    translation_mm: np.ndarray


class CheekPuffEstimator:
    """Raw per-frame (left, right) cheek-puff weights of one person from the image's shading."""

    def __init__(self, model: MorphableModel, identity: np.ndarray | None, intrinsics: Intrinsics,
                 correspondence: Correspondence | None = None,
                 options: CheekEvidenceOptions | None = None) -> None:
        self.model = model
        self.options = options or CheekEvidenceOptions()
        self.intrinsics = intrinsics
        names = model.expression_names
        missing = [n for n in CHEEK_SHAPES if n not in names]
        if missing:
            raise ValueError(f"face model {model.name} has no {missing[0]} blendshape")
        self.index = np.array([names.index(n) for n in CHEEK_SHAPES])
        ident = np.zeros(model.n_identity, np.float32) if identity is None else np.asarray(identity, np.float32)
        self.identity = ident
        # The photometric fitter refines "identity" coefficients of a linear shape basis around a mean; here
        # the mean is this person's neutral face and the basis the two cheek-puff blendshapes.
        person = replace(model, mean_mm=model.shape(ident).astype(np.float32),
                         identity_basis_mm=np.ascontiguousarray(model.expression_basis_mm[self.index]))
        corr = correspondence if correspondence is not None else load_correspondence(model)
        self._fitter = PhotometricFitter(person, corr, self.options.photo)
        self._mesher = MeshBuilder(person)

    def estimate(self, frame: FrameParams) -> np.ndarray:
        """(left, right) weights, not clipped: a neutral cheek can read slightly negative."""
        expr = np.asarray(frame.expression, np.float32).copy()
        expr[self.index] = 0.0
        zero = np.zeros(2)
        fit = self._mesher.make_fit(self.intrinsics, zero, expr, np.asarray(frame.rotation, np.float64),
                                    np.asarray(frame.translation_mm, np.float64), 0.0, 1.0, True)
        res = self._fitter.fit([PhotoView(frame.image, self.intrinsics, fit, None)], identity=zero,
                               prior_centre=zero)
        return np.asarray(res.identity, np.float64)


@dataclass(frozen=True)
class BiasCalibration:
    """Per side (left, right): bias = coef[0] + coef[1]·(yaw − yaw0) + coef[2]·(pitch − pitch0)."""

    coef: np.ndarray
    """(2, 3)"""
    centre_deg: tuple[float, float]
    residual_sd: np.ndarray
    """(2,) scatter of the neutral estimates around the calibration."""
    n: int

    def bias(self, yaw_deg: np.ndarray, pitch_deg: np.ndarray) -> np.ndarray:
        """(n, 2) predicted bias."""
        a = _design(np.asarray(yaw_deg, np.float64), np.asarray(pitch_deg, np.float64), self.centre_deg)
        return np.asarray(a @ self.coef.T)


def _design(yaw: np.ndarray, pitch: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    return np.stack([np.ones_like(yaw), yaw - centre[0], pitch - centre[1]], axis=1)


def calibrate_bias(raw: np.ndarray, yaw_deg: np.ndarray, pitch_deg: np.ndarray,
                   options: CheekEvidenceOptions | None = None) -> BiasCalibration:
    """Fit the neutral frames' raw estimates (n, 2) against head pose (ridge on the slopes)."""
    o = options or CheekEvidenceOptions()
    raw = np.asarray(raw, np.float64)
    yaw, pitch = np.asarray(yaw_deg, np.float64), np.asarray(pitch_deg, np.float64)
    centre = (float(np.mean(yaw)), float(np.mean(pitch)))
    a = _design(yaw, pitch, centre)
    ridge = np.diag([0.0, 1.0, 1.0]) * (o.bias_sigma / o.slope_sigma_per_deg) ** 2
    coef = np.linalg.solve(a.T @ a + ridge, a.T @ raw).T
    resid: np.ndarray = raw - a @ coef.T
    return BiasCalibration(coef, centre, resid.std(axis=0), len(raw))


# ------------------------------------------------------------------------------------------- sessions
@dataclass(frozen=True)
class CheekRefinement:
    series: SessionSeries
    """A copy of the input series with the cheek-puff frames' two weights replaced."""
    frames_measured: int
    neutral_frames: int
    residual_sd: tuple[float, float]
    seconds: float
    identity_views: int = 0
    """Neutral frames the person's neutral face was refined on (0: the landmark lock was used)."""
    identity_rms: tuple[float, float] = (0.0, 0.0)
    """Colour residual (grey levels) of those frames with the landmark lock / the refined neutral face."""

    @property
    def source(self) -> str:
        face = (f"neutral face refined on {self.identity_views} neutral frames, colour residual "
                f"{self.identity_rms[0]:.1f} → {self.identity_rms[1]:.1f} grey; " if self.identity_views else "")
        return (f"the video's shading ({self.frames_measured} cheek-puff frames; {face}bias calibrated on "
                f"{self.neutral_frames} neutral frames, scatter {self.residual_sd[0]:.2f} / "
                f"{self.residual_sd[1]:.2f} left / right)")


def _spread(rows: np.ndarray, k: int) -> np.ndarray:
    if len(rows) <= k:
        return rows
    return rows[np.unique(np.round(np.linspace(0, len(rows) - 1, k)).astype(np.int64))]


def _neutral_rows(series: SessionSeries, o: CheekEvidenceOptions, limit: int | None = None) -> np.ndarray:
    """Settled neutral rows, ``limit`` (default ``o.neutral_frames``) of them spread over the session."""
    assert series.exercise is not None and series.phase is not None
    ex = np.asarray(series.exercise).astype(str)
    ph = np.asarray(series.phase).astype(str)
    t = np.asarray(series.timestamp_s, np.float64)
    rest_hold = (ex == REST_EXERCISE) & (ph == HOLD_PHASE)
    relaxed = (ex == CHEEK_EXERCISE) & (ph != HOLD_PHASE)
    # time since the phase began: the first frames of a rest phase still carry the exercise
    start = np.r_[0, np.flatnonzero((ph[1:] != ph[:-1]) | (ex[1:] != ex[:-1])) + 1]
    began = t[start[np.searchsorted(start, np.arange(len(t)), side="right") - 1]]
    settled = (t - began) >= o.settle_s
    rows = np.flatnonzero((rest_hold | (relaxed & settled)) & series.valid)
    return _spread(rows, o.neutral_frames if limit is None else limit)


def _identity_rows(series: SessionSeries, o: CheekEvidenceOptions) -> np.ndarray:
    """``o.identity_views`` neutral rows evenly spread over the session's range of head yaw."""
    if o.identity_views <= 0 or series.yaw_deg is None:
        return np.zeros(0, np.int64)
    rows = _neutral_rows(series, o, limit=len(series.valid))
    return _spread(rows[np.argsort(series.yaw_deg[rows], kind="stable")], o.identity_views)


def refine_neutral_face(model: MorphableModel, correspondence: Correspondence, identity: np.ndarray | None,
                        intrinsics: Intrinsics, frames: list[FrameParams],
                        options: CheekEvidenceOptions | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """The person's identity refined against neutral frames of the session (analysis by synthesis, all views
    jointly, each frame's live pose as the start), rescaled to the landmark lock's size (the iris scale:
    shading cannot tell size from distance). Returns it and the colour residual before / after (grey).

    Why: the cheek estimate explains whatever shading the neutral face model gets wrong. With the landmark
    lock, the synthetic patient's neutral frames read a right-cheek "puff" that changes by 0.02-0.03 per
    degree of yaw, which the bias calibration cannot fully remove when the head moves (``docs/clinical.md``).
    """
    from realtime.identity_refine import IdentityRefiner

    o = options or CheekEvidenceOptions()
    start = np.zeros(model.n_identity) if identity is None else np.asarray(identity, np.float64)
    refiner = IdentityRefiner(model, correspondence, o.identity_photo)
    mesher = MeshBuilder(model)
    views = [PhotoView(f.image, intrinsics,
                       mesher.make_fit(intrinsics, start, np.asarray(f.expression, np.float64),
                                       np.asarray(f.rotation, np.float64), np.asarray(f.translation_mm, np.float64),
                                       0.0, 1.0, True), None)
             for f in frames]
    refined, _, res = refiner.refine_views(views, start)
    return refined, (float(res.photometric_rms[0]), float(res.photometric_rms[1]))


def _read_frames(video: Path, wanted: dict[int, int]) -> dict[int, np.ndarray]:
    """RGB images of the wanted video frame numbers (video frame → series row)."""
    import av

    out: dict[int, np.ndarray] = {}
    last = max(wanted)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                out[wanted[i]] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return out


def refine_cheek_puff(series: SessionSeries, session_dir: str | Path, model: MorphableModel,
                      correspondence: Correspondence | None = None,
                      options: CheekEvidenceOptions | None = None,
                      progress: Progress | None = None) -> CheekRefinement | None:
    """Re-estimate the cheek-puff exercise's ``cheekPuff_L/R`` weights from a session folder's video.

    None when there is nothing to do or no way to do it (no cheek-puff frames, no video, no head pose or
    intrinsics in the recording, too few neutral frames); the reason is logged.
    """
    from realtime.session.loader import load_session

    o = options or CheekEvidenceOptions()
    t0 = time.perf_counter()
    if series.exercise is None or series.phase is None:
        return None
    ex = np.asarray(series.exercise).astype(str)
    ph = np.asarray(series.phase).astype(str)
    hold = (ex == CHEEK_EXERCISE) & (ph == HOLD_PHASE) & series.valid
    if not hold.any():
        return None
    if (series.rotation is None or series.translation_mm is None or series.video_frame is None
            or series.yaw_deg is None or series.pitch_deg is None):
        log.info("cheek puff: the session table has no head pose or video frame numbers; live fit kept")
        return None
    rotation, translation = series.rotation, series.translation_mm
    session = load_session(session_dir)
    intr = session.intrinsics
    if session.video_path is None or not session.video_path.exists() or intr is None:
        log.info("cheek puff: no video or intrinsics in %s; live fit kept", session_dir)
        return None
    neutral = _neutral_rows(series, o)
    id_rows = _identity_rows(series, o)
    rep = np.asarray(series.repetition if series.repetition is not None else np.zeros(len(ex)), np.int64)
    measured: list[np.ndarray] = []
    for r in np.unique(rep[hold]):
        measured.append(_spread(np.flatnonzero(hold & (rep == r)), o.frames_per_repetition))
    hold_rows = np.concatenate(measured)
    rows = np.concatenate([neutral, hold_rows, id_rows])
    vf = series.video_frame
    wanted = {int(vf[i]): int(i) for i in rows if vf[i] >= 0}
    if len(neutral) < o.min_neutral_frames or not wanted:
        log.info("cheek puff: %d neutral frames (need %d); live fit kept", len(neutral), o.min_neutral_frames)
        return None
    images = _read_frames(session.video_path, wanted)

    def params(i: int) -> FrameParams:
        return FrameParams(images[i], series.expression[i], rotation[i], translation[i])

    corr = correspondence if correspondence is not None else load_correspondence(model)
    identity = series.session_identity()
    id_frames = [params(int(i)) for i in id_rows if int(i) in images]
    id_rms = (0.0, 0.0)
    if len(id_frames) >= 2:
        if progress is not None:
            progress("refining the neutral face", 0, 1)
        identity, id_rms = refine_neutral_face(model, corr, identity, intr, id_frames, o)
        log.info("cheek puff: neutral face refined on %d frames, colour residual %.2f -> %.2f grey",
                 len(id_frames), *id_rms)
        if progress is not None:
            progress("refining the neutral face", 1, 1)
    else:
        id_frames = []
    est = CheekPuffEstimator(model, identity, intr, corr, o)
    measure = [int(i) for i in np.concatenate([neutral, hold_rows])]
    raw: dict[int, np.ndarray] = {}
    for k, i in enumerate(measure, start=1):
        if progress is not None:
            progress("measuring cheek puff", k, len(measure))
        if i in images:
            raw[i] = est.estimate(params(i))
    n_rows = [int(i) for i in neutral if int(i) in raw]
    if len(n_rows) < o.min_neutral_frames:
        log.info("cheek puff: only %d neutral frames could be read; live fit kept", len(n_rows))
        return None
    yaw, pitch = series.yaw_deg, series.pitch_deg
    cal = calibrate_bias(np.array([raw[i] for i in n_rows]), yaw[n_rows], pitch[n_rows], o)
    rest_level = np.median(series.expression[n_rows][:, est.index], axis=0)
    expr = np.array(series.expression, copy=True)
    h_rows = np.array([int(i) for i in hold_rows if int(i) in raw], np.int64)
    values = (np.array([raw[int(i)] for i in h_rows]) - cal.bias(yaw[h_rows], pitch[h_rows]) + rest_level)
    values = np.clip(values, 0.0, 1.0)
    # every hold frame of a repetition gets the values interpolated between its measured frames
    for r in np.unique(rep[hold]):
        seg = np.flatnonzero(hold & (rep == r))
        have = np.isin(h_rows, seg)
        if not have.any():
            continue
        for s in range(2):
            expr[seg, est.index[s]] = np.interp(seg, h_rows[have], values[have, s])
    out = replace(series, expression=expr)
    return CheekRefinement(out, len(h_rows), len(n_rows),
                           (float(cal.residual_sd[0]), float(cal.residual_sd[1])), time.perf_counter() - t0,
                           len(id_frames), id_rms)
