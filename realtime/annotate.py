"""Draw tracking results onto frames (annotated video output, previews). Works in place on RGB uint8."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from realtime.results import FrameResult

# Colours are RGB (frames are RGB throughout the app).
_FACE_COLOURS = np.array([(0, 255, 128), (255, 200, 0), (0, 200, 255), (255, 80, 200)], np.uint8)
_IRIS_FIRST = 468
"""Landmarks 468..477 are the iris points added by ``refine_landmarks``."""


@dataclass(frozen=True)
class AnnotateOptions:
    landmarks: bool = True
    boxes: bool = True
    text: bool = True
    point_radius: int = 1
    """0 draws single pixels; 1 draws 3 x 3 squares (visible at 720p)."""


def draw_points(image: np.ndarray, points_xy: np.ndarray, colour: np.ndarray, radius: int = 1) -> None:
    """Set the pixels around each point (vectorised; points outside the image are skipped)."""
    h, w = image.shape[:2]
    pts = np.rint(points_xy[:, :2]).astype(np.int32)
    for dy in range(-radius, radius + 1):  # at most 9 offsets: the loop is over the dot shape, not points
        for dx in range(-radius, radius + 1):
            x = pts[:, 0] + dx
            y = pts[:, 1] + dy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            image[y[ok], x[ok]] = colour


def annotate(image: np.ndarray, result: FrameResult, options: AnnotateOptions | None = None) -> np.ndarray:
    """Draw ``result``'s faces onto ``image`` (modified in place and returned)."""
    options = options or AnnotateOptions()
    for i, face in enumerate(result.faces):
        colour = _FACE_COLOURS[i % len(_FACE_COLOURS)]
        track = face.track
        if options.landmarks:
            draw_points(image, track.landmarks_px[:_IRIS_FIRST], colour, options.point_radius)
            draw_points(
                image,
                track.landmarks_px[_IRIS_FIRST:],
                np.array([255, 40, 40], np.uint8),
                options.point_radius,
            )
        if options.boxes:
            x0, y0, x1, y1 = (round(v) for v in track.box_px)
            c = tuple(int(v) for v in colour)
            cv2.rectangle(image, (x0, y0), (x1, y1), c, 2)
            if options.text:
                cv2.putText(
                    image,
                    f"#{track.track_id} {track.presence:.2f}",
                    (x0, max(12, y0 - 6)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.5,
                    c,
                    1,
                    cv2.LINE_AA,
                )
    if options.text:
        label = f"frame {result.frame.index}  t={result.frame.timestamp_s:.2f}s"
        if not result.faces:
            label += "  no face"
        cv2.putText(image, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image
