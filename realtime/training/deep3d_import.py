"""Convert an official Deep3DFaceRecon_pytorch checkpoint (BFM 2009 setting) into the project's engine ONNX.

The official network is a ResNet-50 whose seven 1x1-conv heads give 257 BFM coefficients (identity 80,
expression 64, texture 80, Euler angles 3, SH lighting 27 as 3x9, translation 3) for a 224 x 224 crop seen
by a fixed camera (focal 1015 px, principal point at the centre, face model 10 units in front of it; BFM
units of 0.1 m). The converted ONNX keeps that network and appends a fixed layer that re-expresses its
output in the project's coefficient layout (``realtime.engines.coeffs``) for the ICT face model:

* pose: ``R_cv = F · R(angles) · R_a`` and ``t_cv = unit · (F · (R(angles) · t_a + t) + (0, 0, 10))`` where
  ``F = diag(1, -1, -1)`` turns Deep3D's camera (y up, looking down -z) into OpenCV's and ``(R_a, t_a)`` is
  the similarity that places the ICT mean face on the BFM mean face (fitted on the 68 landmarks), then the
  crop-relative ``rot6d``/``uvk`` of that pose in Deep3D's camera;
* identity and expression: linear maps from BFM to ICT coefficients, least squares (ridge) over dense
  nearest-vertex correspondences of the aligned mean faces' front region; expressions are clamped to the
  ICT blendshape range [0, 1] — a coarse transfer that the landmark fitter refines;
* lighting: Deep3D's SH convention is the project's (same basis, same normal frame); only the DC offset
  (+0.8) and the coefficient order (3x9 → 9x3) change;
* albedo: least-squares projection of the BFM texture (mean + basis, at the corresponding vertices) onto
  the project's albedo model.

The crop: the ONNX metadata carries the crop scale/offset that reproduce Deep3D's alignment (a face of
mean size, centred, at 10 units) from the box of the 478 MediaPipe landmarks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from realtime.engines.albedo import build_albedo_model
from realtime.engines.coeffs import NOMINAL_SIZE_MM, CoefficientLayout, CropSpec
from realtime.errors import BadInputError
from realtime.facemodel import MorphableModel
from realtime.training.nets import Deep3DNet

log = logging.getLogger(__name__)

D3D_FOCAL = 1015.0
D3D_SIZE = 224
D3D_DISTANCE = 10.0
D3D_INIT_LIGHT = 0.8
BFM_UNIT_MM = 100.0
HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
F = np.diag([1.0, -1.0, -1.0])


@dataclass
class BFM:
    mean: np.ndarray  # (N, 3) recentred, BFM units
    id_basis: np.ndarray  # (80, N, 3)
    exp_basis: np.ndarray  # (64, N, 3)
    tex_mean: np.ndarray  # (N, 3) in [0, 1]
    tex_basis: np.ndarray  # (80, N, 3) in [0, 1] units
    keypoints: np.ndarray  # (68,)


def load_bfm(path: Path) -> BFM:
    from scipy.io import loadmat

    if not path.is_file():
        raise BadInputError(f"BFM file not found: {path}")
    try:
        m = loadmat(str(path))
        mean = m["meanshape"].astype(np.float64).reshape(-1, 3)
        n = mean.shape[0]
        bfm = BFM(
            mean=mean - mean.mean(axis=0, keepdims=True),  # Deep3D recentres the mean shape
            id_basis=m["idBase"].astype(np.float64).T.reshape(-1, n, 3),
            exp_basis=m["exBase"].astype(np.float64).T.reshape(-1, n, 3),
            tex_mean=m["meantex"].astype(np.float64).reshape(-1, 3) / 255.0,
            tex_basis=m["texBase"].astype(np.float64).T.reshape(-1, n, 3) / 255.0,
            keypoints=np.squeeze(m["keypoints"]).astype(np.int64) - 1,
        )
    except (KeyError, ValueError, OSError) as exc:
        raise BadInputError(f"{path} is not a Deep3D BFM_model_front.mat ({exc})") from None
    if bfm.id_basis.shape[0] != 80 or bfm.exp_basis.shape[0] != 64 or bfm.keypoints.shape != (68,):
        raise BadInputError(f"{path}: expected 80 identity / 64 expression modes and 68 keypoints")
    return bfm


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: (s, R, t) minimising ||s R src + t - dst||."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    s = float(np.trace(np.diag(sig) @ d) / (a**2).sum(axis=1).mean())
    return s, r, mu_d - s * r @ mu_s


@dataclass
class Transfer:
    """Everything fixed that maps BFM coefficients to the project's layout."""

    scale: float  # s_a (ICT mm -> BFM units)
    r_a: np.ndarray
    t_a: np.ndarray
    m_id: np.ndarray  # (100, 80)
    m_exp: np.ndarray  # (53, 64)
    m_tex: np.ndarray  # (K, 80)
    b_tex: np.ndarray  # (K,)
    crop: CropSpec
    fit_rms_mm: float


