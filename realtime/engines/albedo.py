"""A small linear albedo (skin colour) model for face models without one (the ICT-FaceKit has no texture).

``albedo(β) = mean + Σ_k β_k · basis_k`` per vertex, RGB in [0, 1] (linear), ``β ~ N(0, 1)``. The ten modes
are hand-designed colour fields on soft regions found from the model's iBUG-68 landmarks, so the model is
deterministic, costs no file and exists for every face model with ``landmarks68``:

====  ==========================================================================
mode  meaning (one standard deviation)
====  ==========================================================================
0     global skin lightness (dark ↔ light skin, ±0.17 in red)
1     global redness
2     global yellowness
3     lip colour strength (darker/redder lips)
4     lip hue (pink ↔ brown)
5     eyebrow darkness
6     cheek redness (flush)
7     top-to-bottom gradient (forehead vs chin)
8     left/right asymmetry
9     beard shadow (chin, jaw and upper lip)
====  ==========================================================================

It spans the kind of variation the photometric loss needs to explain skin colour, lips and brows
without pushing that variation into shape or lighting; it is not a statistical model of real skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from realtime.facemodel import MorphableModel

N_ALBEDO = 10
MEAN_SKIN = np.array([0.72, 0.52, 0.42], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class AlbedoModel:
    mean: np.ndarray
    """(N, 3) float32 mean albedo."""
    basis: np.ndarray
    """(K, N, 3) float32 modes (one standard deviation each)."""

    @property
    def n_modes(self) -> int:
        return int(self.basis.shape[0])

    def colors(self, coeffs: np.ndarray | None) -> np.ndarray:
        """(N, 3) albedo in [0, 1] for ``coeffs`` (K,) (the mean when None)."""
        out = self.mean.copy()
        if coeffs is not None:
            c = np.asarray(coeffs, np.float32)[: self.n_modes]
            out += np.tensordot(c, self.basis[: c.shape[0]], axes=1)
        return np.clip(out, 0.0, 1.0)


def _soft_region(points: np.ndarray, centres: np.ndarray, sigma_mm: float) -> np.ndarray:
    """(N,) Gaussian falloff of the distance from each point to the nearest centre."""
    d, _ = cKDTree(centres).query(points)
    return np.exp(-0.5 * (d / sigma_mm) ** 2).astype(np.float32)


def build_albedo_model(model: MorphableModel, n_modes: int = N_ALBEDO) -> AlbedoModel:
    """The albedo model of ``model`` (see the module docstring); deterministic, a few milliseconds."""
    v = model.mean_mm.astype(np.float32)
    lm = v[model.landmarks68]
    n = v.shape[0]
    ones = np.ones((n, 1), np.float32)

    lips = _soft_region(v, lm[48:68], 4.0)
    brows = _soft_region(v, lm[17:27], 4.0)
    cheek_l = (lm[13] + lm[35] + lm[46]) / 3.0
    cheek_r = (lm[3] + lm[31] + lm[41]) / 3.0
    cheeks = _soft_region(v, np.stack([cheek_l, cheek_r]), 14.0)
    beard = _soft_region(v, np.concatenate([lm[4:13], lm[[33, 50, 51, 52]]]), 10.0)
    # The face spans roughly brow-to-chin; normalise the gradients to about [-1, 1] over it.
    y = (v[:, 1] - lm[:, 1].mean()) / max(float(np.ptp(lm[:, 1])), 1.0) * 2.0
    x = (v[:, 0] - lm[:, 0].mean()) / max(float(np.ptp(lm[:, 0])), 1.0) * 2.0

    mean = np.tile(MEAN_SKIN, (n, 1))
    mean += lips[:, None] * np.array([-0.08, -0.22, -0.14], np.float32)
    mean += brows[:, None] * np.array([-0.25, -0.22, -0.2], np.float32)

    modes = [
        ones * np.array([0.17, 0.145, 0.125], np.float32),
        ones * np.array([0.035, -0.018, -0.018], np.float32),
        ones * np.array([0.012, 0.012, -0.035], np.float32),
        lips[:, None] * np.array([-0.03, -0.08, -0.05], np.float32),
        lips[:, None] * np.array([0.02, -0.03, 0.03], np.float32),
        brows[:, None] * np.array([-0.1, -0.09, -0.08], np.float32),
        cheeks[:, None] * np.array([0.035, -0.03, -0.02], np.float32),
        np.clip(y, -1.5, 1.5)[:, None] * np.array([0.03, 0.03, 0.03], np.float32),
        np.clip(x, -1.5, 1.5)[:, None] * np.array([0.02, 0.02, 0.02], np.float32),
        beard[:, None] * np.array([-0.06, -0.06, -0.05], np.float32),
    ]
    basis = np.stack(modes[:n_modes]).astype(np.float32)
    return AlbedoModel(mean=np.clip(mean, 0.0, 1.0).astype(np.float32), basis=basis)
