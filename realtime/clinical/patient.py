"""A parametric synthetic patient: the face model driven through an exercise protocol.

Used by the tests and ``tools/bench_clinical.py`` as ground truth: the expression weights of every frame
are known exactly, and a unilateral palsy is modelled by scaling the blendshapes of one side (``*_R`` for
the subject's right) by a gain, e.g. 0.3 = the right side moves 30 % as much as the healthy side.
The same sequence can be rendered to video and sent through the real pipeline (MediaPipe → fitter →
session recorder) to check the measurements end to end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.camera import Intrinsics
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

SYNKINESIS_SHAPES = {"smile_closed": "eyeBlink", "smile_open": "eyeBlink", "pucker": "eyeBlink",
                     "ee": "eyeBlink", "eye_closure_gentle": "mouthSmile", "eye_closure_tight": "mouthSmile"}
"""The blendshape (of the weaker side) a synkinetic patient co-contracts in each exercise."""

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
    synkinesis: float = 0.0
    """Aberrant co-contraction on the weaker side (the one with the smaller gain): this much ``eyeBlink``
    during smiles/pucker/"ee" and ``mouthSmile`` during eye closures."""


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
    if spec.synkinesis > 0 and spec.left_gain != spec.right_gain:
        side = "R" if spec.right_gain < spec.left_gain else "L"
        for seg in timeline:
            extra = SYNKINESIS_SHAPES.get(seg.exercise)
            if seg.phase != "hold" or extra is None:
                continue
            rows = (t >= seg.start_s) & (t < seg.end_s)
            expr[rows, names.index(f"{extra}_{side}")] += spec.synkinesis * _envelope(t[rows], seg.start_s,
                                                                                      seg.end_s)
    if spec.noise > 0:
        expr += np.random.default_rng(spec.noise_seed).normal(0.0, spec.noise, expr.shape)
    expr = np.clip(expr, 0.0, 1.0)
    identity = None
    if spec.identity_seed is not None:
        identity = np.random.default_rng(spec.identity_seed).normal(0.0, 0.5, model.n_identity)
    return SessionSeries(timestamp_s=t, expression=expr, valid=np.ones(n, dtype=bool), identity=identity,
                         exercise=exercise.astype(str), repetition=repetition, phase=phase.astype(str),
                         label=label)


# --------------------------------------------------------------------------------------- end to end
def compact_protocol_toml(protocol: object, repetitions: int, prepare_s: float, hold_s: float,
                          rest_s: float, rest_hold_s: float = 3.0) -> str:
    """The same exercises (ids, prompts) with shorter timings, as protocol TOML (for fast end-to-end runs)."""
    lines = ["schema_version = 1", f'name = "{getattr(protocol, "name", "protocol")}-compact"',
             'title = "Compact protocol (synthetic patient)"', ""]
    for ex in getattr(protocol, "exercises", ()):
        is_rest = ex.id == "rest"
        lines += ["[[exercise]]", f'id = "{ex.id}"', f"title = {_toml_str(ex.title)}",
                  f"prompt = {_toml_str(ex.prompt)}",
                  f"repetitions = {1 if is_rest else repetitions}", f"prepare_s = {prepare_s}",
                  f"hold_s = {rest_hold_s if is_rest else hold_s}",
                  f"rest_s = {0.0 if is_rest else rest_s}", ""]
    return "\n".join(lines)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class RenderSettings:
    width: int = 512
    height: int = 512
    fps: float = 15.0
    head_motion_deg: float = 8.0
    """Amplitude of a slow yaw/pitch head motion during the session (the metrics must ignore it)."""
    distance_mm: float = 520.0
    seed: int = 7


@dataclass(frozen=True)
class RenderedTruth:
    """One rendered frame's ground truth beyond the expression weights."""

    rotation: np.ndarray
    """(3, 3) model -> camera."""
    translation_mm: np.ndarray
    landmarks_cam_mm: np.ndarray
    """(478, 3) camera-space positions of the MediaPipe landmarks on the true mesh (and eyes)."""