def build_transfer(
    bfm: BFM,
    model: MorphableModel,
    layout: CoefficientLayout,
    unit_mm: float = BFM_UNIT_MM,
    ridge: float = 1e-3,
) -> Transfer:
    from realtime.correspondence import load_correspondence

    ict_lm = model.mean_mm[model.landmarks68].astype(np.float64)
    bfm_lm = bfm.mean[bfm.keypoints]
    # Fit on the inner 51 points: the jaw contour's vertices differ between models by construction.
    s, r, t = similarity(ict_lm[17:], bfm_lm[17:])
    region = model.narrow_face_area_vertices or model.face_area_vertices
    ict_v = model.mean_mm[:region].astype(np.float64)
    ict_in_bfm = s * ict_v @ r.T + t
    dist, nn_idx = cKDTree(bfm.mean).query(ict_in_bfm)
    keep = dist < np.percentile(dist, 90)
    fit_rms = float(np.sqrt(np.mean(dist[keep] ** 2)) / s)
    idx = nn_idx[keep]

    # BFM displacement of each mode at the corresponding vertices, expressed in ICT mm and axes.
    def to_ict(basis: np.ndarray) -> np.ndarray:  # (K, N, 3) BFM units -> (3M, K) ICT mm
        d = basis[:, idx] @ r / s
        return d.reshape(basis.shape[0], -1).T

    def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # min ||A X - B||² + ridge ||X||²
        h = a.T @ a
        h += ridge * np.trace(h) / h.shape[0] * np.eye(h.shape[0])
        return np.linalg.solve(h, a.T @ b)

    ict_id = model.identity_basis_mm[: layout.identity, :region][:, keep].astype(np.float64)
    ict_exp = model.expression_basis_mm[: layout.expression, :region][:, keep].astype(np.float64)
    a_id = ict_id.reshape(ict_id.shape[0], -1).T
    a_exp = ict_exp.reshape(ict_exp.shape[0], -1).T
    m_id = solve(a_id, to_ict(bfm.id_basis))
    m_exp = solve(a_exp, to_ict(bfm.exp_basis))
    albedo = build_albedo_model(model, layout.albedo)
    a_tex = albedo.basis[:, :region][:, keep].reshape(layout.albedo, -1).T.astype(np.float64)
    m_tex = solve(a_tex, bfm.tex_basis[:, idx].reshape(bfm.tex_basis.shape[0], -1).T)
    b_tex = solve(a_tex, (bfm.tex_mean[idx] - albedo.mean[:region][keep]).reshape(-1, 1))[:, 0]
    # Crop: the MediaPipe-landmark box of the mean face as Deep3D's camera sees it (frontal, 10 units away).
    corr = load_correspondence(model)
    pts = s * corr.points(model.mean_mm.astype(np.float64))[:468] @ r.T + t
    cam = pts @ F.T + np.array([0.0, 0.0, D3D_DISTANCE])
    uv = D3D_FOCAL * cam[:, :2] / cam[:, 2:] + (D3D_SIZE - 1) / 2.0
    lo, hi = uv.min(0), uv.max(0)
    w, h = hi - lo
    crop = CropSpec(
        input_size=D3D_SIZE,
        scale=float(D3D_SIZE / max(w, h)),
        offset_y=float(((D3D_SIZE - 1) / 2.0 - 0.5 * (lo[1] + hi[1])) / h),
    )
    log.info(
        "BFM→ICT transfer: similarity scale %.4g, dense fit RMS %.2f mm, crop scale %.3f offset %.3f",
        s,
        fit_rms,
        crop.scale,
        crop.offset_y,
    )
    return Transfer(
        scale=s, r_a=r, t_a=t, m_id=m_id, m_exp=m_exp, m_tex=m_tex, b_tex=b_tex, crop=crop, fit_rms_mm=fit_rms
    )


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Deep3D's rotation R = Rz(z) · Ry(y) · Rx(x) (column-vector convention), angles (B, 3) in radians."""
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


