"""Clinical facial-palsy metrics on the 3D model mesh, per side, in millimetres.

Every metric is computed on ``model.shape(identity, expression)`` in model space, i.e. on the posed-free
mesh: the head pose the fitter estimated is never applied, so turning or tilting the head cannot change a
measurement. The metric scale is the fitter's (iris-based) millimetre scale. Formulas and their clinical
sources (Sunnybrook, eFACE, Emotrics) are written down in ``docs/clinical.md``; the names used here match
that document.

Pipeline: :class:`SessionSeries` (per-frame parameters and protocol labels, usually from a recorded
session's Parquet table) → :func:`analyse_session` → :class:`ClinicalAnalysis` (per-exercise and
per-repetition left/right values, per-region symmetry, affected side with a confidence statement,
synkinesis indicators), which :mod:`realtime.clinical.report` turns into HTML/JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from realtime.clinical.eyes import (
    EYE_LANDMARK_IDS,
    EyeClosureEvent,
    closure_from_aperture,
    detect_eye_closures,
    eye_aperture,
)
from realtime.clinical.regions import SIDES, FaceRegions, build_regions
from realtime.errors import BadInputError
from realtime.facemodel import MorphableModel

log = logging.getLogger(__name__)

REST_EXERCISE = "rest"
HOLD_PHASE = "hold"
LIVE_CHEEK_SOURCE = "the live fit (MediaPipe landmarks)"
PEAK_PERCENTILE = 90.0
"""A repetition's value is this percentile of the per-frame values during its hold phase: robust to a
single mis-fitted frame, yet close to the maximum the subject reached."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    title: str
    unit: str
    floor: float
    """Movement below this (on both sides) is treated as 'no movement': no symmetry ratio is formed."""


METRICS: dict[str, MetricSpec] = {m.name: m for m in (
    MetricSpec("brow_elevation_mm", "Brow elevation", "mm", 1.0),
    MetricSpec("fissure_mm", "Palpebral fissure height", "mm", 0.0),
    MetricSpec("eye_closure", "Eye-closure completeness", "fraction", 0.1),
    MetricSpec("commissure_excursion_mm", "Oral commissure excursion", "mm", 1.0),
    MetricSpec("smile_angle_deg", "Smile angle", "deg", 0.0),
    MetricSpec("smile_angle_change_deg", "Smile angle change", "deg", 2.0),
    MetricSpec("upper_lip_elevation_mm", "Upper-lip elevation", "mm", 0.8),
    MetricSpec("lower_lip_depression_mm", "Lower-lip depression", "mm", 0.8),
    MetricSpec("nasolabial_displacement_mm", "Nasolabial displacement", "mm", 0.8),
    MetricSpec("cheek_puff_mm", "Cheek puff", "mm", 1.0),
)}


@dataclass(frozen=True)
class RegionTest:
    """Which metric in which exercises measures a region's voluntary movement."""

    region: str
    title: str
    metric: str
    exercises: tuple[str, ...]


REGION_TESTS: tuple[RegionTest, ...] = (
    RegionTest("brow", "Brow", "brow_elevation_mm", ("brow_raise",)),
    RegionTest("eye", "Eye closure", "eye_closure", ("eye_closure_gentle", "eye_closure_tight")),
    RegionTest("commissure", "Oral commissure (smile)", "commissure_excursion_mm",
               ("smile_closed", "smile_open")),
    RegionTest("upper_lip", "Upper lip", "upper_lip_elevation_mm", ("nose_wrinkle", "smile_open")),
    RegionTest("nasolabial", "Nasolabial fold", "nasolabial_displacement_mm",
               ("nose_wrinkle", "smile_closed", "smile_open")),
    RegionTest("pucker", "Lip pucker", "commissure_excursion_mm", ("pucker",)),
    RegionTest("lower_lip", "Lower lip", "lower_lip_depression_mm", ("lower_lip_depression", "ee")),
    RegionTest("cheek", "Cheek puff", "cheek_puff_mm", ("cheek_puff",)),
)
"""Sunnybrook voluntary movements (brow lift, gentle eye closure, open-mouth smile, snarl, lip pucker) and
eFACE dynamic items (brow elevation, gentle/full eye closure, commissure movement with smile, lower-lip
movement with "EEE"), plus cheek puff."""

