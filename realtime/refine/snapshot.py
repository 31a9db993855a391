"""Refine one snapshot end to end: coarse fit → medium (Laplacian) → fine (SFS) → detailed mesh + UV maps.

Everything here is numpy/scipy and single-threaded, so it can run in the low-priority worker process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from realtime.camera import Intrinsics
from realtime.correspondence import Correspondence
from realtime.facemodel import MorphableModel
from realtime.refine.medium import landmark_weights, laplacian_deform, vertex_regions
from realtime.refine.photometric import PhotoFitOptions
from realtime.refine.raster import Raster, depth_map, rasterize
from realtime.refine.sfs import SfsOptions, SfsResult, run_sfs
from realtime.refine.uv import UVAtlas, sample_image, vertex_normals
from realtime.results import FaceFit, FaceTrack

log = logging.getLogger(__name__)

N_SURFACE = 468


@dataclass(frozen=True, slots=True)
class RefineOptions:
    mm_per_px: float = 1.0
    """Working resolution of the SFS crop on the face (the paper's λ are tuned around ~1 mm pixels)."""
    max_crop_px: int = 260
    uv_size: int = 256
    medium: bool = True
    medium_weight: float = 1.0
    """Scale of the medium stage's landmark weights (the paper's 0.6 / 0.1 per region)."""
    photometric: bool = True
    """Refine the landmark fit's identity and pose against the image(s) first (``realtime.refine.photometric``)."""
    photo: PhotoFitOptions = field(default_factory=PhotoFitOptions)
    sfs: SfsOptions = field(default_factory=SfsOptions)
    holdout_fraction: float = 0.0
    """Evaluation only (``tools/bench_refine.py``): this fraction of the crop's ``holdout_block_px`` blocks
    (random, seeded) is left out of every data term of the fine stage (``run_sfs(holdout=...)``)."""
    holdout_block_px: int = 6


@dataclass(slots=True)
class Crop:
    x0: float
    y0: float
    scale: float
    intrinsics: Intrinsics
    """Intrinsics of the (scaled) crop."""
    image: np.ndarray
    """(h, w, 3) float in [0, 1]."""


@dataclass(slots=True)
class RefinedFace:
    """Result of refining one snapshot (camera space of the input image)."""

    coarse_vertices_mm: np.ndarray
    medium_vertices_mm: np.ndarray
    detailed_vertices_mm: np.ndarray
    triangles: np.ndarray
    fit: FaceFit
    intrinsics: Intrinsics
    crop: Crop
    sfs: SfsResult
    displacement_uv: np.ndarray
    """(S, S) float32 displacement along the outward normal in mm (0 where unseen)."""
    normal_uv: np.ndarray
    """(S, S, 3) float32 refined model-space normals (0 where unseen)."""
    coarse_normal_uv: np.ndarray
    """(S, S, 3) model-space normals of the medium mesh."""
    uv_valid: np.ndarray
    """(S, S) bool texels the SFS refined."""
    landmark_error_px: tuple[float, float]
    """Medium stage: landmark error before/after the Laplacian deformation."""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def photometric_errors(self) -> tuple[float, float]:
        """Mean absolute error (0-255 grey levels) of the coarse and refined renders over the refined face."""
        m = self.sfs.mask
        img = self.crop.image
        coarse = np.abs(self.sfs.render(refined=False) - img)[m].mean() * 255.0
        refined = np.abs(self.sfs.render(refined=True) - img)[m].mean() * 255.0
        return float(coarse), float(refined)


def holdout_blocks(shape: tuple[int, int], block_px: int, fraction: float, seed: int = 0) -> np.ndarray:
    """(H, W) bool: a seeded random ``fraction`` of the ``block_px`` squares of the image."""
    h, w = shape
    b = max(int(block_px), 1)
    rng = np.random.default_rng(seed)
    blocks = rng.random((-(-h // b), -(-w // b))) < fraction
    return np.asarray(np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[:h, :w])


def make_crop(
    image: np.ndarray,
    vertices_mm: np.ndarray,
    model: MorphableModel,
    intrinsics: Intrinsics,
    opts: RefineOptions,
) -> Crop:
    face = vertices_mm[: model.face_area_vertices]
    px = intrinsics.project(face)
    lo, hi = px.min(axis=0), px.max(axis=0)
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    z = float(np.median(face[:, 2]))
    scale = min(1.0, (z / intrinsics.fx) / opts.mm_per_px)  # never upsample the photo
    scale = min(scale, opts.max_crop_px / max(float((hi - lo).max()), 1.0))
    x0, y0 = int(max(np.floor(lo[0]), 0)), int(max(np.floor(lo[1]), 0))
    x1, y1 = int(min(np.ceil(hi[0]), intrinsics.width - 1)), int(min(np.ceil(hi[1]), intrinsics.height - 1))
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise ValueError("the face is (almost) outside the image")
    region = image[y0 : y1 + 1, x0 : x1 + 1]
    w = max(round(region.shape[1] * scale), 16)
    h = max(round(region.shape[0] * scale), 16)
    sub = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    # cv2.resize maps pixel centres: crop u' sees original x = x0 + (u' + 0.5) / sx - 0.5
    sx, sy = w / region.shape[1], h / region.shape[0]
    k = Intrinsics(
        intrinsics.fx * sx,
        intrinsics.fy * sy,
        (intrinsics.cx - x0 + 0.5) * sx - 0.5,
        (intrinsics.cy - y0 + 0.5) * sy - 0.5,
        w,
        h,
    )
    return Crop(float(x0), float(y0), sx, k, sub.astype(np.float64) / 255.0)


def _sample_depth(depth: np.ndarray, px: np.ndarray) -> np.ndarray:
    return np.asarray(sample_image(depth, px, order=0))


def detailed_vertices(
    vertices: np.ndarray,
    raster_depth: np.ndarray,
    refined_depth: np.ndarray,
    base_depth: np.ndarray,
    mask: np.ndarray,
    k: Intrinsics,
    face_vertices: int,
) -> np.ndarray:
    """Move visible face vertices along their camera ray by the SFS detail (refined - base depth)."""
    out = vertices.astype(np.float64).copy()
    face = out[:face_vertices]
    px = k.project(face)
    h, w = mask.shape
    inside = (px[:, 0] >= 0) & (px[:, 0] <= w - 1) & (px[:, 1] >= 0) & (px[:, 1] <= h - 1)
    z_vis = _sample_depth(raster_depth, px)
    m_ok = _sample_depth(mask.astype(np.float64), px) > 0.5
    visible = inside & m_ok & (np.abs(z_vis - face[:, 2]) < 3.0)
    # bilinear over the refined detail layer (refined - medium), added to the vertex's own depth
    detail = sample_image(np.where(mask, refined_depth - base_depth, 0.0), px)
    z_new = face[:, 2] + np.where(visible, detail, 0.0)
    face *= (z_new / face[:, 2])[:, None]
    out[:face_vertices] = face
    return out.astype(np.float32)


def refine_snapshot(
    image: np.ndarray,
    track: FaceTrack,
    fit: FaceFit,
    model: MorphableModel,
    correspondence: Correspondence,
    intrinsics: Intrinsics,
    options: RefineOptions | None = None,
    atlas: UVAtlas | None = None,
) -> RefinedFace:
    """Refine one frame. ``image`` (H, W, 3) uint8 RGB; ``fit`` the coarse fit of ``track``."""
    opts = options or RefineOptions()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    coarse = np.asarray(fit.vertices_mm, np.float64)
    tri = np.asarray(model.triangles)
    if opts.medium:
        ids = correspondence.vertex_ids[:N_SURFACE]
        lw = landmark_weights(model, ids, correspondence.weights[:N_SURFACE]) * opts.medium_weight
        med = laplacian_deform(
            coarse,
            tri,
            intrinsics,
            np.asarray(track.landmarks_px)[:N_SURFACE, :2],
            ids,
            correspondence.barycentric[:N_SURFACE],
            lw,
        )
        medium = med.vertices_mm.astype(np.float64)
        lm_err = (med.landmark_error_px_before, med.landmark_error_px_after)
    else:
        medium, lm_err = coarse, (float("nan"), float("nan"))
    timings["medium"] = (time.perf_counter() - t0) * 1e3

    t1 = time.perf_counter()
    crop = make_crop(image, medium, model, intrinsics, opts)
    k = crop.intrinsics
    px = k.project(medium)
    front = medium[:, 2] > 1.0
    tri_front = tri[front[tri].all(axis=1)]
    r: Raster = rasterize(px, tri_front, k.height, k.width, depth=medium[:, 2])
    depth0 = depth_map(r, medium[:, 2], tri_front)
    regions_v = vertex_regions(model)
    tri_ids = np.where(r.mask, r.triangle, 0)
    first_v = tri_front[tri_ids, 0]
    narrow = model.narrow_face_area_vertices or model.face_area_vertices
    mask = r.mask & (tri_front[tri_ids] < narrow).all(axis=-1)
    regions = np.where(r.mask, regions_v[first_v], 0).astype(np.int64)
    timings["raster"] = (time.perf_counter() - t1) * 1e3

    t2 = time.perf_counter()
    vn = r.interpolate(vertex_normals(medium, tri), tri_front)
    holdout = None
    if opts.holdout_fraction > 0.0:
        holdout = holdout_blocks(mask.shape, opts.holdout_block_px, opts.holdout_fraction)
    sfs = run_sfs(crop.image, depth0, mask, regions, k, opts.sfs, smooth_normals=vn, holdout=holdout)
    timings["sfs"] = (time.perf_counter() - t2) * 1e3
    for key, val in sfs.timings_ms.items():
        timings[f"sfs.{key}"] = val

    t3 = time.perf_counter()
    detailed = detailed_vertices(medium, depth0, sfs.depth, sfs.depth0, sfs.mask, k, model.face_area_vertices)
    atlas = atlas if atlas is not None and atlas.size == opts.uv_size else UVAtlas.build(model, opts.uv_size)
    disp, nmap, nmap0, valid = uv_maps(atlas, medium, tri, k, sfs, fit.pose.rotation)
    timings["uv"] = (time.perf_counter() - t3) * 1e3
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return RefinedFace(
        coarse.astype(np.float32),
        medium.astype(np.float32),
        detailed,
        tri,
        fit,
        intrinsics,
        crop,
        sfs,
        disp,
        nmap,
        nmap0,
        valid,
        lm_err,
        timings,
    )


def uv_maps(
    atlas: UVAtlas,
    vertices: np.ndarray,
    triangles: np.ndarray,
    k: Intrinsics,
    sfs: SfsResult,
    rotation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Displacement (mm, along the outward normal) and model-space normal maps in UV space."""
    pos = atlas.gather(vertices)
    nrm = atlas.gather(vertex_normals(vertices, triangles))
    nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-9)
    safe = np.where(atlas.mask[..., None], pos, [0.0, 0.0, 1.0])
    px = k.project(safe)
    h, w = sfs.mask.shape
    inside = (px[..., 0] >= 0) & (px[..., 0] <= w - 1) & (px[..., 1] >= 0) & (px[..., 1] <= h - 1)
    z0 = sample_image(sfs.depth0, px, order=0)
    in_mask = sample_image(sfs.mask.astype(np.float64), px, order=0) > 0.5
    valid = atlas.mask & inside & in_mask & (np.abs(z0 - safe[..., 2]) < 3.0)
    dz = sample_image(np.where(sfs.mask, sfs.depth - sfs.depth0, 0.0), px)
    ray = safe / safe[..., 2:3]
    disp = np.where(valid, dz * (ray * nrm).sum(-1), 0.0)  # Δz along the ray, projected on the normal
    # refined camera normals at the texel, rotated into model space
    n_ref = sample_image(sfs.normals, px)
    n_ref /= np.maximum(np.linalg.norm(n_ref, axis=-1, keepdims=True), 1e-9)
    rot = np.asarray(rotation, np.float64)
    nmap = np.where(valid[..., None], n_ref @ rot, 0.0)
    nmap0 = np.where(atlas.mask[..., None], nrm @ rot, 0.0)
    return disp.astype(np.float32), nmap.astype(np.float32), nmap0.astype(np.float32), valid
