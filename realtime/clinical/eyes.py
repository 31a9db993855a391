"""Eye-closure events (blinks and winks) from MediaPipe lid landmarks.

Why not the fitted model: the fitter's ``eyeBlink`` weights come from a least-squares fit of the whole
face, which pulls both eyes toward the same value (a wink reads as a half blink on both sides). The
MediaPipe lid points of each eye are measured directly and independently per eye.

Per frame and eye: aperture ``a`` = mean 3D distance of three upper/lower lid point pairs divided by the
3D distance of the eye's corners (dimensionless, so distance to the camera cancels; 3D with MediaPipe's
relative depth so that head yaw foreshortens numerator and denominator alike). Closure ``c = 1 − a / a₀``
with ``a₀`` a per-eye running baseline (80th percentile over ±5 s of valid frames: adapts to slow changes
of head pitch and gaze, ignores closures shorter than ~4 s). An event is a run of frames where either eye
stays above the *off* threshold and that reaches the *on* threshold (hysteresis). Laterality uses the two
eyes' peak closures over the event: one-sided when the less-closed eye's peak is below ``wink_ratio`` of the
other's (a wink: the other eye may narrow a little, but does not close), else ``both``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import percentile_filter


@dataclass(frozen=True)
class EyeLandmarks:
    """MediaPipe FaceMesh indices of one eye: three upper lid points, the lower lid points facing them,
    and the two corners."""

    upper: tuple[int, int, int]
    lower: tuple[int, int, int]
    corners: tuple[int, int]


# Subject's left eye = image right in a frontal view (MediaPipe's "left eye" indices 362-473 side).
LEFT_EYE = EyeLandmarks(upper=(387, 386, 385), lower=(373, 374, 380), corners=(263, 362))
RIGHT_EYE = EyeLandmarks(upper=(160, 159, 158), lower=(144, 145, 153), corners=(33, 133))
EYE_LANDMARK_IDS: tuple[int, ...] = tuple(sorted({
    i for e in (LEFT_EYE, RIGHT_EYE) for i in (*e.upper, *e.lower, *e.corners)}))

BASELINE_WINDOW_S = 10.0
BASELINE_PERCENTILE = 80.0
CLOSURE_ON = 0.5
"""An event needs one eye closed by half of its open aperture at least once…"""
CLOSURE_OFF = 0.4
"""…and lasts while either eye stays closed by this much (hysteresis)."""
WINK_RATIO = 0.6
"""One-sided when the less-closed eye's peak closure is below this fraction of the other's."""


@dataclass
class EyeClosureEvent:
    start_frame: int
    end_frame: int
    """Inclusive frame indices (the series' ``frame_index``)."""
    side: str
    """'left', 'right' (one-sided: a wink, or a palsy's incomplete closure on the other side) or 'both'."""
    peak_left: float
    peak_right: float


def eye_aperture(landmarks: np.ndarray) -> np.ndarray:
    """(F, 478, 3) MediaPipe landmarks (pixels, z in pixels) -> (F, 2) aperture (left, right)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    out = []
    for eye in (LEFT_EYE, RIGHT_EYE):
        lids = np.linalg.norm(lm[:, list(eye.upper)] - lm[:, list(eye.lower)], axis=-1).mean(axis=-1)
        width = np.linalg.norm(lm[:, eye.corners[0]] - lm[:, eye.corners[1]], axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(lids / width)
    return np.stack(out, axis=1)


def closure_from_aperture(aperture: np.ndarray, valid: np.ndarray, timestamp_s: np.ndarray) -> np.ndarray:
    """(F, 2) closure in [0, 1] (0 = open as usual for this eye, 1 = lids touching); NaN where invalid."""
    ok = valid & np.all(np.isfinite(aperture), axis=1)
    out = np.full(aperture.shape, np.nan)
    if np.count_nonzero(ok) < 3:
        return out
    t = np.asarray(timestamp_s, dtype=np.float64)[ok]
    dt = float(np.median(np.diff(t))) if t.size > 1 else 1.0 / 30.0
    size = max(3, round(BASELINE_WINDOW_S / max(dt, 1e-3)) | 1)
    a = aperture[ok]
    # The running baseline over the valid frames only (a lost face neither opens nor closes an eye).
    base = percentile_filter(a, BASELINE_PERCENTILE, size=(size, 1), mode="nearest")
    out[ok] = np.clip(1.0 - a / np.maximum(base, 1e-6), 0.0, 1.0)
    return out


def detect_eye_closures(frame_index: np.ndarray, closure: np.ndarray, valid: np.ndarray,
                        on: float = CLOSURE_ON, off: float = CLOSURE_OFF,
                        wink_ratio: float = WINK_RATIO) -> list[EyeClosureEvent]:
    """Eye-closure events from per-frame (left, right) closure in [0, 1] (hysteresis ``on``/``off``)."""
    c = np.where(valid[:, None], np.nan_to_num(np.asarray(closure, dtype=np.float64)), 0.0)
    high = (c.max(axis=1) >= off) & valid
    events: list[EyeClosureEvent] = []
    if not np.any(high):
        return events
    rows = np.flatnonzero(high)
    breaks = np.flatnonzero(np.diff(rows) > 1) + 1
    for chunk in np.split(rows, breaks):
        peak_l, peak_r = float(c[chunk, 0].max()), float(c[chunk, 1].max())
        if max(peak_l, peak_r) < on:
            continue
        hi, lo = max(peak_l, peak_r), min(peak_l, peak_r)
        side = ("left" if peak_l > peak_r else "right") if lo < wink_ratio * hi else "both"
        events.append(EyeClosureEvent(int(frame_index[chunk[0]]), int(frame_index[chunk[-1]]), side,
                                      peak_l, peak_r))
    return events
