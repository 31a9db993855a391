"""Training data of the regressors: synthetic renders with exact labels, real frames with fitter labels.

A dataset is a folder of ``shard_NNNN.npz`` files (cache them outside the repository, e.g. under
``realtime.paths.cache_dir()/training``). Each sample is a square crop cut exactly as the run-time engine cuts
it — from the box of the 478 MediaPipe landmarks (:func:`realtime.engines.coeffs.crop_from_points`) — with
jittered centre and size, at ``store_size`` pixels, and its labels:

==============  ============================================================================
``image``       (S, S, 3) uint8 crop
``lm68``        (68, 2) iBUG-68 landmarks in crop units ((px + 0.5) / S, so 0..1 across the crop)
``g``           focal length / crop side (the crop's virtual camera)
``rot6d``       (6,) head rotation in the virtual camera; ``uvk`` (3,) crop-relative translation
``identity``    (K_id,), ``expression`` (K_exp,) coefficients
``euler``       (3,) yaw, pitch, roll in degrees (for yaw-binned evaluation)
``exact``       1 for synthetic ground truth, 0 for fitter pseudo-labels
==============  ============================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.camera import Intrinsics
from realtime.engines.coeffs import Crop, CropSpec, crop_from_points, cut_crop, local_pose_from_camera
from realtime.facemodel import MorphableModel
from realtime.results import Pose

log = logging.getLogger(__name__)

FIELDS = ("image", "lm68", "g", "rot6d", "uvk", "identity", "expression", "euler", "exact")
N_SURFACE = 468


@dataclass(frozen=True)
class Jitter:
    centre_sigma: float = 0.04
    """Crop centre shift, as a fraction of the crop side (Gaussian sigma)."""
    scale_sigma: float = 0.06
    """log-normal sigma of the crop side."""


def jittered_crop(points_px: np.ndarray, spec: CropSpec, rng: np.random.Generator, jitter: Jitter) -> Crop:
    c = crop_from_points(points_px, spec)
    side = c.side_px * float(np.exp(rng.normal(0.0, jitter.scale_sigma)))
    dx, dy = rng.normal(0.0, jitter.centre_sigma, 2) * c.side_px
    return Crop(cx=c.cx + float(dx), cy=c.cy + float(dy), side_px=side, input_size=spec.input_size)


def make_record(
    image: np.ndarray,
    intrinsics: Intrinsics,
    pose: Pose,
    identity: np.ndarray,
    expression: np.ndarray,
    landmarks68_cam: np.ndarray,
    crop: Crop,
    exact: bool,
) -> dict[str, np.ndarray]:
    rot6d, uvk = local_pose_from_camera(pose.rotation, pose.translation_mm, intrinsics, crop)
    lm = crop.to_input(intrinsics.project(landmarks68_cam))
    g = 0.5 * (intrinsics.fx + intrinsics.fy) / crop.side_px
    return {
        "image": cut_crop(image, crop),
        "lm68": ((lm + 0.5) / crop.input_size).astype(np.float32),
        "g": np.array(g, np.float32),
        "rot6d": rot6d.astype(np.float32),
        "uvk": uvk.astype(np.float32),
        "identity": np.asarray(identity, np.float32),
        "expression": np.asarray(expression, np.float32),
        "euler": np.array(pose.euler_deg(), np.float32),
        "exact": np.array(1.0 if exact else 0.0, np.float32),
    }


def _write_shard(path: Path, records: list[dict[str, np.ndarray]]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.stack([r[k] for r in records]) for k in FIELDS})
    tmp.replace(path)


def build_synthetic(
    out_dir: Path,
    model: MorphableModel,
    n_renders: int,
    seed: int,
    store_size: int = 128,
    crops_per_render: int = 2,
    render_size: int = 320,
    shard_size: int = 500,
    crop_spec: CropSpec | None = None,
    jitter: Jitter | None = None,
    yaw_deg: float = 70.0,
    yaw_min_deg: float = 0.0,
) -> int:
    """Render ``n_renders`` synthetic faces (seeded) and write their crops as shards; resumable (existing
    shards are kept). Returns the number of samples in the folder.

    ``yaw_min_deg`` > 0 draws |yaw| uniformly in [yaw_min_deg, yaw_deg] (either side): a profile-only set,
    added to the all-yaw set so that large yaw, where the landmark fit is weakest, gets more samples."""
    from realtime.correspondence import load_correspondence
    from realtime.synthetic import SyntheticGenerator

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = crop_spec or CropSpec(input_size=store_size)
    spec = CropSpec(input_size=store_size, scale=spec.scale, offset_y=spec.offset_y)
    jit = jitter or Jitter()
    corr = load_correspondence(model)
    renders_per_shard = max(shard_size // crops_per_render, 1)
    n_shards = (n_renders + renders_per_shard - 1) // renders_per_shard
    t0 = time.perf_counter()
    with SyntheticGenerator(model, render_size, render_size, seed=seed, yaw_deg=yaw_deg) as gen:
        for s in range(n_shards):
            path = out_dir / f"shard_{seed:04d}_{s:04d}.npz"
            if path.exists():
                continue
            rng = np.random.default_rng([seed, s])
            records = []
            for i in range(s * renders_per_shard, min((s + 1) * renders_per_shard, n_renders)):
                if yaw_min_deg > 0:
                    side = 1.0 if rng.random() < 0.5 else -1.0
                    sample = gen.sample(
                        seed=seed * 10_000_000 + i, yaw_deg=side * float(rng.uniform(yaw_min_deg, yaw_deg))
                    )
                else:
                    sample = gen.sample(seed=seed * 10_000_000 + i)
                pts = sample.intrinsics.project(corr.points(sample.vertices_mm)[:N_SURFACE])
                lm68 = sample.vertices_mm[model.landmarks68]
                for _ in range(crops_per_render):
                    crop = jittered_crop(pts, spec, rng, jit)
                    records.append(
                        make_record(
                            sample.image,
                            sample.intrinsics,
                            sample.pose,
                            sample.identity,
                            sample.expression,
                            lm68,
                            crop,
                            exact=True,
                        )
                    )
            _write_shard(path, records)
            done = min((s + 1) * renders_per_shard, n_renders)
            rate = done / max(time.perf_counter() - t0, 1e-6)
            log.info("synthetic shard %d/%d (%d renders, %.1f renders/s)", s + 1, n_shards, done, rate)
    return count_samples(out_dir)


def build_pseudo_labelled(
    out_dir: Path,
    model: MorphableModel,
    videos: list[Path],
    store_size: int = 128,
    every: int = 3,
    crops_per_frame: int = 1,
    seed: int = 0,
    crop_spec: CropSpec | None = None,
    jitter: Jitter | None = None,
    max_residual_px: float = 4.0,
    max_frames: int | None = None,
) -> int:
    """Real video frames labelled by the fitter (MediaPipe → ``FaceFitter``); frames whose fit residual is
    above ``max_residual_px`` are skipped."""
    import av

    from realtime.correspondence import load_correspondence
    from realtime.fitting import FaceFitter
    from realtime.landmarks import FaceMeshTracker

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = crop_spec or CropSpec(input_size=store_size)
    spec = CropSpec(input_size=store_size, scale=spec.scale, offset_y=spec.offset_y)
    jit = jitter or Jitter()
    corr = load_correspondence(model)
    rng = np.random.default_rng(seed)
    for video in videos:
        path = out_dir / f"real_{video.stem}.npz"
        if path.exists():
            continue
        records = []
        with av.open(str(video)) as container, FaceMeshTracker() as tracker:
            stream = container.streams.video[0]
            fitter: FaceFitter | None = None
            for k, frame in enumerate(container.decode(stream)):
                if max_frames is not None and k >= max_frames:
                    break
                img = frame.to_ndarray(format="rgb24")
                tracks = tracker.track(img)
                if fitter is None:
                    fitter = FaceFitter(model, corr, Intrinsics.from_fov(img.shape[1], img.shape[0]))
                if not tracks:
                    continue
                fit = fitter.fit(tracks[0])
                if k % every or fit.residual_px > max_residual_px:
                    continue
                for _ in range(crops_per_frame):
                    crop = jittered_crop(tracks[0].landmarks_px, spec, rng, jit)
                    records.append(
                        make_record(
                            img,
                            fitter.intrinsics,
                            fit.pose,
                            fit.identity,
                            fit.expression,
                            fit.landmarks68_mm,
                            crop,
                            exact=False,
                        )
                    )
        if records:
            _write_shard(path, records)
        log.info("pseudo-labelled %s: %d crops", video.name, len(records))
    return count_samples(out_dir)


def shard_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz"))


def count_samples(folder: Path) -> int:
    n = 0
    for p in shard_paths(folder):
        with np.load(p) as d:
            n += int(d["g"].shape[0])
    return n


@dataclass
class ArrayDataset:
    """All samples of some shard folders in memory, images resized to ``input_size``."""

    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, folders: list[Path], input_size: int) -> ArrayDataset:
        return cls.load_files([p for f in folders for p in shard_paths(f)], input_size)

    @classmethod
    def load_files(cls, files: list[Path], input_size: int) -> ArrayDataset:
        import cv2

        parts: dict[str, list[np.ndarray]] = {k: [] for k in FIELDS}
        for p in files:
            with np.load(p) as d:
                for k in FIELDS:
                    a = d[k]
                    if k == "image" and a.shape[1] != input_size:
                        interp = cv2.INTER_AREA if a.shape[1] > input_size else cv2.INTER_LINEAR
                        a = np.stack(
                            [cv2.resize(im, (input_size, input_size), interpolation=interp) for im in a]
                        )
                    parts[k].append(a)
        if not parts["g"]:
            raise FileNotFoundError("no training shards")
        return cls({k: np.concatenate(v) for k, v in parts.items()})

    def __len__(self) -> int:
        return int(self.arrays["g"].shape[0])

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        return ArrayDataset({k: v[idx] for k, v in self.arrays.items()})

    def batches(
        self, batch_size: int, rng: np.random.Generator, shuffle: bool = True
    ) -> Iterator[dict[str, np.ndarray]]:
        order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for i in range(0, len(order) - (batch_size - 1 if shuffle else 0), batch_size):
            idx = order[i : i + batch_size]
            yield {k: v[idx] for k, v in self.arrays.items()}
