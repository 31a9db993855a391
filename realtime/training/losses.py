"""Training losses of Mobile-FaceRNet (You et al. 2023, Eq. 11–17) and Deep3D (Deng et al. 2019, hybrid loss).

Units (the papers do not state theirs; these make the published weights balance):
landmarks in sixteenths of the crop side (``trainer.LANDMARK_UNIT_PX``), colours in [0, 1], vertices in cm
for the Laplacian term (the ICT model is in mm; cm keeps the paper's ω=50 from swamping the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from realtime.training.diffrender import Fragments

CONTOUR = slice(0, 17)
INNER = slice(17, 68)


def landmark_weights(kind: str = "mobile-facernet") -> torch.Tensor:
    """Per-landmark weights: Mobile-FaceRNet: 0.5 on the 17 contour points, 1 elsewhere (the paper says 16
    contour / 52 inner for its own indexing); Deep3D: 20 on the nose and inner mouth, 1 elsewhere."""
    w = torch.ones(68)
    if kind == "mobile-facernet":
        w[CONTOUR] = 0.5
    else:
        w[27:36] = 20.0
        w[60:68] = 20.0
    return w


def landmark_loss(
    pred: torch.Tensor, gt: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 12: Σ_i ω_i ||v_ki - v'_i||² (mean over the batch). pred/gt: (B, 68, 2)."""
    d2 = ((pred - gt) ** 2).sum(-1) * weights
    per = d2.sum(-1) / weights.sum()
    if valid is not None:
        return (per * valid).sum() / valid.sum().clamp_min(1.0)
    return per.mean()


