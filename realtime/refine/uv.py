"""UV-space maps of the face area: texel → surface point, texture unwrapping, displacement and normal maps.

The model's ``uv``/``triangle_uv`` give each triangle corner a texture coordinate (seams allowed). The face
area (``face_area_vertices``) lies in the first UV tile [0, 1]²; its layout is rasterised once per model and
size, so a texel knows its triangle and barycentric coordinates, and any per-vertex quantity (positions,
normals) or image-space map can be pulled into UV space with one gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from realtime.camera import Intrinsics
from realtime.facemodel import MorphableModel
from realtime.refine.raster import rasterize


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (counter-clockwise triangles -> outward normals)."""
    v = np.asarray(vertices, np.float64)
    t = np.asarray(triangles, np.int64)
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, t[:, k], fn)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True, eq=False)
class UVAtlas:
    """The rasterised UV layout of the face area at ``size`` x ``size`` texels (row 0 = v = 1)."""

    size: int
    triangles: np.ndarray
    """(T_f, 3) int32 model vertex indices of the face-area triangles."""
    triangle_uv: np.ndarray
    """(T_f, 3) int32 indices into ``uv``."""
    uv: np.ndarray
    """(M, 2) float32 model texture coordinates."""
    texel_triangle: np.ndarray
    """(size, size) int32 index into ``triangles`` (-1 = unused texel)."""
    texel_bary: np.ndarray
    """(size, size, 3) float32."""

    @classmethod
    def build(cls, model: MorphableModel, size: int = 256) -> UVAtlas:
        if model.uv is None or model.triangle_uv is None:
            raise ValueError(f"face model {model.name} has no texture coordinates")
        tri = np.asarray(model.triangles)
        tuv = np.asarray(model.triangle_uv)
        uv = np.asarray(model.uv, np.float32)
        face = (tri < model.face_area_vertices).all(axis=1)
        corners = uv[tuv]
        in_tile = ((corners >= 0.0) & (corners <= 1.0)).all(axis=(1, 2))
        keep = face & in_tile
        tri, tuv = tri[keep], tuv[keep]
        pix = np.stack((uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5), axis=1)
        r = rasterize(pix, tuv, size, size)
        return cls(size, tri.astype(np.int32), tuv.astype(np.int32), uv, r.triangle, r.barycentric)

    @property
    def mask(self) -> np.ndarray:
        return self.texel_triangle >= 0

    def gather(self, per_vertex: np.ndarray) -> np.ndarray:
        """Interpolate (N, C) per-vertex values at every used texel -> (size, size, C), 0 elsewhere."""
        out = np.zeros((self.size, self.size, per_vertex.shape[1]), np.float64)
        m = self.mask
        corners = self.triangles[self.texel_triangle[m]]
        out[m] = np.einsum("pk,pkc->pc", self.texel_bary[m], np.asarray(per_vertex, np.float64)[corners])
        return out

    def texel_uv(self) -> np.ndarray:
        """(size, size, 2) the UV coordinate at each texel centre."""
        j, i = np.meshgrid(np.arange(self.size), np.arange(self.size))
        return np.stack(((j + 0.5) / self.size, 1.0 - (i + 0.5) / self.size), axis=-1)


def sample_image(image: np.ndarray, points_px: np.ndarray, order: int = 1) -> np.ndarray:
    """Bilinear samples of an (H, W[, C]) image at (..., 2) pixel positions (x, y); edge values outside."""
    pts = np.asarray(points_px, np.float64)
    flat = pts.reshape(-1, 2)
    coords = [flat[:, 1], flat[:, 0]]
    if image.ndim == 2:
        return np.asarray(map_coordinates(image, coords, order=order, mode="nearest")).reshape(pts.shape[:-1])
    chans = [map_coordinates(image[..., c], coords, order=order, mode="nearest")
             for c in range(image.shape[2])]
    return np.stack(chans, axis=-1).reshape(*pts.shape[:-1], image.shape[2])


@dataclass(frozen=True, slots=True)
class View:
    """One image of the face with the camera-space mesh that explains it."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    vertices_mm: np.ndarray
    """(N, 3) camera-space vertices."""
    intrinsics: Intrinsics
    depth: np.ndarray
    """(H, W) camera z of the visible surface (0 = empty), for the visibility test."""


def unwrap_texture(atlas: UVAtlas, views: list[View], triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture (size, size, 3) uint8 blended from the views by how squarely each sees a texel, + coverage.

    Texels no view sees are filled from the nearest seen texel (so the export has no black holes).
    """
    acc = np.zeros((atlas.size, atlas.size, 3))
    wsum = np.zeros((atlas.size, atlas.size))
    for view in views:
        pos = atlas.gather(view.vertices_mm)
        nrm = atlas.gather(vertex_normals(view.vertices_mm, triangles))
        px = view.intrinsics.project(np.where(atlas.mask[..., None], pos, [0.0, 0.0, 1.0]))
        ray = pos / np.maximum(np.linalg.norm(pos, axis=-1, keepdims=True), 1e-9)
        facing = np.clip(-(ray * nrm).sum(-1), 0.0, 1.0)
        h, w = view.depth.shape
        inside = (px[..., 0] >= 0) & (px[..., 0] <= w - 1) & (px[..., 1] >= 0) & (px[..., 1] <= h - 1)
        zs = sample_image(view.depth.astype(np.float64), px, order=0)
        visible = atlas.mask & inside & (zs > 0) & (np.abs(zs - pos[..., 2]) < 4.0)
        wgt = np.where(visible, facing**2, 0.0)
        col = sample_image(view.image.astype(np.float64), px)
        acc += col * wgt[..., None]
        wsum += wgt
    seen = wsum > 1e-6
    tex = np.zeros((atlas.size, atlas.size, 3))
    tex[seen] = acc[seen] / wsum[seen, None]
    if seen.any():
        _, (ii, jj) = distance_transform_edt(~seen, return_indices=True)
        tex = tex[ii, jj]
    return np.clip(tex, 0, 255).astype(np.uint8), seen
