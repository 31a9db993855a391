"""Temporal smoothing of the per-frame fit: One Euro filters on pose and expression weights.

The One Euro filter (Casiez et al., CHI 2012) is a first-order low-pass whose cutoff rises with the
signal's speed: still faces get heavy smoothing (low jitter), fast motion gets a high cutoff (little lag).
Rotation is filtered as a unit quaternion (sign-aligned to the previous one, renormalised), with one cutoff
for the whole rotation driven by the angular speed; translation likewise with the linear speed; each
expression weight has its own cutoff (a one-sided blink must not be slowed by a still other side).
No look-ahead: each output depends only on the current and past frames.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from realtime.camera import Intrinsics
from realtime.facemodel import MorphableModel
from realtime.fitting import IntrinsicsResolver, MeshBuilder
from realtime.results import FaceFit, FrameResult


@dataclass(frozen=True, slots=True)
class SmoothingOptions:
    """One Euro parameters per signal (cutoffs in Hz; beta in Hz per unit of speed)."""

    rotation_min_cutoff_hz: float = 1.0
    rotation_beta: float = 3.0
    """Per rad/s of angular speed."""
    translation_min_cutoff_hz: float = 1.0
    translation_beta: float = 0.02
    """Per mm/s of head speed, across the image (x, y: well measured, visible when late)."""
    translation_z_min_cutoff_hz: float = 0.7
    translation_z_beta: float = 0.003
    """Depth (z) is the least certain coordinate of a monocular fit (its frame-to-frame noise is several
    times that of x, y) and the least visible when late: it gets its own, lower cutoff."""
    expression_min_cutoff_hz: float = 1.5
    expression_beta: float = 3.0
    """Per unit-weight/s."""
    identity_cutoff_hz: float = 1.0
    """Low-pass on the identity while it is still being estimated (before the lock, and across the lock's
    step): the face's shape settles instead of flickering. A locked, settled identity passes unchanged."""
    derivative_cutoff_hz: float = 4.0
    reset_gap_s: float = 0.5
    """A gap longer than this between a face's frames restarts its filters (no smoothing across cuts)."""
    default_dt_s: float = 1.0 / 30.0
    """Frame interval used when timestamps are missing or not increasing."""