EXERCISE_METRICS: dict[str, tuple[str, ...]] = {
    "brow_raise": ("brow_elevation_mm",),
    "eye_closure_gentle": ("eye_closure", "fissure_mm", "commissure_excursion_mm"),
    "eye_closure_tight": ("eye_closure", "fissure_mm", "commissure_excursion_mm"),
    "nose_wrinkle": ("upper_lip_elevation_mm", "nasolabial_displacement_mm"),
    "smile_closed": ("commissure_excursion_mm", "smile_angle_change_deg", "nasolabial_displacement_mm",
                     "eye_closure"),
    "smile_open": ("commissure_excursion_mm", "smile_angle_change_deg", "upper_lip_elevation_mm",
                   "nasolabial_displacement_mm", "eye_closure"),
    "pucker": ("commissure_excursion_mm", "eye_closure"),
    "ee": ("commissure_excursion_mm", "lower_lip_depression_mm", "eye_closure"),
    "cheek_puff": ("cheek_puff_mm", "commissure_excursion_mm"),
    "lower_lip_depression": ("lower_lip_depression_mm",),
}
"""The metrics shown for each exercise of the shipped protocols (unknown exercises show all of them)."""

SYNKINESIS_OCULAR_EXERCISES = ("smile_closed", "smile_open", "pucker", "ee")
SYNKINESIS_ORAL_EXERCISES = ("eye_closure_gentle", "eye_closure_tight")
OCULAR_SYNKINESIS_NARROWING = 0.20
"""Eye narrowing (fraction of the resting fissure) above which, with a side difference of
``SYNKINESIS_SIDE_DIFFERENCE``, ocular synkinesis is flagged."""
SYNKINESIS_SIDE_DIFFERENCE = 0.15
ORAL_SYNKINESIS_MM = 2.0
"""Commissure displacement during eye closure above which oral synkinesis is flagged (with a side ratio
of at least 1.5)."""
TIE_ASYMMETRY = 0.05
"""|asymmetry index| below this counts as 'equal' in the affected-side sign test."""


