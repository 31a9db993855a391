"""A parametric synthetic patient: the face model driven through an exercise protocol.

Used by the tests and ``tools/bench_clinical.py`` as ground truth: the expression weights of every frame
are known exactly, and a unilateral palsy is modelled by scaling the blendshapes of one side (``*_R`` for
the subject's right) by a gain, e.g. 0.3 = the right side moves 30 % as much as the healthy side.
The same sequence can be rendered to video and sent through the real pipeline (MediaPipe → fitter →
session recorder) to check the measurements end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from realtime.clinical.metrics import SessionSeries
from realtime.facemodel import MorphableModel

EXERCISE_TARGETS: dict[str, dict[str, float]] = {
    "rest": {},
    "brow_raise": {"browInnerUp_L": 0.9, "browInnerUp_R": 0.9, "browOuterUp_L": 1.0, "browOuterUp_R": 1.0},
    "eye_closure_gentle": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0},
    "eye_closure_tight": {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0, "eyeSquint_L": 1.0, "eyeSquint_R": 1.0,
                          "cheekSquint_L": 0.6, "cheekSquint_R": 0.6, "browDown_L": 0.4, "browDown_R": 0.4},
    "nose_wrinkle": {"noseSneer_L": 1.0, "noseSneer_R": 1.0, "mouthUpperUp_L": 0.4, "mouthUpperUp_R": 0.4},
    "smile_closed": {"mouthSmile_L": 0.9, "mouthSmile_R": 0.9, "cheekSquint_L": 0.3, "cheekSquint_R": 0.3},
    "smile_open": {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0, "jawOpen": 0.25, "mouthUpperUp_L": 0.5,
                   "mouthUpperUp_R": 0.5, "mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3,
                   "cheekSquint_L": 0.4, "cheekSquint_R": 0.4},
    "pucker": {"mouthPucker": 1.0, "mouthFunnel": 0.3},
    "ee": {"mouthStretch_L": 0.7, "mouthStretch_R": 0.7, "mouthSmile_L": 0.3, "mouthSmile_R": 0.3,
           "jawOpen": 0.1, "mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3},
    "cheek_puff": {"cheekPuff_L": 1.0, "cheekPuff_R": 1.0},
    "lower_lip_depression": {"mouthLowerDown_L": 1.0, "mouthLowerDown_R": 1.0, "jawOpen": 0.05},
}
"""Expression weights a healthy subject reaches at the peak of each exercise of ``palsy-basic``."""

RAMP_S = 0.4
"""Time to reach (and leave) the peak of a movement."""


@dataclass(frozen=True)
class TimelineSegment:
    start_s: float
    end_s: float
    exercise: str
    repetition: int
    phase: str


@dataclass(frozen=True)
class PatientSpec:
    right_gain: float = 1.0
    """Scale of the subject's right-side blendshapes (``*_R``); 0.3 = a right palsy at 30 %."""
    left_gain: float = 1.0
    identity_seed: int | None = 0
    """Seed of the identity (N(0, 0.5²) weights); None = the model's mean face."""
    noise: float = 0.0
    """Std of Gaussian noise added to every expression weight per frame (fitter jitter stand-in)."""
    noise_seed: int = 1


def protocol_timeline(protocol: object) -> list[TimelineSegment]:
    """The segments of a :class:`realtime.session.protocol.Protocol` (its own timeline builder)."""
    from realtime.session.protocol import build_timeline

    return [TimelineSegment(s.start_s, s.end_s, s.exercise_id, s.repetition, s.phase)
            for s in build_timeline(protocol)]  # type: ignore[arg-type]


def side_gains(model: MorphableModel, spec: PatientSpec) -> np.ndarray:
    """(n_expressions,) per-blendshape gain of the patient."""
    gains = np.ones(model.n_expressions, dtype=np.float64)
    for i, name in enumerate(model.expression_names):
        if name.endswith("_R"):
            gains[i] = spec.right_gain
        elif name.endswith("_L"):
            gains[i] = spec.left_gain
    return gains


def _envelope(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 → 1 → 0 with raised-cosine ramps at both ends of [start, end)."""
    up = np.clip((t - start) / RAMP_S, 0.0, 1.0)
    down = np.clip((end - t) / RAMP_S, 0.0, 1.0)
    w = np.minimum(up, down)
    return 0.5 - 0.5 * np.cos(np.pi * w)


def patient_series(model: MorphableModel, timeline: Sequence[TimelineSegment], spec: PatientSpec,
                   fps: float = 30.0, label: str = "synthetic patient") -> SessionSeries:
    """The per-frame parameters of the synthetic patient doing the protocol (exact ground truth)."""
    duration = max(s.end_s for s in timeline)
    n = int(np.floor(duration * fps))
    t = np.arange(n, dtype=np.float64) / fps
    expr = np.zeros((n, model.n_expressions), dtype=np.float64)
    exercise = np.full(n, "", dtype=object)
    repetition = np.zeros(n, dtype=np.int64)
    phase = np.full(n, "", dtype=object)
    names = model.expression_names
    for seg in timeline:
        rows = (t >= seg.start_s) & (t < seg.end_s)
        exercise[rows], repetition[rows], phase[rows] = seg.exercise, seg.repetition, seg.phase
        if seg.phase != "hold":
            continue
        target = np.zeros(model.n_expressions)
        for k, w in EXERCISE_TARGETS.get(seg.exercise, {}).items():
            target[names.index(k)] = w
        expr[rows] += _envelope(t[rows], seg.start_s, seg.end_s)[:, None] * target[None, :]
    expr *= side_gains(model, spec)[None, :]
    if spec.noise > 0:
        expr += np.random.default_rng(spec.noise_seed).normal(0.0, spec.noise, expr.shape)
    expr = np.clip(expr, 0.0, 1.0)
    identity = None
    if spec.identity_seed is not None:
        identity = np.random.default_rng(spec.identity_seed).normal(0.0, 0.5, model.n_identity)
    return SessionSeries(timestamp_s=t, expression=expr, valid=np.ones(n, dtype=bool), identity=identity,
                         exercise=exercise.astype(str), repetition=repetition, phase=phase.astype(str),
                         label=label)
