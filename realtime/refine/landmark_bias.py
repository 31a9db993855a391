"""Pose-dependent bias of MediaPipe's landmarks against the model surface, for the two-view fit.

The correspondence table ties each MediaPipe landmark to one surface point, averaged over poses. On a
turned face MediaPipe's landmarks drift from that point in a systematic, yaw-dependent way (its mesh
regresses toward its own template depth): on clean renders of the model the median landmark error grows
from 1.2 % of the inter-ocular distance at 0° to 5.6 % at 45°, and a single side view then fits an
identity worse than the mean face. This table stores, per yaw bin, each landmark's mean 2-D offset (in mm
at the face's depth, in the head's roll-aligned image frame) and the spread left after removing it,
measured on renders of many random identities (``build_landmark_bias``; ``tools/build_landmark_bias.py``
writes ``realtime/data/mediapipe_yaw_bias_<model>.npz``). The joint fitter subtracts the offset and
weights each landmark by the inverse residual variance, so a side view contributes what it really knows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from realtime.camera import Intrinsics
from realtime.facemodel import MorphableModel
from realtime.paths import data_dir
from realtime.results import FaceTrack, Pose

log = logging.getLogger(__name__)

N_SURFACE = 468


@dataclass(frozen=True, eq=False)
class LandmarkBias:
    yaw_bins_deg: np.ndarray
    """(B,) ascending yaw bin centres."""
    offset_mm: np.ndarray
    """(B, 468, 2) mean (MediaPipe - true surface point) in the roll-aligned image frame, mm at the face."""
    sigma_mm: np.ndarray
    """(B, 468) RMS of the offset left after subtracting the mean."""
    samples: np.ndarray
    """(B,) renders that went into each bin."""

    def at(self, yaw_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """Offset (468, 2) and sigma (468,) at a yaw, linearly interpolated between bins."""
        y = float(np.clip(yaw_deg, self.yaw_bins_deg[0], self.yaw_bins_deg[-1]))
        i = int(np.clip(np.searchsorted(self.yaw_bins_deg, y) - 1, 0, len(self.yaw_bins_deg) - 2))
        t = (y - self.yaw_bins_deg[i]) / (self.yaw_bins_deg[i + 1] - self.yaw_bins_deg[i])
        off = (1 - t) * self.offset_mm[i] + t * self.offset_mm[i + 1]
        sig = (1 - t) * self.sigma_mm[i] + t * self.sigma_mm[i + 1]
        return off, sig

    def correct(self, track: FaceTrack, pose: Pose, intrinsics: Intrinsics,
                depth_mm: float) -> tuple[FaceTrack, np.ndarray]:
        """The track minus the expected bias on its 468 surface landmarks, and per-landmark σ (mm)."""
        yaw, _, roll = pose.euler_deg()
        off, sig = self.at(yaw)
        c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
        rot = np.array([[c, -s], [s, c]])
        px_per_mm = np.array([intrinsics.fx, intrinsics.fy]) / depth_mm
        lm = np.array(track.landmarks_px, dtype=np.float32, copy=True)
        lm[:N_SURFACE, :2] -= ((off @ rot.T) * px_per_mm).astype(np.float32)
        from dataclasses import replace

        return replace(track, landmarks_px=lm), sig

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, yaw_bins_deg=self.yaw_bins_deg, offset_mm=self.offset_mm.astype(np.float32),
                            sigma_mm=self.sigma_mm.astype(np.float32), samples=self.samples)


def default_path(model: MorphableModel) -> Path:
    return data_dir() / f"mediapipe_yaw_bias_{model.name}.npz"


@lru_cache(maxsize=4)
def _load(path: str) -> LandmarkBias:
    with np.load(path) as d:
        return LandmarkBias(d["yaw_bins_deg"], d["offset_mm"], d["sigma_mm"], d["samples"])


def load_landmark_bias(model: MorphableModel) -> LandmarkBias | None:
    p = default_path(model)
    if not p.is_file():
        log.info("no landmark bias table at %s; two-view fits use uncorrected landmarks", p)
        return None
    return _load(str(p))


def build_landmark_bias(model: MorphableModel, correspondence: object, yaws_deg: np.ndarray,
                        identities: int, seed: int = 1234, width: int = 512) -> LandmarkBias:
    """Measure the table on clean renders of ``identities`` random faces at each yaw (neutral, pitch ±8°)."""
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    b = len(yaws_deg)
    sums = np.zeros((b, N_SURFACE, 2))
    sq = np.zeros((b, N_SURFACE, 2))
    count = np.zeros(b, dtype=np.int64)
    zero = np.zeros(model.n_expressions)
    rng = np.random.default_rng(seed)
    points = correspondence.points  # type: ignore[attr-defined]
    with SyntheticGenerator(model, width, width, seed=seed) as gen, FaceMeshTracker(static=True) as tracker:
        for n in range(identities):
            ident = rng.normal(0.0, 1.0, model.n_identity).astype(np.float32)
            for i, yaw in enumerate(yaws_deg):
                jitter = float(rng.uniform(-2.5, 2.5))
                smp = gen.sample(identity=ident, expression=zero, yaw_deg=float(yaw) + jitter,
                                 pitch_deg=float(rng.uniform(-8, 8)), roll_deg=0.0,
                                 seed=int(seed + 1000 * n + i))
                tracks = tracker.track(smp.image)
                if not tracks:
                    continue
                k = smp.intrinsics
                cam = points(smp.vertices_mm)[:N_SURFACE]
                proj = k.project(cam)
                z = float(np.median(cam[:, 2]))
                d = (tracks[0].landmarks_px[:N_SURFACE, :2] - proj) * (z / np.array([k.fx, k.fy]))
                sums[i] += d
                sq[i] += d * d
                count[i] += 1
            log.info("landmark bias: identity %d/%d", n + 1, identities)
    c = np.maximum(count, 1)[:, None, None]
    mean = sums / c
    var = np.maximum(sq / c - mean * mean, 0.0)
    sigma = np.sqrt(var.sum(axis=2))
    return LandmarkBias(np.asarray(yaws_deg, np.float64), mean, sigma, count)