# --------------------------------------------------------------------------------------------- per frame
class MetricEvaluator:
    """Evaluates the metrics for many frames at once on the few vertices the regions use."""

    def __init__(self, model: MorphableModel, regions: FaceRegions | None = None) -> None:
        self.model = model
        self.regions = regions if regions is not None else build_regions(model)
        used = self.regions.all_vertices()
        self._used = used
        self._pos = {int(v): i for i, v in enumerate(used)}
        self._mean = model.mean_mm[used].astype(np.float64)
        self._id_basis = model.identity_basis_mm[:, used].reshape(model.n_identity, -1).astype(np.float64)
        exp_basis = model.expression_basis_mm[:, used].reshape(model.n_expressions, -1)
        self._exp_basis = exp_basis.astype(np.float64)

    def _idx(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self._pos[int(v)] for v in ids], dtype=np.int64)

    def vertices(self, identity: np.ndarray | None, expression: np.ndarray) -> np.ndarray:
        """(F, S, 3) model-space positions of the used vertices for (F, 53) expressions."""
        expr = np.atleast_2d(np.asarray(expression, dtype=np.float64))
        v = expr @ self._exp_basis
        if identity is not None:
            ident = np.atleast_2d(np.asarray(identity, dtype=np.float64))
            v = v + ident @ self._id_basis
        return v.reshape(v.shape[0], -1, 3) + self._mean

    def _closed_expression(self, rest_expression: np.ndarray) -> np.ndarray:
        """The rest expression with both eyes fully blinked (the reference of a complete closure)."""
        closed = np.array(rest_expression, dtype=np.float64)
        for name in ("eyeBlink_L", "eyeBlink_R"):
            if name in self.model.expression_names:
                closed[self.model.expression_index(name)] = 1.0
        return closed

    def evaluate(self, identity: np.ndarray | None, expression: np.ndarray,
                 rest_expression: np.ndarray) -> dict[str, np.ndarray]:
        """Per-frame metrics, each (F, 2) with columns (left, right), relative to the rest expression."""
        r = self.regions
        v = self.vertices(identity, expression)
        v0 = self.vertices(identity, rest_expression[None, :])[0]
        v_closed = self.vertices(identity, self._closed_expression(rest_expression)[None, :])[0]
        out: dict[str, np.ndarray] = {}
        cols: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
        stomion = self._pos[r.midline_stomion]
        for side in SIDES:
            brow, canthi = self._idx(r.brow.side(side)), self._idx(r.canthi.side(side))
            up, lo = self._idx(r.upper_lid.side(side)), self._idx(r.lower_lid.side(side))
            corner = self._idx(r.commissure.side(side))[0]
            ulip, llip = self._idx(r.upper_lip.side(side))[0], self._idx(r.lower_lip.side(side))[0]
            naso, cheek = self._idx(r.nasolabial.side(side)), self._idx(r.cheek.side(side))

            def brow_height(x: np.ndarray, brow: np.ndarray = brow,
                            canthi: np.ndarray = canthi) -> np.ndarray:
                return x[..., brow, 1].mean(-1) - x[..., canthi, 1].mean(-1)

            def fissure(x: np.ndarray, up: np.ndarray = up, lo: np.ndarray = lo) -> np.ndarray:
                # Vertical lid-margin distance (model +y is up whatever the head pose); negative when the
                # upper lid passes the lower one in a tight closure.
                return (x[..., up, 1] - x[..., lo, 1]).mean(-1)

            def smile_angle(x: np.ndarray, corner: int = corner) -> np.ndarray:
                d = x[..., corner, :] - x[..., stomion, :]
                return np.degrees(np.arctan2(d[..., 1], np.abs(d[..., 0])))

            cols["brow_elevation_mm"].append(brow_height(v) - brow_height(v0))
            fis, fis0, fis_closed = fissure(v), float(fissure(v0)), float(fissure(v_closed))
            cols["fissure_mm"].append(fis)
            # Completeness 0 = open as at rest, 1 = closed as the model's own full blink of this face.
            cols["eye_closure"].append(np.clip((fis0 - fis) / max(fis0 - fis_closed, 1e-6), 0.0, 1.0))
            cols["commissure_excursion_mm"].append(np.linalg.norm(v[:, corner] - v0[corner], axis=-1))
            ang = smile_angle(v)
            cols["smile_angle_deg"].append(ang)
            cols["smile_angle_change_deg"].append(ang - float(smile_angle(v0)))
            cols["upper_lip_elevation_mm"].append(v[:, ulip, 1] - v0[ulip, 1])
            cols["lower_lip_depression_mm"].append(v0[llip, 1] - v[:, llip, 1])
            cols["nasolabial_displacement_mm"].append(np.linalg.norm(v[:, naso] - v0[naso], axis=-1).mean(-1))
            normals = r.cheek_normals[side]
            cols["cheek_puff_mm"].append(((v[:, cheek] - v0[cheek]) * normals).sum(-1).mean(-1))
        for k, (left, right) in cols.items():
            out[k] = np.stack([left, right], axis=-1)
        return out

    def rest_values(self, identity: np.ndarray | None,
                    rest_expression: np.ndarray) -> dict[str, tuple[float, float]]:
        """Static resting measurements (Sunnybrook resting symmetry: eye, brow, mouth), (left, right), mm."""
        r = self.regions
        v0 = self.vertices(identity, rest_expression[None, :])[0]
        stomion = v0[self._pos[r.midline_stomion]]
        out: dict[str, tuple[float, float]] = {}
        vals: dict[str, list[float]] = {"brow_height_mm": [], "fissure_mm": [], "commissure_height_mm": [],
                                        "commissure_distance_mm": []}
        for side in SIDES:
            brow, canthi = self._idx(r.brow.side(side)), self._idx(r.canthi.side(side))
            up, lo = self._idx(r.upper_lid.side(side)), self._idx(r.lower_lid.side(side))
            corner = v0[self._idx(r.commissure.side(side))[0]]
            vals["brow_height_mm"].append(float(v0[brow, 1].mean() - v0[canthi, 1].mean()))
            vals["fissure_mm"].append(float((v0[up, 1] - v0[lo, 1]).mean()))
            vals["commissure_height_mm"].append(float(corner[1] - stomion[1]))
            vals["commissure_distance_mm"].append(float(np.linalg.norm(corner - stomion)))
        for k, (a, b) in vals.items():
            out[k] = (a, b)
        return out

    def displacement_asymmetry(self, identity: np.ndarray | None, expression: np.ndarray,
                               rest_expression: np.ndarray) -> np.ndarray:
        """(N,) per-vertex |displacement| minus that of the mirror vertex, mm (full mesh, for heatmaps).

        Positive where this vertex moves more than its mirror image; on a right-sided palsy the healthy
        left side is positive and the affected right side negative.
        """
        m = self.model
        delta = np.tensordot(np.asarray(expression, np.float32) - np.asarray(rest_expression, np.float32),
                             m.expression_basis_mm, axes=1)
        mag = np.linalg.norm(delta, axis=1)
        return (mag - mag[self.regions.symmetry]).astype(np.float32)