def land_error_loss(
    pred: torch.Tensor, gt: torch.Tensor, errors: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 13: inner landmarks weighted by their mean error of the previous epoch (``errors`` (51,),
    normalised to mean 1 by the caller)."""
    d2 = ((pred[:, INNER] - gt[:, INNER]) ** 2).sum(-1) * errors
    per = d2.sum(-1) / errors.sum().clamp_min(1e-8)
    if valid is not None:
        return (per * valid).sum() / valid.sum().clamp_min(1.0)
    return per.mean()


def gather_pixels(images: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """(B, 3, H, W) images → (P, 3) colours at the fragments."""
    return images[frags.batch, :, frags.py, frags.px]


def photometric_loss(
    rendered: torch.Tensor,
    target: torch.Tensor,
    frags: Fragments,
    batch_size: int,
    skin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 14 (Deep3D Eq. 11 with ``skin``): mean per-pixel L2 colour distance over the projected face."""
    d = (rendered - target).norm(dim=-1)
    w = torch.ones_like(d) if skin is None else skin
    num = torch.zeros(batch_size, dtype=d.dtype).index_add(0, frags.batch, d * w)
    den = torch.zeros(batch_size, dtype=d.dtype).index_add(0, frags.batch, w)
    has = den > 0
    if not bool(has.any()):
        return d.sum() * 0.0
    return (num[has] / den[has]).mean()


def ssim_loss(
    rendered: torch.Tensor,
    target: torch.Tensor,
    frags: Fragments,
    batch_size: int,
    c1: float = 0.01**2,
    c2: float = 0.03**2,
) -> torch.Tensor:
    """Eq. 15: 1 - SSIM with means, variances and covariance over each image's visible face pixels."""

    def per_image(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch_size, 3, dtype=x.dtype).index_add(0, frags.batch, x)

    n = torch.zeros(batch_size, dtype=rendered.dtype).index_add(
        0, frags.batch, torch.ones_like(rendered[:, 0])
    )
    has = n > 1
    if not bool(has.any()):
        return rendered.sum() * 0.0
    nn_ = n.clamp_min(1.0)[:, None]
    mu_r = per_image(rendered) / nn_
    mu_t = per_image(target) / nn_
    dr = rendered - mu_r[frags.batch]
    dt = target - mu_t[frags.batch]
    var_r = per_image(dr * dr) / nn_
    var_t = per_image(dt * dt) / nn_
    cov = per_image(dr * dt) / nn_
    ssim = ((2 * mu_r * mu_t + c1) * (2 * cov + c2)) / ((mu_r**2 + mu_t**2 + c1) * (var_r + var_t + c2))
    return (1.0 - ssim[has].mean(dim=-1)).mean()


def skin_probability(colors: torch.Tensor) -> torch.Tensor:
    """(P, 3) RGB in [0, 1] → (P,) skin likelihood in [0, 1]: a Gaussian in CbCr (the classic explicit skin
    colour model), standing in for Deep3D's trained skin classifier."""
    r, g, b = colors.unbind(-1)
    cb = 0.5 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 + 0.5 * r - 0.418688 * g - 0.081312 * b
    d2 = ((cb - 0.43) / 0.06) ** 2 + ((cr - 0.59) / 0.06) ** 2
    return torch.exp(-0.5 * d2)


def smoothness_loss(laplacian_v: torch.Tensor) -> torch.Tensor:
    """Eq. 16: mean squared norm of the uniform Laplacian (vertices in cm)."""
    return (laplacian_v**2).sum(-1).mean()


def mobile_facernet_regulariser(
    identity: torch.Tensor, albedo: torch.Tensor, expression: torch.Tensor
) -> torch.Tensor:
    """Eq. 17 with the paper's weights (shape 2e-5, texture 2e-2, expression 4e-4)."""
    return (2e-5 * (identity**2).sum(-1) + 2e-2 * (albedo**2).sum(-1) + 4e-4 * (expression**2).sum(-1)).mean()


def deep3d_coefficient_loss(
    identity: torch.Tensor, expression: torch.Tensor, albedo: torch.Tensor
) -> torch.Tensor:
    """Deep3D Eq. 14 (ω_α=1.0, ω_β=0.8, ω_γ=1.7e-3), scaled by the number of coefficients as in the
    original implementation's mean-of-squares."""
    return (
        1.0 * identity.pow(2).mean(-1) + 0.8 * expression.pow(2).mean(-1) + 1.7e-3 * albedo.pow(2).mean(-1)
    ).mean()


def texture_variance_loss(albedo: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Deep3D Eq. 15: Σ_c var(albedo_c) over the cheek/nose/forehead skin region ``region`` (vertex ids)."""
    return albedo[:, region].var(dim=1).sum(-1).mean()


@dataclass
class LossWeights:
    landmark: float = 400.0
    land_error: float = 2000.0
    photometric: float = 100.0
    ssim: float = 2.0
    smooth: float = 50.0
    regular: float = 1.0
    # Deep3D terms
    coefficient: float = 3e-4
    texture: float = 10.0
    # Supervision from synthetic ground truth (not in the papers; see the model cards)
    vertices: float = 20.0
    pose: float = 100.0
    expression: float = 20.0
    extra: dict[str, float] = field(default_factory=dict)


def supervised_losses(
    pred_vertices: torch.Tensor,
    gt_vertices: torch.Tensor,
    pred_rot: torch.Tensor,
    gt_rot: torch.Tensor,
    pred_uvk: torch.Tensor,
    gt_uvk: torch.Tensor,
    pred_expr: torch.Tensor,
    gt_expr: torch.Tensor,
    has_gt: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Ground-truth terms for samples with exact labels (synthetic) or pseudo-labels (fitter):
    model-space vertex L1 (mm), rotation-matrix and crop-translation L2, expression-weight L1."""
    w = has_gt.float()
    den = w.sum().clamp_min(1.0)
    vert = ((pred_vertices - gt_vertices).norm(dim=-1).mean(-1) * w).sum() / den
    rot = (((pred_rot - gt_rot) ** 2).sum((-1, -2)) * w).sum() / den
    uvk = (((pred_uvk - gt_uvk) ** 2).sum(-1) * w).sum() / den
    expr = ((pred_expr - gt_expr).abs().mean(-1) * w).sum() / den
    return {"vertices": vert, "pose": rot + uvk, "expression": expr}
