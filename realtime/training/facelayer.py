"""The face model as torch layers: coefficients → vertices, colours, crop projection (training only).

Following Mobile-FaceRNet (Sec. 3.1.1), the identity and albedo bases are fully connected layers
``FC_shape`` (identity → 3N) and ``FC_texture`` (albedo → 3N) initialised from the model's bases. They are
frozen by default: the engines ship coefficients for the fitter, which uses the face model's own bases, so
a fine-tuned basis would not reach the application (``train_bases=True`` fine-tunes them for experiments).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from realtime.engines.albedo import AlbedoModel
from realtime.engines.coeffs import NOMINAL_SIZE_MM, CoefficientLayout
from realtime.facemodel import MorphableModel


def rot6d_to_matrix(r6: torch.Tensor) -> torch.Tensor:
    a1, a2 = r6[..., 0:3], r6[..., 3:6]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    a2p = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2p / a2p.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


@dataclass
class Decoded:
    identity: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor  # (B, 3, 3) local (virtual camera)
    uvk: torch.Tensor
    sh: torch.Tensor
    albedo_coeffs: torch.Tensor


def split(coeffs: torch.Tensor, layout: CoefficientLayout) -> Decoded:
    s = layout.slices()
    return Decoded(
        identity=coeffs[:, s["identity"]],
        expression=coeffs[:, s["expression"]],
        rotation=rot6d_to_matrix(coeffs[:, s["rotation"]]),
        uvk=coeffs[:, s["translation"]],
        sh=coeffs[:, s["sh"]],
        albedo_coeffs=coeffs[:, s["albedo"]],
    )


def uniform_laplacian(n: int, triangles: np.ndarray) -> sp.csr_matrix:
    """L = I - D^-1 A over the mesh edges (paper Eq. 16: (1/d_i) Σ_j (v_i - v_j))."""
    e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = sp.diags(1.0 / np.maximum(deg, 1.0))
    return (sp.eye(n) - inv @ a).tocsr()


class FaceLayer(nn.Module):
    """Vertices of the region ``[0, n_vertices)`` (the narrow face area by default)."""
    triangles: torch.Tensor
    mean: torch.Tensor
    exp_basis: torch.Tensor
    albedo_mean: torch.Tensor
    landmarks68: torch.Tensor
    lap_index: torch.Tensor
    lap_value: torch.Tensor


    def __init__(
        self,
        model: MorphableModel,
        albedo: AlbedoModel,
        layout: CoefficientLayout,
        n_vertices: int | None = None,
        train_bases: bool = False,
    ) -> None:
        super().__init__()
        n = n_vertices or model.narrow_face_area_vertices or model.face_area_vertices
        self.layout = layout
        self.n = n
        tri = model.triangles[(model.triangles < n).all(axis=1)]
        self.register_buffer("triangles", torch.from_numpy(tri.astype(np.int64)))
        self.register_buffer("mean", torch.from_numpy(model.mean_mm[:n].reshape(-1)))
        self.fc_shape = nn.Linear(layout.identity, 3 * n, bias=False)
        self.fc_texture = nn.Linear(layout.albedo, 3 * n, bias=False)
        with torch.no_grad():
            self.fc_shape.weight.copy_(
                torch.from_numpy(
                    model.identity_basis_mm[: layout.identity, :n].reshape(layout.identity, -1).T
                )
            )
            self.fc_texture.weight.copy_(
                torch.from_numpy(albedo.basis[: layout.albedo, :n].reshape(layout.albedo, -1).T)
            )
        for p in (self.fc_shape.weight, self.fc_texture.weight):
            p.requires_grad_(train_bases)
        self.register_buffer(
            "exp_basis",
            torch.from_numpy(
                model.expression_basis_mm[: layout.expression, :n].reshape(layout.expression, -1)
            ),
        )
        self.register_buffer("albedo_mean", torch.from_numpy(albedo.mean[:n].reshape(-1)))
        lm = model.landmarks68
        if np.any(lm >= n):
            raise ValueError("the landmarks must lie in the rendered region")
        self.register_buffer("landmarks68", torch.from_numpy(lm.astype(np.int64)))
        lap = uniform_laplacian(n, tri).tocoo()
        self.register_buffer("lap_index", torch.from_numpy(np.vstack([lap.row, lap.col]).astype(np.int64)))
        self.register_buffer("lap_value", torch.from_numpy(lap.data.astype(np.float32)))

    def shape(self, d: Decoded) -> torch.Tensor:
        """(B, n, 3) model-space vertices in mm."""
        v = self.mean + self.fc_shape(d.identity) + d.expression @ self.exp_basis
        return v.view(v.shape[0], self.n, 3)

    def albedo(self, d: Decoded) -> torch.Tensor:
        a = self.albedo_mean + self.fc_texture(d.albedo_coeffs)
        return a.view(a.shape[0], self.n, 3).clamp(0.0, 1.0)

    def laplacian(self, v: torch.Tensor) -> torch.Tensor:
        """(B, n, 3) → (B, n, 3) uniform Laplacian."""
        lap = torch.sparse_coo_tensor(self.lap_index, self.lap_value, (self.n, self.n))
        flat = v.permute(1, 0, 2).reshape(self.n, -1)
        return torch.sparse.mm(lap, flat).view(self.n, v.shape[0], 3).permute(1, 0, 2)

    def to_camera(self, d: Decoded, v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Virtual-camera coordinates (B, n, 3) in mm; ``g`` (B,) is focal length / crop side."""
        z = g * NOMINAL_SIZE_MM * torch.exp(-d.uvk[:, 2].clamp(-10.0, 10.0))
        t = torch.stack([d.uvk[:, 0] * z / (2.0 * g), d.uvk[:, 1] * z / (2.0 * g), z], dim=-1)
        return v @ d.rotation.transpose(1, 2) + t[:, None, :]

    @staticmethod
    def project(p: torch.Tensor, g: torch.Tensor, size: int) -> torch.Tensor:
        """Virtual-camera points → input-crop pixels (pixel centres at integers)."""
        zz = p[..., 2].clamp_min(1.0)
        return (size * g[:, None, None]) * p[..., :2] / zz[..., None] + (size - 1) / 2.0
