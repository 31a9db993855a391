"""Keyframe selection from the live stream: which frames are worth a background refinement.

A frame qualifies when it is sharp, confidently fitted, and new: it fills a yaw bin (0°, ±30°, ±50°) not yet
covered — or covers it clearly better than the frame already kept — or it is the peak of an expression.
A manual snapshot (``"snapshot"`` in ``FrameResult.events``, the window's ``s`` key) always qualifies and
jumps the queue. Cost per frame: one Laplacian over a 96-pixel-wide grey face crop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from realtime.results import FrameResult

PRIORITY_SNAPSHOT = 0
PRIORITY_POSE = 1
PRIORITY_EXPRESSION = 2
"""Lower runs first."""


@dataclass(frozen=True, slots=True)
class KeyframeOptions:
    yaw_bins_deg: tuple[float, ...] = (0.0, -30.0, 30.0, -50.0, 50.0)
    bin_halfwidth_deg: float = 8.0
    max_pitch_deg: float = 25.0
    min_confidence: float = 0.5
    min_sharpness: float = 30.0
    """Variance of the Laplacian of the 96 px wide grey face crop; below this the frame is blurred."""
    improve_factor: float = 1.3
    """A bin is re-filled only by a frame whose score beats the kept one by this factor."""
    min_interval_s: float = 1.0
    """At most one automatic keyframe per this many seconds."""
    expression_peak: float = 0.6
    expression_release: float = 0.3
    """An expression peak re-arms once the blendshape falls below this (hysteresis)."""


@dataclass(frozen=True, slots=True)
class KeyframeDecision:
    reason: str
    """"snapshot", "pose:<bin>", "expression:<name>"."""
    priority: int
    score: float


def face_sharpness(image: np.ndarray, box: tuple[float, float, float, float], width: int = 96) -> float:
    """Variance of the Laplacian over the face box, resampled to ``width`` px (resolution independent)."""
    h, w = image.shape[:2]
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(box[2]) + 1, w), min(int(box[3]) + 1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0.0
    crop = image[y0:y1, x0:x1]
    scale = width / crop.shape[1]
    small = cv2.resize(crop, (width, max(int(crop.shape[0] * scale), 8)), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


@dataclass
class KeyframeSelector:
    """Stateful per stream; ``consider`` is called once per processed frame."""

    expression_names: tuple[str, ...]
    options: KeyframeOptions = field(default_factory=KeyframeOptions)
    _bin_score: dict[float, float] = field(default_factory=dict)
    _armed: np.ndarray | None = None
    _last_auto_s: float = -1e9

    def consider(self, result: FrameResult) -> KeyframeDecision | None:
        opts = self.options
        face = result.primary
        manual = "snapshot" in result.events
        if face is None or face.fit is None:
            manual_only = manual and face is not None
            return KeyframeDecision("snapshot", PRIORITY_SNAPSHOT, 0.0) if manual_only else None
        fit = face.fit
        sharp = face_sharpness(result.frame.image, face.track.box_px)
        score = sharp * fit.confidence
        if manual:
            return KeyframeDecision("snapshot", PRIORITY_SNAPSHOT, score)
        expr = np.asarray(fit.expression, np.float64)
        if self._armed is None:
            self._armed = np.ones(len(expr), dtype=bool)
        self._armed |= expr < opts.expression_release
        if fit.confidence < opts.min_confidence or sharp < opts.min_sharpness:
            return None
        t = result.frame.timestamp_s
        if t - self._last_auto_s < opts.min_interval_s:
            return None
        yaw, pitch, _ = fit.pose.euler_deg()
        if abs(pitch) <= opts.max_pitch_deg:
            for centre in opts.yaw_bins_deg:
                if abs(yaw - centre) <= opts.bin_halfwidth_deg:
                    kept = self._bin_score.get(centre)
                    if kept is None or score > opts.improve_factor * kept:
                        self._bin_score[centre] = score
                        self._last_auto_s = t
                        return KeyframeDecision(f"pose:{centre:+.0f}", PRIORITY_POSE, score)
        peaks = np.nonzero(self._armed & (expr >= opts.expression_peak))[0]
        if peaks.size:
            k = int(peaks[np.argmax(expr[peaks])])
            self._armed[k] = False
            self._last_auto_s = t
            name = self.expression_names[k] if k < len(self.expression_names) else str(k)
            return KeyframeDecision(f"expression:{name}", PRIORITY_EXPRESSION, score)
        return None

    def reset(self) -> None:
        self._bin_score.clear()
        self._armed = None
        self._last_auto_s = -1e9
