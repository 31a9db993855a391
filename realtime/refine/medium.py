"""Medium stage (Jin et al. 2021, §3.3): Laplacian-coordinate deformation toward the dense landmarks.

The coarse fit is a low-dimensional model; the 478 MediaPipe landmarks carry more local information
(eyelids, nostrils, lip contour). Each landmark pulls its barycentric surface point toward the ray
through the detected pixel, while the uniform Laplacian coordinates ``L(v_i) = v_i - mean(neighbours)``
keep the local shape: ``min ||L V' - L V||² + Σ w_i² ||C_i V' - μ_i||²`` (Eq. 3), solved as one sparse
normal-equation system (three right-hand sides) with ``scipy.sparse``.

The paper's weights are w = 0.6 for eye and nose landmarks and 0.1 for eyebrows and mouth; the
remaining (contour) landmarks also get 0.1. ``μ_i`` is the detected pixel back-projected at the current
depth of the surface point (the paper's "image x, y with the vertex's z").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.spatial import Delaunay

from realtime.camera import Intrinsics
from realtime.facemodel import MorphableModel

log = logging.getLogger(__name__)

REGION_SKIN, REGION_BROW, REGION_EYE, REGION_NOSE, REGION_MOUTH = 0, 1, 2, 3, 4
REGION_NAMES = ("skin", "brow", "eye", "nose", "mouth")
REGION_WEIGHTS = np.array([0.1, 0.1, 0.6, 0.6, 0.1], dtype=np.float64)
"""Landmark weights per region (paper §4.1: eyes and nose 0.6, eyebrows and mouth 0.1)."""


def _in_hull(points: np.ndarray, hull_points: np.ndarray, grow_mm: float) -> np.ndarray:
    centre = hull_points.mean(axis=0)
    d = hull_points - centre
    n = np.linalg.norm(d, axis=1, keepdims=True)
    grown = hull_points + d / np.maximum(n, 1e-9) * grow_mm
    return np.asarray(Delaunay(grown).find_simplex(points) >= 0)


def _near_polyline(points: np.ndarray, poly: np.ndarray, radius_mm: float) -> np.ndarray:
    a, b = poly[:-1], poly[1:]
    ab = b - a
    t = np.clip(np.einsum("pkd,kd->pk", points[:, None, :] - a[None], ab) / (ab * ab).sum(1), 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    dist = np.linalg.norm(points[:, None, :] - closest, axis=2).min(axis=1)
    return np.asarray(dist < radius_mm)


def vertex_regions(model: MorphableModel) -> np.ndarray:
    """(N,) int8 semantic region of each vertex (skin, brow, eye, nose, mouth) from the iBUG-68 landmarks.

    Regions are drawn in the frontal (x, y) plane of the mean shape: eyes and mouth inside their
    landmark contours (slightly grown), nose inside the hull of landmarks 27-35 plus the alar wings,
    brows within 6 mm of the brow polylines. Only face-area vertices in front (z above the eye
    corners' depth minus 25 mm) are labelled; everything else is skin.
    """
    return _vertex_regions_cached(id(model), model)


@lru_cache(maxsize=4)
def _vertex_regions_cached(_key: int, model: MorphableModel) -> np.ndarray:
    v = model.mean_mm
    lm = v[model.landmarks68]
    xy = v[:, :2].astype(np.float64)
    front = np.zeros(len(v), dtype=bool)
    front[: model.face_area_vertices] = v[: model.face_area_vertices, 2] > lm[[36, 45], 2].mean() - 25.0
    labels = np.zeros(len(v), dtype=np.int8)
    lm2 = lm[:, :2].astype(np.float64)
    brow = _near_polyline(xy, lm2[17:22], 6.0) | _near_polyline(xy, lm2[22:27], 6.0)
    nose_pts = np.concatenate([lm2[27:36], lm2[[31, 35]] + np.array([[-4.0, 3.0], [4.0, 3.0]])])
    nose = _in_hull(xy, nose_pts, 2.0)
    eye = _in_hull(xy, lm2[36:42], 2.5) | _in_hull(xy, lm2[42:48], 2.5)
    mouth = _in_hull(xy, lm2[48:60], 2.0)
    for region, m in ((REGION_BROW, brow), (REGION_NOSE, nose), (REGION_MOUTH, mouth), (REGION_EYE, eye)):
        labels[m & front] = region
    return labels


def uniform_laplacian(n_vertices: int, triangles: np.ndarray) -> sp.csr_matrix:
    """``L = I - D^-1 A`` with A the vertex adjacency of the mesh (ω_ij = 1 / N_i, paper Eq. 2)."""
    t = np.asarray(triangles, dtype=np.int64)
    i = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    j = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    adj.data[:] = 1.0  # duplicates summed by tocsr -> back to a 0/1 adjacency
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    return (sp.identity(n_vertices, format="csr") - sp.diags(inv) @ adj).tocsr()


@dataclass(frozen=True, slots=True)
class MediumResult:
    vertices_mm: np.ndarray
    """(N, 3) float32 deformed camera-space vertices."""
    landmark_error_px_before: float
    landmark_error_px_after: float
    """Weighted RMS distance of the landmarks' surface points to the detected pixels."""


def laplacian_deform(vertices_cam: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
                     landmarks_px: np.ndarray, vertex_ids: np.ndarray, barycentric: np.ndarray,
                     weights: np.ndarray, anchor_weight: float = 0.05) -> MediumResult:
    """Deform camera-space ``vertices_cam`` so the landmark surface points meet the detected pixels.

    ``vertex_ids``/``barycentric`` (M, 3) locate each landmark on the mesh, ``landmarks_px`` (M, 2) are the
    detections, ``weights`` (M,) the per-landmark w (0 = ignore). ``anchor_weight`` ties every vertex weakly
    to its coarse position: Laplacian coordinates alone leave rigid and linear drifts of the parts far from
    any landmark (the back of the head) free.
    """
    v = np.asarray(vertices_cam, dtype=np.float64)
    n = len(v)
    use = np.asarray(weights) > 0
    ids, bary, w = vertex_ids[use], barycentric[use].astype(np.float64), np.asarray(weights, np.float64)[use]
    uv = np.asarray(landmarks_px, np.float64)[use, :2]
    m = len(ids)
    current = np.einsum("mk,mkd->md", bary, v[ids])
    z = current[:, 2]
    mu = np.stack(((uv[:, 0] - intrinsics.cx) / intrinsics.fx * z,
                   (uv[:, 1] - intrinsics.cy) / intrinsics.fy * z, z), axis=1)
    lap = uniform_laplacian(n, triangles)
    c = sp.csr_matrix((bary.ravel(), (np.repeat(np.arange(m), 3), ids.ravel())), shape=(m, n))
    w2 = sp.diags(w * w)
    a2 = anchor_weight**2
    lhs = (lap.T @ lap + c.T @ w2 @ c + a2 * sp.identity(n)).tocsc()
    rhs = lap.T @ (lap @ v) + c.T @ (w2 @ mu) + a2 * v
    solved = splu(lhs).solve(rhs)

    def err(points: np.ndarray) -> float:
        px = intrinsics.project(points)
        d2 = ((px - uv) ** 2).sum(axis=1)
        return float(np.sqrt((w * d2).sum() / w.sum()))

    after = np.einsum("mk,mkd->md", bary, solved[ids])
    result = MediumResult(solved.astype(np.float32), err(current), err(after))
    log.debug("medium stage: landmark error %.2f -> %.2f px", result.landmark_error_px_before,
              result.landmark_error_px_after)
    return result


def landmark_weights(model: MorphableModel, vertex_ids: np.ndarray, reliability: np.ndarray) -> np.ndarray:
    """Paper weights per landmark from the region of its first vertex, times the table's reliability."""
    regions = vertex_regions(model)[vertex_ids[:, 0]]
    return (REGION_WEIGHTS[regions] * np.asarray(reliability, np.float64)).astype(np.float64)
