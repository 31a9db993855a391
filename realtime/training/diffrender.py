"""A small differentiable renderer in torch for the photometric and SSIM losses.

Two steps, as in most analysis-by-synthesis trainers:

1. :func:`rasterize` finds, without gradients, which triangle is visible at each pixel centre: every
   front-facing triangle tests the pixel centres inside its bounding box (a K x K window; at the engines'
   crop sizes ICT triangles cover one to a few pixels) and a z-buffer (``scatter_reduce(amin)``) keeps the
   nearest.
2. :func:`interpolate` recomputes the barycentric coordinates of those pixel centres from the projected
   vertex positions *with* gradients and interpolates vertex attributes, so the loss reaches the
   coefficients through both the geometry and the colours.

Shading is Lambertian with second-order spherical harmonics (27 coefficients) as in the papers; normals are
expressed in an OpenGL-style camera frame (x right, y up, z toward the viewer) so that the DC term alone is
a uniform ambient light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
_C = (
    1.0 / math.sqrt(4.0 * math.pi),
    math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
    3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi),
)
SH_DC = _A[0] * _C[0]
"""Value of the first (constant) basis function: a DC coefficient of ``1 / SH_DC`` gives unit shading."""


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals (OpenGL camera frame) → (..., 9) Lambertian-convolved real SH basis."""
    x, y, z = normals.unbind(-1)
    a0, a1, a2 = _A
    c0, c1, c2 = _C
    return torch.stack(
        [
            torch.full_like(x, a0 * c0),
            -a1 * c1 * y,
            a1 * c1 * z,
            -a1 * c1 * x,
            a2 * c2 * x * y,
            -a2 * c2 * y * z,
            a2 * c2 * 0.5 / math.sqrt(3.0) * (3.0 * z * z - 1.0),
            -a2 * c2 * x * z,
            a2 * c2 * 0.5 * (x * x - y * y),
        ],
        dim=-1,
    )


def shade(albedo: torch.Tensor, normals_gl: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """albedo (B, N, 3), normals (B, N, 3), sh (B, 27) as (9, 3) per image → colours (B, N, 3)."""
    basis = sh_basis(normals_gl)  # (B, N, 9)
    return albedo * torch.einsum("bnk,bkc->bnc", basis, sh.view(-1, 9, 3))


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) area-weighted unit vertex normals of a counter-clockwise mesh (differentiable)."""
    a = vertices[:, triangles[:, 0]]
    b = vertices[:, triangles[:, 1]]
    c = vertices[:, triangles[:, 2]]
    fn = torch.cross(b - a, c - a, dim=-1)
    n = torch.zeros_like(vertices)
    for k in range(3):
        n = n.index_add(1, triangles[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)


@dataclass
class Fragments:
    """Visible (pixel, triangle) pairs of a batch, flattened over the batch."""

    batch: torch.Tensor  # (P,) long
    py: torch.Tensor  # (P,) long
    px: torch.Tensor  # (P,) long
    triangle: torch.Tensor  # (P,) long
    size: int

    def mask(self, batch_size: int) -> torch.Tensor:
        m = torch.zeros(batch_size, self.size, self.size, dtype=torch.bool)
        m[self.batch, self.py, self.px] = True
        return m


@torch.no_grad()
def rasterize(
    points: torch.Tensor,
    depth: torch.Tensor,
    triangles: torch.Tensor,
    size: int,
    window: int | None = None,
    max_window: int = 6,
) -> Fragments:
    """Visible triangle per pixel centre of a ``size`` x ``size`` image.

    points: (B, N, 2) pixel coordinates (pixel centres at integers); depth: (B, N), larger = farther;
    triangles: (T, 3) long, counter-clockwise seen from outside (the camera looks along +z, y down).
    """
    bsz = points.shape[0]
    a, b, c = (points[:, triangles[:, k]] for k in range(3))  # (B, T, 2)
    za, zb, zc = (depth[:, triangles[:, k]] for k in range(3))
    # Signed double area in image axes (y down): a counter-clockwise-from-outside triangle facing the
    # camera appears clockwise on screen, i.e. negative here.
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        c[..., 0] - a[..., 0]
    )
    front = area < -1e-9
    lo = torch.minimum(torch.minimum(a, b), c).ceil()
    hi = torch.maximum(torch.maximum(a, b), c).floor()
    if window is None:
        span = (hi - lo)[front]
        window = int(min(max(int(span.max().item()) + 1 if span.numel() else 1, 1), max_window))
    off = torch.arange(window, dtype=points.dtype)
    px = lo[..., 0, None, None] + off.view(1, 1, 1, window)  # (B, T, 1, K)
    py = lo[..., 1, None, None] + off.view(1, 1, window, 1)  # (B, T, K, 1)
    px, py = torch.broadcast_tensors(px, py)

    def edge(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        # Signed area of (p, q, pixel): the barycentric weight of the opposite vertex times 2*area.
        return (q[..., 0, None, None] - p[..., 0, None, None]) * (py - p[..., 1, None, None]) - (
            q[..., 1, None, None] - p[..., 1, None, None]
        ) * (px - p[..., 0, None, None])

    inv = 1.0 / torch.where(front, area, torch.full_like(area, -1.0))[..., None, None]
    w0 = edge(b, c) * inv
    w1 = edge(c, a) * inv
    w2 = edge(a, b) * inv
    inside = (
        (w0 >= 0)
        & (w1 >= 0)
        & (w2 >= 0)
        & front[..., None, None]
        & (px <= hi[..., 0, None, None])
        & (py <= hi[..., 1, None, None])
        & (px >= 0)
        & (py >= 0)
        & (px < size)
        & (py < size)
    )
    z = w0 * za[..., None, None] + w1 * zb[..., None, None] + w2 * zc[..., None, None]
    bidx, tidx, _, _ = torch.nonzero(inside, as_tuple=True)
    zin = z[inside]
    pix = bidx * size * size + py[inside].long() * size + px[inside].long()
    zbuf = torch.full((bsz * size * size,), float("inf"), dtype=z.dtype)
    zbuf.scatter_reduce_(0, pix, zin, reduce="amin")
    win = zin <= zbuf[pix]
    tri_map = torch.full((bsz * size * size,), -1, dtype=torch.long)
    tri_map.scatter_reduce_(0, pix[win], tidx[win], reduce="amax")
    vis = torch.nonzero(tri_map >= 0, as_tuple=True)[0]
    return Fragments(
        batch=vis // (size * size), py=(vis // size) % size, px=vis % size, triangle=tri_map[vis], size=size
    )


def interpolate(
    points: torch.Tensor, attributes: torch.Tensor, triangles: torch.Tensor, frags: Fragments
) -> torch.Tensor:
    """(P, C) attributes at the visible pixel centres, differentiable w.r.t. points and attributes."""
    tri = triangles[frags.triangle]  # (P, 3)
    bb = frags.batch[:, None].expand(-1, 3)
    v = points[bb, tri]  # (P, 3, 2)
    p = torch.stack([frags.px, frags.py], dim=-1).to(points.dtype)
    a, b, c = v[:, 0], v[:, 1], v[:, 2]

    def cross(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0]

    area = cross(b - a, c - a)
    area = torch.where(area.abs() < 1e-9, torch.full_like(area, -1e-9), area)
    w = torch.stack([cross(c - b, p - b), cross(a - c, p - c), cross(b - a, p - a)], dim=-1) / area[:, None]
    w = w.clamp_min(0.0)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-8)
    attrs = attributes[bb, tri]  # (P, 3, C)
    return (w[..., None] * attrs).sum(dim=1)
