"""A small vectorised CPU rasteriser for the refinement worker (triangle ids, barycentrics, depth).

The worker runs in a low-priority background process next to the live loop. Creating an EGL context
there would start llvmpipe's own thread pool and compete with the live renderer, so the refinement
stages rasterise the few thousand face triangles they need with numpy instead: every (triangle, pixel)
pair inside a triangle's bounding box is tested at once, and a depth sort keeps the nearest triangle.
The same function rasterises the UV layout (``depth=None``). Rendering for display stays with
``realtime.render.OffscreenRenderer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Raster:
    """Per-pixel coverage of a rasterised mesh."""

    triangle: np.ndarray
    """(H, W) int32 index into the triangles given (-1 = empty)."""
    barycentric: np.ndarray
    """(H, W, 3) float32 perspective-correct barycentric coordinates (0 where empty)."""

    @property
    def mask(self) -> np.ndarray:
        return self.triangle >= 0

    def interpolate(self, values: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """Interpolate per-vertex ``values`` (N, C) over covered pixels -> (H, W, C) (0 where empty)."""
        h, w = self.triangle.shape
        out = np.zeros((h, w, values.shape[1]), dtype=np.float32)
        m = self.mask
        corners = triangles[self.triangle[m]]  # (P, 3)
        out[m] = np.einsum("pk,pkc->pc", self.barycentric[m], values[corners])
        return out


def rasterize(points_px: np.ndarray, triangles: np.ndarray, height: int, width: int,
              depth: np.ndarray | None = None, max_pairs: int = 30_000_000) -> Raster:
    """Rasterise triangles given by 2-D vertex positions in pixels (centres at integer coordinates).

    ``depth`` (N,) positive camera z: the nearest triangle wins and barycentrics are perspective-correct;
    without it (UV layouts) the last triangle wins and barycentrics are affine. Back faces are kept
    (the caller picks triangles); degenerate triangles are skipped.
    """
    p = np.asarray(points_px, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(np.int64)
    hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(np.int64)
    lo = np.clip(lo, 0, [width - 1, height - 1])
    hi = np.clip(hi, 0, [width - 1, height - 1])
    nx = hi[:, 0] - lo[:, 0] + 1
    ny = hi[:, 1] - lo[:, 1] + 1
    ok = (np.abs(area) > 1e-12) & (nx > 0) & (ny > 0)
    ok &= (hi[:, 0] >= lo[:, 0]) & (hi[:, 1] >= lo[:, 1])
    idx = np.nonzero(ok)[0]
    counts = nx[idx] * ny[idx]
    total = int(counts.sum())
    if total > max_pairs:
        raise ValueError(f"rasterisation needs {total} candidate pairs (> {max_pairs}); triangles too large")
    t_of = np.repeat(idx, counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    local = np.arange(total, dtype=np.int64) - start
    px = lo[t_of, 0] + local % nx[t_of]
    py = lo[t_of, 1] + local // nx[t_of]
    # edge functions -> barycentrics of the pixel centre
    ax, ay = a[t_of, 0], a[t_of, 1]
    bx, by = b[t_of, 0], b[t_of, 1]
    cx, cy = c[t_of, 0], c[t_of, 1]
    inv = 1.0 / area[t_of]
    w0 = ((bx - px) * (cy - py) - (by - py) * (cx - px)) * inv
    w1 = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) * inv
    w2 = 1.0 - w0 - w1
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    t_of, px, py, w0, w1, w2 = t_of[inside], px[inside], py[inside], w0[inside], w1[inside], w2[inside]
    bary = np.stack((w0, w1, w2), axis=1)
    pix = py * width + px
    if depth is not None:
        z = np.asarray(depth, dtype=np.float64)[tri[t_of]]  # (P, 3)
        persp = bary / z
        bary = persp / persp.sum(axis=1, keepdims=True)
        zpix = 1.0 / ((np.stack((w0, w1, w2), axis=1) / z).sum(axis=1))
        order = np.lexsort((zpix, pix))  # by pixel, nearest first
    else:
        order = np.argsort(pix, kind="stable")[::-1]
    pix_sorted = pix[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pix_sorted[1:] != pix_sorted[:-1]
    keep = order[first]
    tri_img = np.full(height * width, -1, dtype=np.int32)
    bary_img = np.zeros((height * width, 3), dtype=np.float32)
    tri_img[pix[keep]] = t_of[keep]
    bary_img[pix[keep]] = bary[keep]
    return Raster(tri_img.reshape(height, width), bary_img.reshape(height, width, 3))


def depth_map(raster: Raster, depth: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(H, W) float32 camera z interpolated over covered pixels, 0 where empty."""
    z = raster.interpolate(np.asarray(depth, np.float32)[:, None], triangles)[..., 0]
    return z