# --------------------------------------------------------------------------------------------- sessions
@dataclass
class SessionSeries:
    """Per-frame fitted parameters and protocol labels of one session (a recorded table, or synthetic)."""

    timestamp_s: np.ndarray
    """(F,) seconds."""
    expression: np.ndarray
    """(F, n_expressions) weights in the model's expression order (rows of invalid frames are ignored)."""
    valid: np.ndarray
    """(F,) bool: the frame has a usable fit."""
    identity: np.ndarray | None = None
    """(F, n_identity) or (n_identity,) identity weights; None = the model's mean identity."""
    identity_locked: np.ndarray | None = None
    exercise: np.ndarray | None = None
    """(F,) str exercise id ('' outside the protocol); None for free recordings."""
    repetition: np.ndarray | None = None
    phase: np.ndarray | None = None
    frame_index: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    """(F, 478, 3) float32 MediaPipe landmarks in pixels (NaN rows without a face); None when not recorded."""
    rotation: np.ndarray | None = None
    """(F, 3, 3) head pose (model → camera) of each frame's fit; None when not recorded."""
    translation_mm: np.ndarray | None = None
    """(F, 3) camera-space translation of each frame's fit, mm."""
    yaw_deg: np.ndarray | None = None
    pitch_deg: np.ndarray | None = None
    video_frame: np.ndarray | None = None
    """(F,) int: the frame's number in the session video (−1 when it was not written)."""
    label: str = ""
    started: str = ""
    """ISO time the session started (from its manifest), for progress charts."""

    def __post_init__(self) -> None:
        n = len(self.timestamp_s)
        if self.expression.ndim != 2 or self.expression.shape[0] != n or len(self.valid) != n:
            raise BadInputError("session series: timestamps, expressions and validity differ in length")
        if self.frame_index is None:
            self.frame_index = np.arange(n, dtype=np.int64)

    @property
    def n_frames(self) -> int:
        return len(self.timestamp_s)

    def session_identity(self) -> np.ndarray | None:
        """One identity for the whole session: the median over locked (else all) valid frames."""
        if self.identity is None:
            return None
        ident = np.asarray(self.identity, dtype=np.float64)
        if ident.ndim == 1:
            return ident
        rows = self.valid & np.all(np.isfinite(ident), axis=1)
        if self.identity_locked is not None and np.any(rows & self.identity_locked):
            rows = rows & self.identity_locked
        if not np.any(rows):
            return None
        return np.median(ident[rows], axis=0)


@dataclass
class RepetitionResult:
    repetition: int
    start_s: float
    end_s: float
    n_frames: int
    values: dict[str, tuple[float, float]]
    """metric -> (left, right) peak value of the repetition."""
    peak_frame: int
    """Row (into the series) where the exercise's movement was largest; for renders."""


