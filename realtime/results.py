"""The per-frame data that flows one way through the pipeline.

Stages never mutate a result they did not create, except to fill in the fields that belong to them
(tracking fills ``faces``; fitting fills ``FaceResult.fit``; every stage adds its ``timings_ms`` entry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

FRONTAL_ROTATION = np.diag([1.0, -1.0, -1.0])
"""Model→camera rotation of a face looking straight into the camera: model +y (up) to camera −y, model +z (out
of the face) to camera −z. Read-only; copy it to modify."""
FRONTAL_ROTATION.setflags(write=False)


@dataclass(slots=True)
class Frame:
    """One decoded image from a source."""

    image: np.ndarray
    """H x W x 3 uint8, RGB."""
    index: int
    """Frame number in the source (0-based; for files the decode order)."""
    timestamp_s: float
    """Source time: PTS for files, monotonic clock for cameras, 0 for single images."""
    capture_time_s: float
    """``time.perf_counter()`` when the frame left the decoder/camera (for latency)."""
    source: str = ""

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(slots=True)
class FaceTrack:
    """MediaPipe FaceMesh output for one face, in pixels."""

    landmarks_px: np.ndarray
    """(478, 3) float32: x, y in pixels; z is MediaPipe's relative depth scaled by the image width (px)."""
    presence: float
    """Face presence score in [0, 1]."""
    box_px: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the landmarks' bounding box."""
    track_id: int = 0
    """Stable while the face stays tracked; a new id after the track is lost."""
    iris_diameter_px: np.ndarray | None = None
    """(2,) horizontal limbus diameter measured in the image per eye (subject's right, left; NaN where it
    could not be measured), ``realtime.iris``; None when not measured (e.g. landmarks read from a file)."""


@dataclass(slots=True)
class Pose:
    """Rigid transform from model space (mm, the model's own axes) to OpenCV camera space (mm)."""

    rotation: np.ndarray
    """(3, 3) rotation matrix."""
    translation_mm: np.ndarray
    """(3,) translation in mm."""

    def euler_deg(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees relative to a face looking straight into the camera.

        The frontal pose maps model +y (up) to camera -y and model +z (out of the face) to camera -z.
        Positive yaw turns the face toward the camera's right (subject's left), positive pitch tilts it up.
        """
        r = FRONTAL_ROTATION @ self.rotation  # head rotation in the model's own frame
        yaw = math.degrees(math.atan2(r[0, 2], r[2, 2]))
        pitch = math.degrees(math.asin(float(np.clip(-r[1, 2], -1.0, 1.0))))
        roll = math.degrees(math.atan2(r[1, 0], r[1, 1]))
        return yaw, pitch, roll

    def as_matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation_mm
        return m


@dataclass(slots=True)
class FaceFit:
    """The morphable-model fit of one face in one frame."""

    pose: Pose
    expression: np.ndarray
    """(n_expressions,) weights in [0, 1], in the face model's ``expression_names`` order."""
    identity: np.ndarray
    """(n_identity,) weights (standard-normal prior)."""
    vertices_mm: np.ndarray
    """(N, 3) float32 camera-space vertices in mm (OpenCV axes)."""
    landmarks68_px: np.ndarray
    """(68, 2) projected iBUG-68 model landmarks in pixels."""
    landmarks68_mm: np.ndarray
    """(68, 3) camera-space iBUG-68 model landmarks in mm."""
    residual_px: float
    """RMS landmark reprojection error in pixels."""
    confidence: float
    """Fit confidence in [0, 1] (combines tracking presence and residual)."""
    identity_locked: bool = False
    scale_source: str = "iris"
    """How the metric scale was obtained ("iris", "prior", "calibrated")."""


@dataclass(slots=True)
class EngineEstimate:
    """A regressor network's coefficient estimate for one face (warm-starts the fit)."""

    engine: str
    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    translation_mm: np.ndarray
    lighting_sh: np.ndarray | None = None
    albedo: np.ndarray | None = None


@dataclass(slots=True)
class FaceResult:
    track: FaceTrack
    fit: FaceFit | None = None
    engine: EngineEstimate | None = None


@dataclass(slots=True)
class FrameResult:
    """Everything known about one frame; each stage adds its part."""

    frame: Frame
    faces: list[FaceResult] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    dropped_before: int = 0
    """Frames the hand-off dropped between the previous processed frame and this one."""
    events: list[str] = field(default_factory=list)
    """Events raised for this frame (e.g. "snapshot", "keyframe")."""

    @property
    def primary(self) -> FaceResult | None:
        return self.faces[0] if self.faces else None