def render_patient_video(model: MorphableModel, series: SessionSeries, path: str | Path,
                         settings: RenderSettings = RenderSettings(),
                         progress: Callable[[int, int], None] | None = None,
                         truth_log: list[RenderedTruth] | None = None) -> Intrinsics:
    """Render the patient's frames with the synthetic generator (face + eyeball proxies) into a video.

    ``series`` must be sampled at ``settings.fps``. Returns the camera intrinsics used (a "calibrated"
    camera for the fitter). H.264 when PyAV has it, else MPEG-4 part 2. ``truth_log`` (optional) receives
    each frame's true pose and MediaPipe-landmark positions (for benchmarks of the measurement itself).
    """
    import av

    from realtime.correspondence import load_correspondence
    from realtime.synthetic import SyntheticGenerator, true_landmarks

    corr = load_correspondence(model) if truth_log is not None else None
    t = np.asarray(series.timestamp_s)
    ident = series.session_identity()
    identity = np.zeros(model.n_identity) if ident is None else ident
    s = settings
    out_path = Path(path)
    with SyntheticGenerator(model, s.width, s.height, seed=s.seed) as gen, av.open(str(out_path), "w") as box:
        try:
            stream = box.add_stream("libx264", rate=round(s.fps))
            stream.options = {"crf": "16", "preset": "veryfast"}
        except (av.FFmpegError, ValueError):
            stream = box.add_stream("mpeg4", rate=round(s.fps))
            stream.bit_rate = 8_000_000
        stream.width, stream.height, stream.pix_fmt = s.width, s.height, "yuv420p"
        first = gen.sample(identity=identity, expression=np.zeros(model.n_expressions), seed=s.seed,
                           clean=True, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, distance_mm=s.distance_mm)
        intr, sh, albedo = first.intrinsics, first.sh_coeffs, first.albedo
        for i in range(series.n_frames):
            yaw = s.head_motion_deg * np.sin(2 * np.pi * t[i] / 9.0)
            pitch = 0.5 * s.head_motion_deg * np.sin(2 * np.pi * t[i] / 13.0)
            sample = gen.sample(identity=identity, expression=series.expression[i], seed=s.seed, clean=True,
                                yaw_deg=yaw, pitch_deg=pitch, roll_deg=0.0, distance_mm=s.distance_mm,
                                intrinsics=intr, sh_coeffs=sh, albedo=albedo)
            if truth_log is not None:
                truth_log.append(RenderedTruth(sample.pose.rotation, sample.pose.translation_mm,
                                               true_landmarks(sample, corr)))
            frame = av.VideoFrame.from_ndarray(sample.image, format="rgb24")
            for packet in stream.encode(frame):
                box.mux(packet)
            if progress is not None:
                progress(i + 1, series.n_frames)
        for packet in stream.encode():
            box.mux(packet)
    return intr


def record_session_from_video(model: MorphableModel, video: str | Path, protocol: object, out_dir: str | Path,
                              intrinsics: Intrinsics | None, subject_id: str = "synthetic",
                              folder_name: str | None = None, extra_sinks: Sequence[Any] = ()) -> Path:
    """Run the real pipeline (MediaPipe → fitter → smoothing → session recorder) over a video file."""
    from realtime.capture import VideoSource
    from realtime.fitting import FitStage, IntrinsicsResolver
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline
    from realtime.session.recorder import RecorderConfig, SessionRecorder
    from realtime.smoothing import SmoothingStage

    resolver = IntrinsicsResolver(intrinsics=intrinsics)
    config = RecorderConfig(out_dir=Path(out_dir), subject_id=subject_id, protocol=protocol,  # type: ignore[arg-type]
                            audio=False, intrinsics=intrinsics, source=str(video), folder_name=folder_name)
    recorder = SessionRecorder(config)
    try:
        stages: list[Any] = [LandmarkStage(), FitStage(model, intrinsics=resolver),
                             SmoothingStage(model, resolver)]
        sinks: list[Any] = [recorder, *extra_sinks]
        with Pipeline(VideoSource(video), stages, sinks) as pipe:
            pipe.run()
    finally:
        recorder.close()
    return recorder.folder