@dataclass
class ExerciseResult:
    exercise: str
    metrics: tuple[str, ...]
    repetitions: list[RepetitionResult]

    def mean(self, metric: str) -> tuple[float, float]:
        vals = np.array([r.values[metric] for r in self.repetitions if metric in r.values], dtype=np.float64)
        if vals.size == 0:
            return (math.nan, math.nan)
        m = vals.mean(axis=0)
        return (float(m[0]), float(m[1]))


@dataclass
class RegionSymmetry:
    region: str
    title: str
    metric: str
    exercises: tuple[str, ...]
    left: float
    right: float
    n_repetitions: int
    measurable: bool
    """False when neither side moved more than the metric's floor (no ratio is formed)."""
    ratio_right_left: float
    """right / left movement (1 = symmetric; 0.3 = the right side moves 30 % as much as the left)."""
    symmetry_pct: float
    """100 × weaker / stronger (eFACE-style percentage of the normal side)."""
    asymmetry_index: float
    """(left − right) / (|left| + |right|) in [−1, 1]; positive = the right side moves less."""
    weaker_side: str | None


@dataclass
class AffectedSide:
    side: str | None
    """'left', 'right', or None when no consistent asymmetry was found."""
    confidence: str
    """'high', 'moderate', 'low' or 'none'."""
    statement: str
    n_weaker_right: int
    n_weaker_left: int
    n_equal: int
    p_value: float
    median_symmetry_pct: float


@dataclass
class SynkinesisIndicator:
    kind: str
    """'ocular' (eye narrowing during mouth movements) or 'oral' (mouth motion during eye closure)."""
    exercise: str
    metric: str
    left: float
    right: float
    flagged_side: str | None


@dataclass
class ClinicalAnalysis:
    label: str
    started: str
    n_frames: int
    n_valid: int
    rest_source: str
    rest_values: dict[str, tuple[float, float]]
    per_frame: dict[str, np.ndarray]
    """metric -> (F, 2) per-frame (left, right) values (NaN for invalid frames)."""
    exercises: list[ExerciseResult]
    regions: list[RegionSymmetry]
    affected: AffectedSide
    synkinesis: list[SynkinesisIndicator]
    eye_closures: list[EyeClosureEvent]
    eye_closure_source: str
    """What the eye-closure events were measured from (MediaPipe lid landmarks, or the fitted model)."""
    rest_expression: np.ndarray
    identity: np.ndarray | None
    segments: list[tuple[str, int, float, float]] = field(default_factory=list)
    """(exercise, repetition, start_s, end_s) of each hold phase, for the time-series chart."""
    cheek_puff_source: str = LIVE_CHEEK_SOURCE
    """What the cheek-puff weights were measured from (the live fit, or the video's shading)."""

    def region(self, name: str) -> RegionSymmetry:
        for r in self.regions:
            if r.region == name:
                return r
        raise KeyError(name)

    def exercise(self, name: str) -> ExerciseResult | None:
        for e in self.exercises:
            if e.exercise == name:
                return e
        return None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (no per-frame arrays)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return None if not math.isfinite(x) else round(x, 4)
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [clean(v) for v in x]
            if isinstance(x, np.generic):
                return clean(x.item())
            return x

        return clean({
            "label": self.label, "started": self.started, "n_frames": self.n_frames, "n_valid": self.n_valid,
            "rest_source": self.rest_source, "cheek_puff_source": self.cheek_puff_source,
            "affected": asdict(self.affected),
            "regions": [asdict(r) for r in self.regions],
            "rest_values": {k: {"left": v[0], "right": v[1]} for k, v in self.rest_values.items()},
            "exercises": [{
                "exercise": e.exercise,
                "mean": {m: {"left": e.mean(m)[0], "right": e.mean(m)[1]} for m in e.metrics},
                "repetitions": [{"repetition": r.repetition, "start_s": r.start_s, "end_s": r.end_s,
                                 "n_frames": r.n_frames,
                                 "values": {m: {"left": v[0], "right": v[1]} for m, v in r.values.items()}}
                                for r in e.repetitions],
            } for e in self.exercises],
            "synkinesis": [asdict(s) for s in self.synkinesis],
            "eye_closures": [asdict(e) for e in self.eye_closures],
            "eye_closure_source": self.eye_closure_source,
        })


