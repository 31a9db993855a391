"""The regressors at run time: crop a tracked face, run its engine, decode an ``EngineEstimate``; the
pipeline stage (name "engine") that fills ``FaceResult.engine`` so that the fitter can warm-start from it.

Engine files: ``engines/<name>.onnx`` shipped with the application; a user-imported network of the same
name (``realtime-face models import deep3d …``) in :func:`user_engines_dir` takes precedence.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from realtime.camera import Intrinsics
from realtime.engines.coeffs import (
    CoefficientLayout,
    Crop,
    CropSpec,
    camera_pose_from_local,
    crop_from_points,
    cut_crop,
)
from realtime.engines.runtime import EngineRunner
from realtime.errors import BadInputError, MissingResourceError
from realtime.paths import engines_dir, models_dir
from realtime.results import EngineEstimate, FaceTrack, FrameResult

log = logging.getLogger(__name__)

ENGINE_FILES = {"mobile-facernet": "mobile_facernet.onnx", "deep3d": "deep3d.onnx"}
ENGINE_CHOICES = ("mobile-facernet", "deep3d", "fit")
"""``--engine`` values; "fit" = landmark fitting only, no network."""
N_SURFACE = 468


def user_engines_dir() -> Path:
    """Where imported/converted networks go (beside the installed face models)."""
    return models_dir().parent / "engines"


def engine_path(name: str) -> Path:
    if name not in ENGINE_FILES:
        raise BadInputError(f"unknown engine '{name}' (choose from {', '.join(ENGINE_FILES)})")
    for folder in (user_engines_dir(), engines_dir()):
        p = folder / ENGINE_FILES[name]
        if p.is_file():
            return p
    raise MissingResourceError(f"engine '{name}' not found in {user_engines_dir()} or {engines_dir()}")


def decode(
    coeffs: np.ndarray, layout: CoefficientLayout, intrinsics: Intrinsics, crop: Crop, engine: str
) -> EngineEstimate:
    s = layout.slices()
    c = np.asarray(coeffs, np.float64)
    rotation, translation = camera_pose_from_local(c[s["rotation"]], c[s["translation"]], intrinsics, crop)
    return EngineEstimate(
        engine=engine,
        identity=c[s["identity"]].astype(np.float32),
        expression=np.clip(c[s["expression"]], 0.0, 1.0).astype(np.float32),
        rotation=rotation,
        translation_mm=translation,
        lighting_sh=c[s["sh"]].reshape(9, 3).astype(np.float32) if layout.sh == 27 else None,
        albedo=c[s["albedo"]].astype(np.float32),
    )


class Regressor:
    """One network: ``predict(image, track, intrinsics) -> EngineEstimate``. Context manager."""

    def __init__(self, name: str, path: Path | None = None, prefer: str = "auto", threads: int = 1) -> None:
        self.name = name
        self.runner = EngineRunner(path or engine_path(name), prefer=prefer, threads=threads)
        meta = self.runner.metadata
        try:
            self.layout = CoefficientLayout.from_json(meta["realtime_face.layout"])
            crop = json.loads(meta["realtime_face.crop"])
        except (KeyError, ValueError, TypeError) as exc:
            raise BadInputError(
                f"{self.runner.path} is not a realtime-face engine (metadata: {exc})"
            ) from None
        self.spec = CropSpec(
            input_size=int(crop["input_size"]),
            scale=float(crop["scale"]),
            offset_y=float(crop.get("offset_y", 0.0)),
        )
        size = self.spec.input_size
        self._patch = np.empty((size, size, 3), np.uint8)
        self._batch = np.empty((1, 3, size, size), np.float32)

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def reason(self) -> str:
        return self.runner.reason

    def crop_for(self, track: FaceTrack) -> Crop:
        return crop_from_points(np.asarray(track.landmarks_px)[:N_SURFACE], self.spec)

    def preprocess(self, image_rgb: np.ndarray, crop: Crop) -> np.ndarray:
        cut_crop(image_rgb, crop, out=self._patch)
        np.multiply(self._patch.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=self._batch[0])
        return self._batch

    def predict(self, image_rgb: np.ndarray, track: FaceTrack, intrinsics: Intrinsics) -> EngineEstimate:
        crop = self.crop_for(track)
        coeffs = self.runner.run(self.preprocess(image_rgb, crop))[0]
        return decode(coeffs, self.layout, intrinsics, crop, self.name)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Regressor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IntrinsicsSource(Protocol):
    """``realtime.fitting.IntrinsicsResolver``: the camera for a frame size."""

    def for_size(self, width: int, height: int) -> Intrinsics: ...


@dataclass
class _TrackState:
    track_id: int = -1
    frames_since: int = 1 << 30


class EngineStage:
    """Pipeline stage "engine": runs a regressor on the tracked faces and fills ``FaceResult.engine``.

    ``interval`` > 1 runs the network only on some frames: the first frame of every track, frames with a
    "keyframe" event, and every ``interval``-th frame (Deep3D on a CPU cannot run on every frame).
    """

    name = "engine"

    def __init__(
        self,
        engine: str = "mobile-facernet",
        intrinsics: Intrinsics | IntrinsicsSource | None = None,
        interval: int = 1,
        prefer: str = "auto",
        threads: int = 1,
        regressor: Regressor | None = None,
    ) -> None:
        self.regressor = regressor or Regressor(engine, prefer=prefer, threads=threads)
        # The fit stage's resolver when given, so that the estimate and the fit use one camera.
        self.source: IntrinsicsSource | None = intrinsics if hasattr(intrinsics, "for_size") else None  # type: ignore[assignment]
        self.intrinsics: Intrinsics | None = None if self.source is not None else intrinsics  # type: ignore[assignment]
        self.interval = max(int(interval), 1)
        self._state = _TrackState()

    def _intrinsics(self, width: int, height: int) -> Intrinsics:
        if self.source is not None:
            return self.source.for_size(width, height)
        if self.intrinsics is None or (self.intrinsics.width, self.intrinsics.height) != (width, height):
            self.intrinsics = (
                self.intrinsics.scaled(width, height)
                if self.intrinsics is not None
                else Intrinsics.from_fov(width, height)
            )
        return self.intrinsics

    def process(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        frame = result.frame
        intr = self._intrinsics(frame.width, frame.height)
        st = self._state
        for k, face in enumerate(result.faces):
            due = (
                face.track.track_id != st.track_id
                or st.frames_since + 1 >= self.interval
                or "keyframe" in result.events
            )
            if k == 0:
                if not due:
                    st.frames_since += 1
                    continue
                st.track_id = face.track.track_id
                st.frames_since = 0
            face.engine = self.regressor.predict(frame.image, face.track, intr)
        result.timings_ms[self.name] = (time.perf_counter() - t0) * 1000.0

    def close(self) -> None:
        self.regressor.close()