def _alpha(cutoff_hz: float | np.ndarray, dt: float) -> float | np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter on a vector; ``per_component`` gives each component its own speed-driven cutoff."""

    def __init__(self, min_cutoff_hz: float | np.ndarray, beta: float | np.ndarray,
                 derivative_cutoff_hz: float = 1.0, per_component: bool = True) -> None:
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.derivative_cutoff_hz = derivative_cutoff_hz
        self.per_component = per_component
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def reset(self) -> None:
        self._x = None
        self._dx = None

    @property
    def value(self) -> np.ndarray | None:
        return self._x

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._dx is None or self._x.shape != x.shape:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            return self._x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.derivative_cutoff_hz, dt) * (dx - self._dx)
        speed = np.abs(self._dx) if self.per_component else float(np.linalg.norm(self._dx))
        a = _alpha(self.min_cutoff_hz + self.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        return self._x.copy()


@dataclass
class _FaceFilters:
    rotation: OneEuroFilter
    translation: OneEuroFilter
    expression: OneEuroFilter
    identity: OneEuroFilter
    track_id: int | None = None
    last_t: float | None = None
    last_quat: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def reset(self) -> None:
        self.rotation.reset()
        self.translation.reset()
        self.expression.reset()
        self.identity.reset()
        self.last_t = None
        self.last_quat = np.zeros(0)


class PoseExpressionSmoother:
    """Smooths one face's (rotation, translation, expression) sequence."""

    def __init__(self, options: SmoothingOptions | None = None) -> None:
        from scipy.spatial.transform import Rotation  # here, not at import: keeps `--help` fast

        self._rotation = Rotation
        self._last_dt = 1.0 / 30.0
        o = options or SmoothingOptions()
        self.options = o
        self._f = _FaceFilters(
            rotation=OneEuroFilter(o.rotation_min_cutoff_hz, o.rotation_beta, o.derivative_cutoff_hz, False),
            translation=OneEuroFilter(
                np.array([o.translation_min_cutoff_hz] * 2 + [o.translation_z_min_cutoff_hz]),
                np.array([o.translation_beta] * 2 + [o.translation_z_beta]), o.derivative_cutoff_hz, True),
            expression=OneEuroFilter(o.expression_min_cutoff_hz, o.expression_beta, o.derivative_cutoff_hz,
                                     True),
            identity=OneEuroFilter(o.identity_cutoff_hz, 0.0, o.derivative_cutoff_hz, False),
        )

    def reset(self) -> None:
        self._f.reset()

    def __call__(self, timestamp_s: float, rotation: np.ndarray, translation: np.ndarray,
                 expression: np.ndarray, track_id: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f, o = self._f, self.options
        if track_id != f.track_id:
            f.reset()
            f.track_id = track_id
        dt = o.default_dt_s if f.last_t is None else timestamp_s - f.last_t
        if f.last_t is not None and dt > o.reset_gap_s:
            f.reset()
        if not dt > 0.0 or dt > o.reset_gap_s:
            dt = o.default_dt_s
        f.last_t = timestamp_s
        self._last_dt = dt
        q = self._rotation.from_matrix(rotation).as_quat()
        if f.last_quat.size and float(q @ f.last_quat) < 0.0:
            q = -q   # same rotation, continuous path for the filter
        f.last_quat = q
        # |dq/dt| ≈ half the angular speed: scale so that beta is per rad/s.
        qs = f.rotation(q * 2.0, dt) / 2.0
        rot = self._rotation.from_quat(qs / np.linalg.norm(qs)).as_matrix()
        tr = f.translation(translation, dt)
        ex = np.clip(f.expression(expression, dt), 0.0, 1.0)
        return rot, tr, ex

    def identity(self, identity: np.ndarray, locked: bool) -> np.ndarray:
        """The smoothed identity (call after ``__call__`` for the same frame: it uses that frame's dt)."""
        f = self._f
        dt = self.options.default_dt_s if f.last_t is None else max(self._last_dt, 1e-3)
        out = f.identity(identity, dt)
        if locked and float(np.abs(out - identity).max()) < 1e-3:
            # Settled on the locked identity: pass it through exactly (keeps the mesh cache valid).
            f.identity.reset()
            f.identity(identity, dt)
            return np.asarray(identity, np.float64)
        return out


class SmoothingStage:
    """Pipeline stage "smooth": replaces each ``FaceResult.fit`` with its temporally smoothed version.

    The smoothed fit keeps the raw fit's residual, confidence and lock flag; pose, expression, identity
    (low-passed only while it is still moving), vertices and landmarks are rebuilt from the smoothed
    parameters.
    """

    name = "smooth"

    def __init__(self, model: MorphableModel, intrinsics: IntrinsicsResolver | None = None,
                 options: SmoothingOptions | None = None) -> None:
        self.options = options or SmoothingOptions()
        self.intrinsics = intrinsics or IntrinsicsResolver()
        self.mesher = MeshBuilder(model)
        # One smoother made now: it imports scipy's rotations, which must not land on the first live frame.
        self._smoothers: list[PoseExpressionSmoother] = [PoseExpressionSmoother(self.options)]

    def smooth_fit(self, slot: int, fit: FaceFit, timestamp_s: float, track_id: int | None,
                   intr: Intrinsics) -> FaceFit:
        while len(self._smoothers) <= slot:
            self._smoothers.append(PoseExpressionSmoother(self.options))
        sm = self._smoothers[slot]
        rot, tr, ex = sm(timestamp_s, fit.pose.rotation, fit.pose.translation_mm, fit.expression, track_id)
        ident = sm.identity(fit.identity, fit.identity_locked)
        out = self.mesher.make_fit(intr, ident, ex, rot, tr, fit.residual_px, fit.confidence,
                                   fit.identity_locked, fit.scale_source)
        return out

    def process(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        intr = self.intrinsics.for_size(result.frame.width, result.frame.height)
        for slot, face in enumerate(result.faces):
            if face.fit is not None:
                face.fit = self.smooth_fit(slot, face.fit, result.frame.timestamp_s, face.track.track_id,
                                           intr)
        if not result.faces:
            for s in self._smoothers:
                s.reset()
        result.timings_ms[self.name] = (time.perf_counter() - t0) * 1000.0

    def close(self) -> None:
        self._smoothers.clear()