def _segments(series: SessionSeries) -> list[tuple[str, int, np.ndarray]]:
    """(exercise, repetition, row indices) of each hold phase, in time order."""
    if series.exercise is None:
        return []
    ex = np.asarray(series.exercise).astype(str)
    rep = np.asarray(series.repetition if series.repetition is not None else np.ones(len(ex)), dtype=np.int64)
    phase = np.asarray(series.phase).astype(str) if series.phase is not None else np.full(len(ex), HOLD_PHASE)
    hold = (phase == HOLD_PHASE) & (ex != "")
    out: list[tuple[str, int, np.ndarray]] = []
    if not np.any(hold):
        return out
    key = np.char.add(np.char.add(ex, "#"), rep.astype(str))
    rows = np.flatnonzero(hold)
    # A new segment starts wherever the (exercise, repetition) key changes between consecutive hold rows.
    breaks = np.flatnonzero(key[rows[1:]] != key[rows[:-1]]) + 1
    for chunk in np.split(rows, breaks):
        out.append((str(ex[chunk[0]]), int(rep[chunk[0]]), chunk))
    return out


def _rest_expression(series: SessionSeries) -> tuple[np.ndarray, str]:
    """The neutral reference: median expression over the rest exercise (else over all non-hold frames)."""
    valid = series.valid
    if series.exercise is not None:
        ex = np.asarray(series.exercise).astype(str)
        rows = valid & (ex == REST_EXERCISE)
        if series.phase is not None:
            hold_rows = rows & (np.asarray(series.phase).astype(str) == HOLD_PHASE)
            rows = hold_rows if np.any(hold_rows) else rows
        if np.count_nonzero(rows) >= 3:
            source = f"'{REST_EXERCISE}' exercise ({np.count_nonzero(rows)} frames)"
            return np.median(series.expression[rows], axis=0), source
        if series.phase is not None:
            ph = np.asarray(series.phase).astype(str)
            rows = valid & (ph == "rest")
            if np.count_nonzero(rows) >= 3:
                source = f"rest phases ({np.count_nonzero(rows)} frames)"
                return np.median(series.expression[rows], axis=0), source
    if np.count_nonzero(valid) >= 3:
        # Free recordings: the per-weight 10th percentile is a face that is mostly relaxed.
        return (np.percentile(series.expression[valid], 10.0, axis=0),
                "10th percentile of each expression weight (no rest exercise)")
    return np.zeros(series.expression.shape[1]), "model neutral (no valid frames)"


def _ratio(left: float, right: float, floor: float) -> tuple[bool, float, float, float, str | None]:
    measurable = max(abs(left), abs(right)) >= floor and math.isfinite(left) and math.isfinite(right)
    if not measurable:
        return False, math.nan, math.nan, math.nan, None
    ratio = right / left if abs(left) > 1e-9 else math.inf
    lo, hi = sorted((max(left, 0.0), max(right, 0.0)))
    sym = 100.0 * lo / hi if hi > 0 else 100.0
    ai = (left - right) / (abs(left) + abs(right))
    weaker = None if abs(ai) < TIE_ASYMMETRY else ("right" if ai > 0 else "left")
    return True, ratio, sym, ai, weaker