class BFMToProject(nn.Module):
    """257 Deep3D outputs → the project's coefficient vector (see the module docstring)."""
    m_id: torch.Tensor
    m_exp: torch.Tensor
    m_tex: torch.Tensor
    b_tex: torch.Tensor
    f_ra: torch.Tensor
    t_a: torch.Tensor
    flip: torch.Tensor


    def __init__(self, tr: Transfer, layout: CoefficientLayout, unit_mm: float = BFM_UNIT_MM) -> None:
        super().__init__()
        self.layout = layout
        self.unit_mm = unit_mm
        f32 = torch.float32
        self.register_buffer("m_id", torch.tensor(tr.m_id, dtype=f32))
        self.register_buffer("m_exp", torch.tensor(tr.m_exp, dtype=f32))
        self.register_buffer("m_tex", torch.tensor(tr.m_tex, dtype=f32))
        self.register_buffer("b_tex", torch.tensor(tr.b_tex, dtype=f32))
        self.register_buffer("f_ra", torch.tensor(tr.r_a, dtype=f32))
        self.register_buffer("t_a", torch.tensor(tr.t_a, dtype=f32))
        self.register_buffer("flip", torch.tensor(F, dtype=f32))
        self.g = D3D_FOCAL / D3D_SIZE

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        idc, exc, tex = c[:, :80], c[:, 80:144], c[:, 144:224]
        ang, gam, trans = c[:, 224:227], c[:, 227:254], c[:, 254:257]
        rot = euler_to_matrix(ang)
        r_cv = self.flip @ rot @ self.f_ra  # (B, 3, 3): ICT model → OpenCV camera
        t_bfm = (rot @ self.t_a.view(1, 3, 1)).squeeze(-1) + trans
        t_cv = self.unit_mm * (t_bfm @ self.flip.T + torch.tensor([0.0, 0.0, D3D_DISTANCE]))
        z = t_cv[:, 2:3].clamp_min(1.0)
        uv = 2.0 * self.g * t_cv[:, :2] / z
        k = torch.log(self.g * NOMINAL_SIZE_MM / z)
        rot6d = torch.cat([r_cv[:, :, 0], r_cv[:, :, 1]], dim=1)
        sh = gam.view(-1, 3, 9).clone()
        sh[:, :, 0] = sh[:, :, 0] + D3D_INIT_LIGHT
        sh = sh.transpose(1, 2).reshape(-1, 27)
        identity = idc @ self.m_id.T
        expression = (exc @ self.m_exp.T).clamp(0.0, 1.0)
        albedo = tex @ self.m_tex.T + self.b_tex
        return torch.cat([identity, expression, rot6d, uv, k, sh, albedo], dim=1)


class ImportedDeep3D(nn.Module):
    def __init__(self, backbone_net: Deep3DNet, head: nn.Linear, convert: BFMToProject) -> None:
        super().__init__()
        self.net = backbone_net
        self.head = head
        self.convert = convert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convert(self.head(self.net.backbone(x)))


def load_official_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], nn.Linear]:
    """(backbone state dict, 2048→257 linear head) from an official ``epoch_*.pth``."""
    if not path.is_file():
        raise BadInputError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise BadInputError(f"cannot read checkpoint {path}: {exc}") from None
    state = ckpt.get("net_recon", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise BadInputError(f"{path} has no 'net_recon' state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    backbone = {
        k[len("backbone.") :]: v
        for k, v in state.items()
        if k.startswith("backbone.") and not k.startswith("backbone.fc.")
    }
    try:
        ws = [state[f"final_layers.{i}.weight"] for i in range(7)]
        bs = [state[f"final_layers.{i}.bias"] for i in range(7)]
    except KeyError as exc:
        raise BadInputError(
            f"{path} is not a Deep3DFaceRecon_pytorch ResNet-50 checkpoint (missing {exc})"
        ) from None
    if tuple(int(w.shape[0]) for w in ws) != HEAD_SIZES:
        raise BadInputError(
            f"{path}: head sizes {[int(w.shape[0]) for w in ws]} are not the BFM 2009 setting"
        )
    weight = torch.cat([w.reshape(w.shape[0], -1) for w in ws]).float()
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(torch.cat(bs).float())
    return backbone, head


def import_deep3d(
    checkpoint: Path, bfm_path: Path, out: Path, model: MorphableModel, fp16_weights: bool = False
) -> tuple[Path, Transfer]:
    from realtime.training.export import export_onnx

    layout = CoefficientLayout()
    backbone_state, head = load_official_checkpoint(checkpoint)
    net = Deep3DNet(layout, D3D_SIZE, width=64, normalize=False)
    missing, unexpected = net.backbone.load_state_dict(backbone_state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise BadInputError(
            f"{checkpoint}: backbone keys do not match ResNet-50 (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    if head.in_features != net.backbone.out_channels:
        raise BadInputError(f"{checkpoint}: head expects {head.in_features} features, ResNet-50 gives 2048")
    tr = build_transfer(load_bfm(bfm_path), model, layout)
    full = ImportedDeep3D(net, head, BFMToProject(tr, layout)).eval()
    export_onnx(
        full,
        out,
        "deep3d",
        layout,
        tr.crop,
        face_model=model.name,
        fp16_weights=fp16_weights,
        extra_metadata={
            "realtime_face.source": f"Deep3DFaceRecon_pytorch checkpoint {checkpoint.name} "
            f"(BFM 2009), converted; dense BFM→ICT fit RMS {tr.fit_rms_mm:.2f} mm"
        },
    )
    return out, tr
