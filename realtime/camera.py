"""Pinhole camera intrinsics shared by the fitter and the renderer (OpenCV axes: x right, y down, z forward)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.errors import BadInputError

DEFAULT_HORIZONTAL_FOV_DEG = 60.0
"""A typical laptop/USB webcam sees about 60° horizontally; used when no calibration is given."""


@dataclass(frozen=True, slots=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float = DEFAULT_HORIZONTAL_FOV_DEG) -> Intrinsics:
        if not 1.0 < horizontal_fov_deg < 179.0:
            raise BadInputError(f"field of view must be between 1 and 179 degrees, got {horizontal_fov_deg}")
        f = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2.0)
        return cls(fx=f, fy=f, cx=width / 2.0, cy=height / 2.0, width=width, height=height)

    @classmethod
    def from_file(cls, path: str | Path, width: int | None = None, height: int | None = None) -> Intrinsics:
        """Load ``{"fx", "fy", "cx", "cy", "width", "height"}`` (JSON) or an OpenCV YAML with ``camera_matrix``.

        When the calibration was made at another resolution, it is rescaled to ``width`` x ``height``.
        """
        p = Path(path)
        if not p.is_file():
            raise BadInputError(f"calibration file not found: {p}")
        try:
            if p.suffix.lower() in (".yml", ".yaml", ".xml"):
                import cv2

                fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
                k = fs.getNode("camera_matrix").mat()
                w = int(fs.getNode("image_width").real())
                h = int(fs.getNode("image_height").real())
                fs.release()
                if k is None:
                    raise ValueError("no camera_matrix")
                calib = cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), w, h)
            else:
                d = json.loads(p.read_text())
                calib = cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                            int(d["width"]), int(d["height"]))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise BadInputError(f"cannot read calibration {p}: {exc}") from None
        if width is not None and height is not None and (width, height) != (calib.width, calib.height):
            calib = calib.scaled(width, height)
        return calib

    def scaled(self, width: int, height: int) -> Intrinsics:
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def horizontal_fov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fx))

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Project (..., 3) camera-space points to (..., 2) pixels."""
        z = points_cam[..., 2]
        return np.stack(
            (self.fx * points_cam[..., 0] / z + self.cx, self.fy * points_cam[..., 1] / z + self.cy), axis=-1
        )

    def to_dict(self) -> dict[str, float | int]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy,
                "width": self.width, "height": self.height}