def _affected_side(items: Sequence[float], symmetry: Sequence[float]) -> AffectedSide:
    """Sign test over per-(region, repetition) asymmetry indices (ties dropped)."""
    from scipy.stats import binomtest

    ai = np.asarray(items, dtype=np.float64)
    n_right = int(np.count_nonzero(ai >= TIE_ASYMMETRY))
    n_left = int(np.count_nonzero(ai <= -TIE_ASYMMETRY))
    n_equal = int(ai.size - n_right - n_left)
    n = n_right + n_left
    med_sym = float(np.median(symmetry)) if len(symmetry) else math.nan
    if n == 0:
        return AffectedSide(None, "none", f"No consistent asymmetry: all {ai.size} measured movements are "
                            "equal on both sides (within 5 %)." if ai.size else
                            "No side can be named: no exercise produced measurable movement.",
                            0, 0, n_equal, 1.0, med_sym)
    p = float(binomtest(max(n_right, n_left), n, 0.5).pvalue)
    side = "right" if n_right > n_left else "left" if n_left > n_right else None
    weaker_count = max(n_right, n_left)
    if side is None or p >= 0.10:
        conf = "none"
        text = (f"No consistent asymmetry: the right side moved less in {n_right} and the left in {n_left} "
                f"of "
                f"{ai.size} measurements (sign test p = {p:.2g}).")
        side = None
    else:
        conf = "high" if p < 0.01 and med_sym < 80.0 else "moderate" if p < 0.05 else "low"
        text = (f"{side.capitalize()} side affected ({conf} confidence): it moved less in {weaker_count} of "
                f"{n} asymmetric measurements ({n_equal} equal); median symmetry {med_sym:.0f} % of the "
                f"stronger side; sign test p = {p:.2g}.")
    return AffectedSide(side, conf, text, n_right, n_left, n_equal, p, med_sym)


def model_eye_closure_events(frame_index: np.ndarray, closure: np.ndarray,
                             valid: np.ndarray) -> list[EyeClosureEvent]:
    """Eye-closure events from the fitted model's closure completeness (sessions without landmarks).

    The fit under-reaches full closure, so the thresholds are relative to the session's closure scale
    (99th percentile of both eyes, at least 0.5): on at half of it, off at 0.4 of it.
    """
    if not np.any(valid):
        return []
    c = np.where(valid[:, None], np.nan_to_num(closure), 0.0)
    scale = max(0.5, float(np.percentile(c[valid], 99.0)))
    return detect_eye_closures(frame_index, c, valid, on=0.5 * scale, off=0.4 * scale)


def _eye_closures(series: SessionSeries, model_closure: np.ndarray) -> tuple[list[EyeClosureEvent], str]:
    """Blinks and winks from the MediaPipe lid points when recorded (each eye measured on its own), else
    from the fitted model's eye closure (which tends to make both eyes alike)."""
    frames = np.asarray(series.frame_index)
    lm = series.landmarks
    if lm is not None:
        ok = series.valid & np.all(np.isfinite(lm[:, list(EYE_LANDMARK_IDS)]), axis=(1, 2))
        if np.count_nonzero(ok) >= 3:
            closure = closure_from_aperture(eye_aperture(lm), ok, np.asarray(series.timestamp_s))
            return (detect_eye_closures(frames, closure, ok),
                    "MediaPipe lid landmarks (aperture per eye vs its running open baseline)")
    return model_eye_closure_events(frames, model_closure, series.valid), "fitted model (eyeBlink weights)"


def _synkinesis(exercises: dict[str, ExerciseResult], affected: str | None) -> list[SynkinesisIndicator]:
    """Co-contraction indicators; with a named affected side only that side can be flagged.

    Synkinesis follows aberrant regeneration of the affected nerve, so extra narrowing of the *healthy*
    eye during a smile (a normal Duchenne smile on the side that smiles) is not flagged.
    """
    out: list[SynkinesisIndicator] = []

    def allowed(side: str) -> str | None:
        return side if affected is None or side == affected else None

    for ex_id in SYNKINESIS_OCULAR_EXERCISES:
        if ex_id in exercises:
            lv, rv = exercises[ex_id].mean("eye_closure")
            flag = None
            if max(lv, rv) >= OCULAR_SYNKINESIS_NARROWING and abs(lv - rv) >= SYNKINESIS_SIDE_DIFFERENCE:
                flag = allowed("left" if lv > rv else "right")
            out.append(SynkinesisIndicator("ocular", ex_id, "eye_closure", lv, rv, flag))
    for ex_id in SYNKINESIS_ORAL_EXERCISES:
        if ex_id in exercises:
            lv, rv = exercises[ex_id].mean("commissure_excursion_mm")
            flag = None
            hi, lo = max(lv, rv), min(lv, rv)
            if hi >= ORAL_SYNKINESIS_MM and hi >= 1.5 * max(lo, 1e-6):
                flag = allowed("left" if lv > rv else "right")
            out.append(SynkinesisIndicator("oral", ex_id, "commissure_excursion_mm", lv, rv, flag))
    return out


