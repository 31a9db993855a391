"""The regressors' output vector, crop and crop-relative camera (no torch: shared by runtime and training).

Every engine outputs one float vector per face, laid out as ``identity | expression | rot6d | uvk | sh |
albedo`` (sizes in :class:`CoefficientLayout`, stored in the ONNX metadata so that imported networks with
other sizes decode too).

Pose is predicted relative to the crop, so that a network never needs to know the image size, the crop
position or the focal length:

* A *virtual camera* looks along the ray through the crop centre (rotation ``R_c`` maps its axes to the
  real camera's). The network predicts the head rotation in that virtual camera (``rot6d``: the first two
  columns of the rotation matrix) — an off-centre face seen by a wide-angle webcam then looks the same to
  the network as a centred one.
* ``uvk``: ``u, v`` are where the model origin projects, in crop half-widths from the crop centre, and
  ``k = log(g * S / z)`` with ``g = f / L`` (focal length over crop side, both in pixels) and a nominal size
  ``S`` in mm: the apparent size of the face in the crop, independent of the image resolution.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from realtime.camera import Intrinsics
from realtime.errors import BadInputError

NOMINAL_SIZE_MM = 100.0
"""``S`` of the ``k`` translation parameter (only sets the origin of ``k``)."""


@dataclass(frozen=True)
class CoefficientLayout:
    identity: int = 100
    expression: int = 53
    rotation: int = 6
    translation: int = 3
    sh: int = 27
    albedo: int = 10

    @property
    def size(self) -> int:
        return self.identity + self.expression + self.rotation + self.translation + self.sh + self.albedo

    def slices(self) -> dict[str, slice]:
        out: dict[str, slice] = {}
        start = 0
        for name, n in asdict(self).items():
            out[name] = slice(start, start + n)
            start += n
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CoefficientLayout:
        return cls(**{k: int(v) for k, v in json.loads(text).items()})


@dataclass(frozen=True)
class CropSpec:
    """How an engine cuts its square input out of the frame, from a box of face landmarks."""

    input_size: int = 64
    scale: float = 1.25
    """Crop side = ``scale`` x the longer side of the landmark box."""
    offset_y: float = 0.0
    """Crop centre moved down by ``offset_y`` x the box height (negative: up)."""


@dataclass(frozen=True)
class Crop:
    """A square crop of side ``side_px`` centred at ``(cx, cy)`` in frame pixels."""

    cx: float
    cy: float
    side_px: float
    input_size: int

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) frame pixel → input pixel map (pixel centres at integers on both sides)."""
        s = self.input_size / self.side_px
        c = (self.input_size - 1) / 2.0
        return np.array([[s, 0.0, c - s * self.cx], [0.0, s, c - s * self.cy]])

    def to_input(self, points_px: np.ndarray) -> np.ndarray:
        a = self.affine
        return points_px[..., :2] @ a[:, :2].T + a[:, 2]

    def to_frame(self, points_in: np.ndarray) -> np.ndarray:
        s = self.input_size / self.side_px
        c = (self.input_size - 1) / 2.0
        return (points_in - c) / s + np.array([self.cx, self.cy])


def crop_from_points(points_px: np.ndarray, spec: CropSpec) -> Crop:
    """The crop of an engine for landmarks ``(M, 2+)`` in frame pixels (MediaPipe's 478 at run time)."""
    p = np.asarray(points_px, dtype=np.float64)[:, :2]
    if p.size == 0 or not np.all(np.isfinite(p)):
        raise BadInputError("cannot crop a face without finite landmarks")
    lo, hi = p.min(axis=0), p.max(axis=0)
    w, h = hi - lo
    side = spec.scale * max(float(w), float(h), 1.0)
    cx = 0.5 * (lo[0] + hi[0])
    cy = 0.5 * (lo[1] + hi[1]) + spec.offset_y * float(h)
    return Crop(cx=float(cx), cy=float(cy), side_px=float(side), input_size=spec.input_size)


def cut_crop(image_rgb: np.ndarray, crop: Crop, out: np.ndarray | None = None) -> np.ndarray:
    """(S, S, 3) uint8 crop (bilinear; outside the frame is black)."""
    size = crop.input_size
    return cv2.warpAffine(
        image_rgb,
        crop.affine,
        (size, size),
        dst=out,
        flags=cv2.INTER_AREA if crop.side_px > 2 * size else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )


def ray_rotation(intrinsics: Intrinsics, cx: float, cy: float) -> np.ndarray:
    """``R_c``: the minimal rotation taking the virtual camera's +z to the ray through pixel ``(cx, cy)``."""
    d = np.array([(cx - intrinsics.cx) / intrinsics.fx, (cy - intrinsics.cy) / intrinsics.fy, 1.0])
    d /= np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, d)
    s = float(np.linalg.norm(axis))
    c = float(d[2])
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)


def crop_focal(intrinsics: Intrinsics, crop: Crop) -> float:
    """``g = f / L``: the virtual camera's focal length in crop sides."""
    return 0.5 * (intrinsics.fx + intrinsics.fy) / crop.side_px


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """(..., 6) first two columns → (..., 3, 3) rotation (Gram–Schmidt; degenerate input → frontal axes)."""
    r6 = np.asarray(r6, np.float64)
    a1 = r6[..., 0:3]
    n1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    b1 = np.where(n1 > 1e-9, a1 / np.maximum(n1, 1e-300), np.array([1.0, 0.0, 0.0]))
    a2 = r6[..., 3:6]
    a2p = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    n2 = np.linalg.norm(a2p, axis=-1, keepdims=True)
    # A fallback second axis: -y (the frontal pose's), or z when b1 is along y.
    alt = np.where(np.abs(b1[..., 1:2]) < 0.9, np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    alt = alt - np.sum(b1 * alt, axis=-1, keepdims=True) * b1
    a2p = np.where(n2 > 1e-9 * np.maximum(n1, 1.0), a2p, alt)
    b2 = a2p / np.maximum(np.linalg.norm(a2p, axis=-1, keepdims=True), 1e-300)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(r: np.ndarray) -> np.ndarray:
    return np.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)


def local_pose_from_camera(
    rotation: np.ndarray, translation_mm: np.ndarray, intrinsics: Intrinsics, crop: Crop
) -> tuple[np.ndarray, np.ndarray]:
    """Training labels: (rot6d (6,), uvk (3,)) of a camera-space pose for a crop."""
    rc = ray_rotation(intrinsics, crop.cx, crop.cy)
    r_local = rc.T @ rotation
    t_local = rc.T @ translation_mm
    g = crop_focal(intrinsics, crop)
    u = 2.0 * g * t_local[0] / t_local[2]
    v = 2.0 * g * t_local[1] / t_local[2]
    k = np.log(g * NOMINAL_SIZE_MM / t_local[2])
    return matrix_to_rot6d(r_local), np.array([u, v, k])


def camera_pose_from_local(
    rot6d: np.ndarray, uvk: np.ndarray, intrinsics: Intrinsics, crop: Crop
) -> tuple[np.ndarray, np.ndarray]:
    """Decode: (rotation (3, 3), translation_mm (3,)) in the real camera."""
    rc = ray_rotation(intrinsics, crop.cx, crop.cy)
    g = crop_focal(intrinsics, crop)
    u, v, k = (float(x) for x in uvk)
    z = g * NOMINAL_SIZE_MM * float(np.exp(-np.clip(k, -10.0, 10.0)))
    t_local = np.array([u * z / (2.0 * g), v * z / (2.0 * g), z])
    return rc @ rot6d_to_matrix(np.asarray(rot6d, np.float64)), rc @ t_local