def analyse_session(series: SessionSeries, model: MorphableModel,
                    evaluator: MetricEvaluator | None = None) -> ClinicalAnalysis:
    """All clinical measurements of one session."""
    ev = evaluator if evaluator is not None else MetricEvaluator(model)
    if series.expression.shape[1] != model.n_expressions:
        raise BadInputError(f"session has {series.expression.shape[1]} expression weights, model "
                            f"{model.name} has {model.n_expressions}")
    valid = series.valid & np.all(np.isfinite(series.expression), axis=1)
    series = replace(series, valid=valid)  # the caller's series is left as it was
    expr = np.where(valid[:, None], series.expression, 0.0)
    rest, rest_source = _rest_expression(series)
    identity = series.session_identity()
    per_frame = ev.evaluate(identity, expr, rest)
    for k in per_frame:
        per_frame[k][~valid] = np.nan
    segs = _segments(series)
    ts = np.asarray(series.timestamp_s, dtype=np.float64)

    exercises: dict[str, ExerciseResult] = {}
    for ex_id, rep, rows in segs:
        rows_v = rows[valid[rows]]
        if ex_id == REST_EXERCISE or rows_v.size == 0:
            continue
        default = tuple(m for m in METRICS if m not in ("fissure_mm", "smile_angle_deg"))
        metrics = EXERCISE_METRICS.get(ex_id, default)
        extra = tuple(t.metric for t in REGION_TESTS if ex_id in t.exercises and t.metric not in metrics)
        metrics = metrics + extra
        values = {m: tuple(float(x) for x in np.percentile(per_frame[m][rows_v], PEAK_PERCENTILE, axis=0))
                  for m in set(metrics) | {"fissure_mm"}}
        # The frame of largest movement of the exercise's first metric, for the heatmap render.
        lead = per_frame[metrics[0]][rows_v].sum(axis=1)
        peak = int(rows_v[int(np.nanargmax(lead))])
        res = exercises.setdefault(ex_id, ExerciseResult(ex_id, metrics, []))
        res.repetitions.append(RepetitionResult(rep, float(ts[rows[0]]), float(ts[rows[-1]]),
                                                int(rows_v.size),
                                                {k: (v[0], v[1]) for k, v in values.items()}, peak))

    regions: list[RegionSymmetry] = []
    vote_ai: list[float] = []
    vote_sym: list[float] = []
    for test in REGION_TESTS:
        reps = [r for e in test.exercises if e in exercises for r in exercises[e].repetitions]
        if not reps:
            continue
        vals = np.array([r.values[test.metric] for r in reps], dtype=np.float64)
        left, right = float(vals[:, 0].mean()), float(vals[:, 1].mean())
        floor = METRICS[test.metric].floor
        measurable, ratio, sym, ai, weaker = _ratio(left, right, floor)
        regions.append(RegionSymmetry(test.region, test.title, test.metric, test.exercises, left, right,
                                      len(reps), measurable, ratio, sym, ai, weaker))
        if measurable:
            for lv, rv in vals:
                ok, _, s, a, _ = _ratio(float(lv), float(rv), floor)
                if ok:
                    vote_ai.append(a)
                    vote_sym.append(s)
    affected = _affected_side(vote_ai, vote_sym)

    synk = _synkinesis(exercises, affected.side)

    closures, closure_source = _eye_closures(series, per_frame["eye_closure"])
    hold_segments = [(e, r, float(ts[rows[0]]), float(ts[rows[-1]])) for e, r, rows in segs]
    return ClinicalAnalysis(
        label=series.label, started=series.started, n_frames=series.n_frames, n_valid=int(valid.sum()),
        rest_source=rest_source, rest_values=ev.rest_values(identity, rest), per_frame=per_frame,
        exercises=list(exercises.values()), regions=regions, affected=affected, synkinesis=synk,
        eye_closures=closures, eye_closure_source=closure_source, rest_expression=rest, identity=identity,
        segments=hold_segments,
    )
