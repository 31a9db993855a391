"""Fine stage (Jin et al. 2021, §3.4): shape from shading on the depth map of the medium face.

Image model (Eq. 4-5): ``I = γ · S(n) + ε β`` with ``S(n) = Σ_k r_k Y_k(n)`` (9 real spherical-harmonics
coefficients per colour channel), ``n`` the normal of the depth map, ``γ`` the albedo and ``β`` a
(white) specular layer. The stages, in the paper's order:

1. lighting: least squares for ``r`` from a constant mean albedo and the medium normals, ε = 0;
2. albedo (Eq. 6): ``||I - I'||² + λγ1 ||γ - γ_avg||² + λγ2 RTV(γ)`` with ``γ_avg`` the mean colour of each
   semantic region (skin, brows, eyes, nose, mouth) and RTV the relative total variation of Xu et al.
   (solved by its usual iteratively re-weighted quadratic form, so each step is one sparse SPD solve);
3. specular (Eq. 8): ``||I' - I||² + λβ ||β - β0||²`` with β0 the smoothed positive residual;
4. depth (Eq. 9): ``||I' - I||² + λd1 ||d - d0||² + λd2 ||∇(d - d0)||² + λd3 ||ΔI - λd4 Δh||²`` with the
   paper's two-phase schedule (0.001, 0.05, 0.001, 0.001) then (0.001, 0.03, 0.025, 2.5), alternating
   with albedo and specular updates.

Differences from the paper, and why: the paper runs Adam on a GPU; here each energy is minimised by
Gauss-Newton steps with sparse solves (numpy/scipy only, a few seconds on two CPU cores). The smoothness
and gradient terms act on the detail layer ``d - d0`` (so the coarse face's own curvature is not
flattened), and the gradient term compares the albedo-free shading image with the height ``h = -(d - d0)``
(a groove is deeper and darker). A pixel's normal comes from central differences of the depth map, so it
belongs to the pixel centre where the image was sampled (``SfsOptions.normal_operator``). Units:
intensities in [0, 1] times ``photometric_scale`` (the paper does not give its units), depth in mm, pixels
about 1 mm on the face. The specular layer (ε = 1) is available
but off by default: on the photos it absorbed the shading the depth should explain. Light and albedo are
re-estimated once on the refined normals, and the detail fades out over 6 px at the mask border.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter
from scipy.sparse.linalg import cg, spsolve

from realtime.camera import Intrinsics

log = logging.getLogger(__name__)

SH_C0, SH_C1, SH_C2, SH_C3, SH_C4 = 0.282095, 0.488603, 1.092548, 0.315392, 0.546274

PHASE1 = (0.001, 0.05, 0.001, 0.001)
PHASE2 = (0.001, 0.03, 0.025, 2.5)
"""The paper's λd schedule (§4.1)."""


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) real SH basis.

    Bands 0-2 in the order 1, y, z, x, xy, yz, 3z²-1, xz, x²-y² (the same as ``realtime.render``'s).
    """
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return np.stack([
        np.full_like(x, SH_C0), SH_C1 * y, SH_C1 * z, SH_C1 * x,
        SH_C2 * x * y, SH_C2 * y * z, SH_C3 * (3.0 * z * z - 1.0), SH_C2 * x * z, SH_C4 * (x * x - y * y),
    ], axis=-1)


def _rays(h: int, w: int, k: Intrinsics) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack(((u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)), axis=-1)


def _normal_from(zc: np.ndarray, zr: np.ndarray, zd: np.ndarray,
                 rc: np.ndarray, rr: np.ndarray, rd: np.ndarray) -> np.ndarray:
    """Normals (toward the camera) from a pixel's depth and its right/down neighbours' depths."""
    pc = zc[:, None] * rc
    tu = zr[:, None] * rr - pc
    tv = zd[:, None] * rd - pc
    n = np.cross(tv, tu)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _central_normal(zl: np.ndarray, zr: np.ndarray, zu: np.ndarray, zd: np.ndarray,
                    rl: np.ndarray, rr: np.ndarray, ru: np.ndarray, rd: np.ndarray) -> np.ndarray:
    """Normals (toward the camera) at pixel centres from the left/right and up/down neighbours' depths."""
    tu = zr[:, None] * rr - zl[:, None] * rl
    tv = zd[:, None] * rd - zu[:, None] * ru
    n = np.cross(tv, tu)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def depth_normals(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """(H, W, 3) camera-space unit normals of a depth map (forward differences; 0 where undefined)."""
    h, w = depth.shape
    rays = _rays(h, w, intrinsics)
    out = np.zeros((h, w, 3), dtype=np.float64)
    ok = np.zeros((h, w), dtype=bool)
    ok[:-1, :-1] = (depth[:-1, :-1] > 0) & (depth[:-1, 1:] > 0) & (depth[1:, :-1] > 0)
    yy, xx = np.nonzero(ok)
    out[yy, xx] = _normal_from(depth[yy, xx], depth[yy, xx + 1], depth[yy + 1, xx],
                               rays[yy, xx], rays[yy, xx + 1], rays[yy + 1, xx])
    return out


@dataclass(frozen=True, slots=True)
class SfsOptions:
    lambda_albedo_prior: float = 0.3
    """λγ1 (paper)."""
    lambda_albedo_rtv: float = 0.02
    """λγ2 for the re-weighted RTV term in our intensity units (the paper's 2.5 is for its own scaling)."""
    rtv_sigma: float = 2.0
    rtv_eps: float = 0.02
    rtv_from_image: bool = False
    """Compute the first RTV re-weighting from the shading-free image ``I / S`` (Xu et al. start their
    iterations from the input) instead of from the per-region prior. From the (piecewise-constant) prior every
    RTV weight is at its flat-region maximum and the albedo can never grow an edge (brows, lid lines, lips)."""
    albedo_region_weight: tuple[float, ...] | None = (1.0, 1.0, 1.0, 1.0, 1.0)
    """Data weight per region (skin, brow, eye, nose, mouth) in the albedo energy (Eq. 6: one weight for all,
    as in the paper; brows, lid lines and lips differ from skin by albedo); None: the depth's
    ``region_photo_weight``. Measured on 6 video frames (tools/bench_refine.py's held-out guard): the
    refined render's error on unseen blocks drops 10 % below the region colours' instead of 5 %, the
    geometry's share stays (11-13 %), the synthetic detail correlation is unchanged (seed 11)."""
    lambda_specular: float = 0.5
    """λβ (paper)."""
    depth0_smoothing_px: float = 0.0
    """σ of a Gaussian applied to the medium depth map inside the face before optimising (0: none). Sixth
    session (tools/bench_refine.py, studio light, seeds 11 + 13, 12 samples): 1 px blurred the coarse face's
    curvature into the base the detail is measured against; 0 raised the fine stage on the true face from
    0.45 to 0.52 with central differences (0.42 → 0.48 with forward ones)."""
    normal_operator: str = "central"
    """How the depth phases compute a pixel's normal from the depth map. "central": from its left/right and
    up/down neighbours, so the normal belongs to the pixel centre where the image was sampled; "forward":
    from the pixel and its right/down neighbours (the x slope half a pixel right, the y slope half a pixel
    down of the centre). Measured (sixth session): with the true light and albedo and the true smooth base,
    a stronger data term made the forward operator's detail *worse* (0.57 → 0.43 for photometric_scale 6 →
    24): it fitted the shading half a pixel off. Central: detail correlation +0.04 to +0.14 (studio / key
    light, fine stage and end to end). Its Nyquist (checkerboard) null space is held by the Laplacian of
    the detail (λd2)."""
    final_relight: bool = True
    """Re-estimate light and albedo once on the refined normals (the coarse render gets the same treatment
    on its own normals)."""
    border_ramp_px: float = 6.0
    """The detail fades in over this many pixels from the mask border (and from the eyes)."""
    specular: bool = False
    """ε = 1 in the depth phases (the paper) estimates a white specular layer; off by default because on the
    real photos the layer soaks up the bright half of the shading residual that the depth should explain
    (photometric error reduction 15-22 % with it, 30-36 % without, tools/bench_refine.py)."""
    phases: tuple[tuple[float, float, float, float], ...] = (PHASE1, PHASE2)
    rounds_per_phase: int = 2
    """Albedo → specular → depth alternations per phase."""
    gn_steps: int = 2
    """Gauss-Newton depth steps per round."""
    max_step_mm: float = 1.0
    photometric_scale: float = 6.0
    """Intensity unit of the data term of Eq. 9 relative to [0, 1]; the paper does not state its units, and
    its λd only make sense against some scale. Measured (tools/bench_refine.py): 1 leaves the detail ~4x
    too flat and the photometric error unchanged. Fourth session, tuned on seed 11's detail renders and 6
    video frames (never the bench's seed 7 or photos): 10 → 6 raises the own-base detail correlation
    0.37 → 0.42 (studio) and 0.49 → 0.55 (key45), the fine stage on the true face 0.36 → 0.41 / 0.58 →
    0.64; the depth's share of the photometric gain on the frames drops 13 → 11 %; 20 is worse (0.29),
    4 gains little more on the own-base figure and loses on the truth-based one (0.30 → 0.26)."""
    gradient_intensity_scale: float = 6.0
    """Intensity unit of ΔI in Eq. 9 (same caveat). 255 (8-bit units) lets the gradient term carve the
    shading into the depth out of phase (detail correlation < 0 on the synthetic test); 3-6 keep it a mild
    prior toward "dark is deep"."""
    refit_light_on_albedo: bool = False
    """Re-fit the light once the albedo map is estimated (stage 2), and use that light in the depth phases.
    Off (the paper's order: the light of stage 1, fitted with a uniform albedo, is kept). Measured (sixth
    session, tools/bench_refine.py, studio light): the albedo map takes up part of the face's broad shading,
    and the re-fitted light then trades its constant term for its frontal (z) term; with it the fine stage
    on the true face scored 0.52, without it 0.58 (seed 11). With the true light it scores 0.64."""
    sh_band2_ridge: float = 0.1
    """Per-pixel ridge on the band-2 lighting coefficients (``fit_sh``). Measured (tools/bench_refine.py
    and the fine stage on the true coarse face): 1e-4 (off) 0.37, 1e-2 0.43 wrinkle correlation under the
    studio light (fourth session). Sixth session, with the stage-1 light kept: 0.01 → 0.1 raises the
    end-to-end figure 0.450 → 0.466 (studio, seeds 11 + 13); the photos' errors move by < 0.3 grey levels."""
    half_pixel_target: bool = False
    """Shade each forward-difference normal against the image at its own position (+0.5 px, the 2x2 block
    mean) in the depth phases, and average the refined normals back onto the pixel centres. Off by default:
    measured (tools/bench_refine.py), it raises the synthetic wrinkle correlation by 0.02-0.03 but costs
    5-10 points of photometric error reduction on the real photos (the 2x2 averages blur the shading)."""
    max_slope: float | None = 3.0
    """Pixels where the medium depth rises faster than this many pixel widths per pixel (central differences;
    3 is 72° from the view direction) inform neither the light, the region colours, the albedo nor the depth:
    at grazing angles and at occlusion edges (the side of the nose, the cheek's outline at yaw) a pixel's
    colour is not the shading of one normal, and differences across a depth step are not a normal at all.
    Their depth follows the regularisers; only the final albedo map (what the render shows) covers them.
    Measured (sixth session, studio light, seeds 11 + 13): fine stage on the true face 0.615 → 0.653, end to
    end 0.466 → 0.503 (2.5: 0.648 / 0.501; 4: 0.652 / 0.498; 1.5 with a one-pixel dilation: 0.551 / 0.473;
    left out of the depth's data terms only: 0.644 / 0.478). None: off."""
    region_photo_weight: tuple[float, ...] = (1.0, 0.3, 0.1, 1.0, 0.3)
    """Photometric weight per region (skin, brow, eye, nose, mouth): hair and eyeballs break Lambert."""
    detail_regions: tuple[bool, ...] = (True, True, False, True, True)
    """Regions (skin, brow, eye, nose, mouth) that keep their depth detail."""
    dark_regions: tuple[int, ...] = (1, 3)
    """Regions checked for dark pixels: brows (hair) and nose (nostrils); the lips and the mouth's inside are
    darker than skin by albedo but keep their detail (excluding them halved the photometric gain)."""
    dark_ratio: float = 0.5
    """Pixels whose shading-free luminance is below this fraction of the skin's median (hair, nostril
    shadows) get no depth detail. Measured on takeo.jpg without it: the depth carved the brow hair 4.2 mm
    deep on average (the geometry explained the hair's colour), 0.7 mm with it. Higher values (0.75) also
    take shading errors of a wrong coarse shape for hair on the synthetic renders."""


@dataclass(slots=True)
class SfsResult:
    depth: np.ndarray
    """(H, W) refined camera z in mm (0 outside the face)."""
    depth0: np.ndarray
    normals: np.ndarray
    """(H, W, 3) refined camera-space normals."""
    normals0: np.ndarray
    albedo: np.ndarray
    """(H, W, 3) in [0, 1]."""
    albedo0: np.ndarray
    """Albedo estimated on the medium normals (for the coarse render)."""
    sh: np.ndarray
    """(9, 3) final SH lighting."""
    sh0: np.ndarray
    specular: np.ndarray
    """(H, W) white specular layer."""
    mask: np.ndarray
    """(H, W) bool pixels that were optimised."""
    albedo_prior: np.ndarray | None = None
    """(H, W, 3) the per-region mean colour γ_avg (the skin-colour prior of Eq. 6)."""
    sh_prior: np.ndarray | None = None
    """(9, 3) the light of stage 1 (least squares on the medium normals with a uniform albedo), scaled so
    that ``albedo_prior · Y(n0) sh_prior`` is the medium face rendered with its region-mean colours."""
    holdout: np.ndarray | None = None
    """(H, W) bool pixels left out of every data term (light, albedo, depth) when asked: a render's error
    there measures what it predicts, not what it copied."""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def render(self, refined: bool = True, specular: bool = False, prior_albedo: bool = False) -> np.ndarray:
        """Diffuse (+ specular) render ``γ·S(n)`` of the refined or the medium depth, (H, W, 3) in [0, 1].

        ``prior_albedo``: the medium depth with the per-region mean colours and the stage-1 light (no albedo
        map: what the coarse face looks like before the fine stage estimates anything per pixel)."""
        if prior_albedo:
            if self.albedo_prior is None or self.sh_prior is None:
                raise ValueError("no prior albedo recorded")
            img = self.albedo_prior * (sh_basis(self.normals0) @ self.sh_prior)
            return np.clip(img, 0.0, 1.0) * self.mask[..., None]
        n, g, l = (self.normals, self.albedo, self.sh) if refined else (self.normals0, self.albedo0, self.sh0)
        img = g * (sh_basis(n) @ l)
        if specular and refined:
            img = img + self.specular[..., None]
        return np.clip(img, 0.0, 1.0) * self.mask[..., None]


def _centre_normals(normals: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Forward-difference normals (at pixel + 0.5) averaged back onto the pixel centres over the up to four
    ``valid`` ones around each centre; pixels outside ``valid`` keep theirs."""
    n = np.where(valid[..., None], normals, 0.0)
    acc = n.copy()
    acc[1:] += n[:-1]
    acc[:, 1:] += n[:, :-1]
    acc[1:, 1:] += n[:-1, :-1]
    norm = np.linalg.norm(acc, axis=-1, keepdims=True)
    return np.where(valid[..., None] & (norm > 1e-9), acc / np.maximum(norm, 1e-9), normals)


def fit_sh(image: np.ndarray, albedo: np.ndarray, normals: np.ndarray, weight: np.ndarray,
           band2_ridge: float = 1e-4) -> np.ndarray:
    """Per-channel weighted least squares for 9 SH coefficients: ``I_c ≈ γ_c · Y(n) r_c`` -> (9, 3).

    Ridge (per pixel) 1e-4 on bands 0-1 and ``band2_ridge`` on band 2: a face's normals cover one
    hemisphere around the view direction, where the band-2 terms yz and xz are nearly y and x again, so
    without a prior the fit trades them against each other (the shading fits, the light's direction does
    not)."""
    m = weight > 0
    y = sh_basis(normals[m])
    sw = np.sqrt(weight[m])[:, None]
    out = np.zeros((9, 3))
    ridge = np.diag([1e-4] * 4 + [band2_ridge] * 5)
    for c in range(3):
        a = y * albedo[m, c][:, None] * sw
        b = image[m, c] * sw[:, 0]
        out[:, c] = np.linalg.solve(a.T @ a + len(b) * ridge, a.T @ b)
    return out


class _Grid:
    """Index bookkeeping for the optimised pixels and their finite-difference operators."""

    def __init__(self, mask: np.ndarray) -> None:
        h, w = mask.shape
        self.shape = (h, w)
        self.yy, self.xx = np.nonzero(mask)
        self.n = len(self.yy)
        self.index = np.full((h, w), -1, dtype=np.int64)
        self.index[self.yy, self.xx] = np.arange(self.n)
        self.dx, self.rows_x = self.forward_diff(1)
        self.dy, self.rows_y = self.forward_diff(0)

    def forward_diff(self, axis: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """Rows for pixels whose +x (axis 1) / +y (axis 0) neighbour is also optimised: x[nb] - x[p].

        Returns the operator and, per row, the index of the pixel it belongs to.
        """
        dy, dx = (1, 0) if axis == 0 else (0, 1)
        h, w = self.shape
        ny, nx = self.yy + dy, self.xx + dx
        ok = (ny < h) & (nx < w)
        nb = np.full(self.n, -1, dtype=np.int64)
        nb[ok] = self.index[ny[ok], nx[ok]]
        rows = np.nonzero(nb >= 0)[0]
        m = len(rows)
        data = np.concatenate([np.ones(m), -np.ones(m)])
        r = np.concatenate([np.arange(m), np.arange(m)])
        c = np.concatenate([nb[rows], rows])
        return sp.csr_matrix((data, (r, c)), shape=(m, self.n)), rows

    def laplacian(self) -> sp.csr_matrix:
        """5-point Laplacian of the detail layer (neighbours outside the set count as zero detail)."""
        h, w = self.shape
        rows, cols, vals = [np.arange(self.n)], [np.arange(self.n)], [np.full(self.n, 4.0)]
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            ny, nx = self.yy + dy, self.xx + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            nb = np.full(self.n, -1, dtype=np.int64)
            nb[ok] = self.index[ny[ok], nx[ok]]
            sel = nb >= 0
            rows.append(np.nonzero(sel)[0])
            cols.append(nb[sel])
            vals.append(-np.ones(int(sel.sum())))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(self.n, self.n))

    def scatter(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full(self.shape + values.shape[1:], fill, dtype=np.float64)
        out[self.yy, self.xx] = values
        return out


def _rtv_weights(g: np.ndarray, grid: _Grid, axis: int, sigma: float, eps: float) -> np.ndarray:
    """Xu et al.'s re-weighting of RTV along one axis: u / (|∂γ| + ε), u = G * (1 / (|G * ∂γ| + ε))."""
    dmat, rows = (grid.dx, grid.rows_x) if axis == 1 else (grid.dy, grid.rows_y)
    d = dmat @ g  # per difference row
    img = np.zeros(grid.shape)
    img[grid.yy[rows], grid.xx[rows]] = d
    smooth = gaussian_filter(img, sigma)
    u = gaussian_filter(1.0 / (np.abs(smooth) + eps), sigma)
    return np.asarray(u[grid.yy[rows], grid.xx[rows]] / (np.abs(d) + eps))


def optimise_albedo(image: np.ndarray, shading: np.ndarray, specular: np.ndarray, prior: np.ndarray,
                    weight: np.ndarray, grid: _Grid, opts: SfsOptions, iterations: int = 2,
                    init: np.ndarray | None = None, rtv_init: np.ndarray | None = None) -> np.ndarray:
    """Minimise Eq. 6 per channel over the grid pixels; returns (n, 3) albedo.

    ``rtv_init`` (n, 3): what the first RTV re-weighting is computed from (default: the start albedo)."""
    p = (grid.yy, grid.xx)
    s = shading[p]  # (n, 3)
    target = image[p] - specular[p][:, None]
    g = prior.copy() if init is None else init.copy()
    wgt = weight[p]
    for it in range(iterations):
        cols = []
        ref = rtv_init if (it == 0 and rtv_init is not None) else g
        for c in range(3):
            wx = _rtv_weights(ref[:, c], grid, 1, opts.rtv_sigma, opts.rtv_eps)
            wy = _rtv_weights(ref[:, c], grid, 0, opts.rtv_sigma, opts.rtv_eps)
            reg = grid.dx.T @ sp.diags(wx) @ grid.dx + grid.dy.T @ sp.diags(wy) @ grid.dy
            diag = wgt * s[:, c] ** 2 + opts.lambda_albedo_prior
            a = sp.diags(diag) + opts.lambda_albedo_rtv * reg
            b = wgt * s[:, c] * target[:, c] + opts.lambda_albedo_prior * prior[:, c]
            x, _ = cg(a, b, x0=g[:, c], rtol=1e-6, maxiter=300, M=sp.diags(1.0 / a.diagonal()))
            cols.append(np.clip(x, 0.02, 1.5))
        g = np.stack(cols, axis=1)
    return g


def _steep(depth: np.ndarray, inside: np.ndarray, intrinsics: Intrinsics, max_slope: float) -> np.ndarray:
    """``inside`` pixels where |∂z/∂x| or |∂z/∂y| (central differences, in units of the pixel's width on the
    surface) exceeds ``max_slope``."""
    grad = np.zeros(depth.shape)
    grad[:, 1:-1] = np.abs(depth[:, 2:] - depth[:, :-2]) / 2.0
    grad[1:-1] = np.maximum(grad[1:-1], np.abs(depth[2:] - depth[:-2]) / 2.0)
    px_mm = np.maximum(depth, 1e-6) / intrinsics.fx
    return np.asarray(inside & (grad / px_mm > max_slope))


def _luminance(img: np.ndarray) -> np.ndarray:
    return np.asarray(img @ np.array([0.299, 0.587, 0.114]))


def run_sfs(image: np.ndarray, depth0: np.ndarray, mask: np.ndarray, regions: np.ndarray,
            intrinsics: Intrinsics, options: SfsOptions | None = None,
            smooth_normals: np.ndarray | None = None, holdout: np.ndarray | None = None) -> SfsResult:
    """Run the fine stage on an image crop.

    ``image`` (H, W, 3) float in [0, 1]; ``depth0`` (H, W) camera z (mm) of the medium mesh, > 0 wherever the
    head covers the pixel (a margin around ``mask`` keeps the normals defined at the border); ``mask``
    (H, W) bool the face pixels to refine; ``regions`` (H, W) int semantic region per pixel;
    ``intrinsics`` of the crop; ``smooth_normals`` (H, W, 3) the medium mesh's interpolated vertex normals
    (camera space, toward the camera): with them the lighting/albedo initialisation and the coarse render
    use smooth shading, as the live view does, instead of the faceted normals of the triangles' depth.
    ``options.depth0_smoothing_px`` optionally smooths the depth map itself inside the face first.
    ``holdout`` (H, W) bool: pixels left out of every data term (light, region colours, albedo, depth and its
    gradient term), for measuring what the renders predict there (``tools/bench_refine.py``).
    """
    opts = options or SfsOptions()
    timings: dict[str, float] = {}
    image_px = np.asarray(image, np.float64)
    target = image_px
    if opts.normal_operator not in ("central", "forward"):
        raise ValueError(f"unknown normal operator {opts.normal_operator!r} (central or forward)")
    central = opts.normal_operator == "central"
    if opts.half_pixel_target and central:
        raise ValueError("half_pixel_target applies to the forward normal operator only")
    if opts.half_pixel_target:
        # a normal from forward differences belongs to the point between a pixel and its right/down
        # neighbours (+0.5, +0.5): the depth phases compare its shading with the image there (mean of the
        # 2x2 block), not with the pixel centre, or every recovered groove lands half a pixel off its shading
        target = image_px.copy()
        target[:-1, :-1] = 0.25 * (image_px[:-1, :-1] + image_px[1:, :-1] + image_px[:-1, 1:]
                                   + image_px[1:, 1:])
    t0 = time.perf_counter()
    h, w = depth0.shape
    valid = depth0 > 0
    # optimised pixels: inside the mask with their right and down neighbours covered by the head
    var = mask & valid
    var[:, -1] = False
    var[-1, :] = False
    var[:-1, :-1] &= valid[:-1, 1:] & valid[1:, :-1]
    if central:
        # ... and their left and up neighbours too
        var[:, 0] = False
        var[0, :] = False
        var[1:, 1:] &= valid[1:, :-1] & valid[:-1, 1:]
    grid = _Grid(var)
    if grid.n < 100:
        raise ValueError("face too small for shape from shading")
    dx, dy = grid.dx, grid.dy
    lap = grid.laplacian()
    rays = _rays(h, w, intrinsics)
    yy, xx = grid.yy, grid.xx
    # the stencil of a pixel's normal: the pixel itself and its right/down neighbours (forward), or its
    # left/right/up/down neighbours (central); neighbours outside the optimised set keep the medium depth
    offsets = ((0, -1), (0, 1), (-1, 0), (1, 0)) if central else ((0, 0), (0, 1), (1, 0))
    sy = [np.clip(yy + oy, 0, h - 1) for oy, _ in offsets]
    sx = [np.clip(xx + ox, 0, w - 1) for _, ox in offsets]
    stencil_idx = [grid.index[a, b] for a, b in zip(sy, sx, strict=True)]
    stencil_rays = [rays[a, b] for a, b in zip(sy, sx, strict=True)]
    seen_all = var if holdout is None else var & ~np.asarray(holdout, bool)
    seen = seen_all if opts.max_slope is None else seen_all & ~_steep(depth0, var, intrinsics, opts.max_slope)
    region_w = np.asarray(opts.region_photo_weight, np.float64)[np.clip(regions, 0, 4)]
    albedo_region_w = region_w if opts.albedo_region_weight is None else (
        np.asarray(opts.albedo_region_weight, np.float64)[np.clip(regions, 0, 4)])
    photo_w = region_w * seen
    albedo_w = albedo_region_w * seen
    sig = opts.depth0_smoothing_px
    if sig > 0:
        # normalised convolution over the face pixels only: never blend across the jaw/ear silhouettes
        cover = np.maximum(gaussian_filter(var * 1.0, sig), 1e-6)
        smooth = gaussian_filter(np.where(var, depth0, 0.0), sig) / cover
        depth0 = np.where(var, smooth, depth0)
    x0 = depth0[yy, xx].astype(np.float64)
    stencil_fixed = [depth0[a, b].astype(np.float64) for a, b in zip(sy, sx, strict=True)]

    def stencil(x: np.ndarray) -> list[np.ndarray]:
        return [np.where(i >= 0, x[np.maximum(i, 0)], f) for i, f in zip(stencil_idx, stencil_fixed, strict=True)]

    def normal_of_stencil(z: list[np.ndarray]) -> np.ndarray:
        return _central_normal(*z, *stencil_rays) if central else _normal_from(*z, *stencil_rays)

    def normals_of(x: np.ndarray) -> np.ndarray:
        return normal_of_stencil(stencil(x))

    # 1. lighting from a constant mean albedo and the medium normals (ε = 0)
    n0 = normals_of(x0)
    if smooth_normals is not None:
        sn = np.asarray(smooth_normals, np.float64)[yy, xx]
        n0 = sn / np.maximum(np.linalg.norm(sn, axis=1, keepdims=True), 1e-9)
    n0_img = grid.scatter(n0)
    skin_w = photo_w * (regions == 0)
    mean_albedo = np.full((h, w, 3), 0.6)
    sh0 = fit_sh(image, mean_albedo, n0_img, skin_w, opts.sh_band2_ridge)
    shading0 = sh_basis(n0_img) @ sh0  # (H, W, 3), includes the albedo scale 0.6
    shading0 = np.maximum(shading0 / 0.6, 1e-3)
    # per-region average colour (skin-colour prior γ_avg)
    ratio = image / shading0
    prior_img = np.zeros((h, w, 3))
    skin_med = np.median(ratio[seen & (regions == 0)], axis=0) if (seen & (regions == 0)).any() else 0.6
    for r in np.unique(regions[var]):
        sel = var & (regions == r)
        fit_sel = sel & seen
        prior_img[sel] = np.median(ratio[fit_sel], axis=0) if fit_sel.sum() >= 10 else skin_med
    # pixels whose shading-free colour is far darker than the skin's: brow hair, nostrils (cast shadow),
    # beard. Lambertian shading of the depth cannot explain them, and the depth would carve them in as
    # grooves and pits 4 mm deep (measured on takeo.jpg), so they get no detail
    ratio_lum = _luminance(ratio)
    skin = seen & (regions == 0)
    skin_lum = float(np.median(ratio_lum[skin])) if skin.any() else 0.0
    dark = seen & np.isin(regions, opts.dark_regions) & (ratio_lum < opts.dark_ratio * skin_lum)
    dark = binary_dilation(dark, iterations=2) & var
    log.debug("dark (hair/shadow) pixels without detail: %d of %d", int(dark.sum()), int(var.sum()))
    prior = np.clip(prior_img[yy, xx], 0.02, 1.5)
    # the first RTV re-weighting looks at the shading-free image (the prior where nothing is seen)
    rtv_init = np.clip(np.where(seen[yy, xx, None], ratio[yy, xx], prior), 0.02, 1.5) if opts.rtv_from_image \
        else None
    timings["lighting"] = (time.perf_counter() - t0) * 1e3

    # 2. albedo on the medium normals (and, if asked, the light re-fitted with it)
    t1 = time.perf_counter()
    zero_spec = np.zeros((h, w))
    g = optimise_albedo(image, shading0, zero_spec, prior, albedo_w, grid, opts, rtv_init=rtv_init)
    albedo_img = grid.scatter(g, 0.0)
    if opts.refit_light_on_albedo:
        sh = fit_sh(image, np.maximum(albedo_img, 1e-3), n0_img, photo_w, opts.sh_band2_ridge)
    else:
        sh = sh0 / 0.6
    shading = np.maximum(sh_basis(n0_img) @ sh, 1e-3)
    g = optimise_albedo(image, shading, zero_spec, prior, albedo_w, grid, opts, iterations=1, init=g)
    albedo0 = grid.scatter(g)
    sh_coarse = sh.copy()
    timings["albedo"] = (time.perf_counter() - t1) * 1e3

    # 3./4. alternate specular and depth (ε = 1), phase by phase
    t2 = time.perf_counter()
    x = x0.copy()
    spec = np.zeros(grid.n)
    lum_w = np.array([0.299, 0.587, 0.114])
    pw = photo_w[yy, xx]
    img_p = target[yy, xx]
    seen_v = seen[yy, xx].astype(np.float64)
    gw_x = (abs(dx) @ (1.0 - seen_v) == 0).astype(np.float64)  # difference rows between two seen pixels
    gw_y = (abs(dy) @ (1.0 - seen_v) == 0).astype(np.float64)
    gtg = (dx.T @ sp.diags(gw_x) @ dx + dy.T @ sp.diags(gw_y) @ dy).tocsr()
    ltl = (lap.T @ lap).tocsr()
    eye = sp.identity(grid.n, format="csr")
    hstep = 1e-3
    base_shade = sh_basis(n0) @ sh
    for phase, (l1, l2, l3, l4) in enumerate(opts.phases):
        for _ in range(opts.rounds_per_phase):
            n_cur = normals_of(x)
            shade = np.maximum(sh_basis(n_cur) @ sh, 1e-3)
            # specular (Eq. 8): β0 = smoothed positive residual, white, shrunk by λβ
            resid = (img_p - g * shade) @ np.ones(3) / 3.0 * seen_v
            r_img = grid.scatter(resid)
            beta0 = np.maximum(gaussian_filter(r_img, 2.0)[yy, xx], 0.0)
            spec = np.maximum((resid + opts.lambda_specular * beta0) / (1.0 + opts.lambda_specular), 0.0)
            spec = np.where(beta0 > 2.0 * np.median(np.abs(resid)), spec, 0.0) * float(opts.specular)
            # albedo update with the current normals
            shade_img = grid.scatter(shade, 1.0)
            g = optimise_albedo(target, shade_img, grid.scatter(spec), prior, albedo_w, grid, opts,
                                iterations=1, init=g)
            # gradient target: the albedo-free shading image
            # detail shading: albedo-free image minus the medium face's own shading (only local detail
            # should be carved into the depth, not the face's overall shading ramp)
            shading_lum = grid.scatter((((img_p - spec[:, None]) / np.maximum(g, 0.02)) - base_shade) @ lum_w
                                       * opts.gradient_intensity_scale)
            gi_x = dx @ shading_lum[yy, xx]
            gi_y = dy @ shading_lum[yy, xx]
            for _ in range(opts.gn_steps):
                z = stencil(x)
                shade = sh_basis(normal_of_stencil(z)) @ sh
                sw = np.sqrt(pw)[:, None] * opts.photometric_scale
                r = (g * shade + spec[:, None] - img_p) * sw  # (n, 3)
                # sparse J: 3 rows per pixel, one column per optimised stencil member (finite differences)
                rows3 = np.arange(grid.n * 3).reshape(grid.n, 3)
                rr_list, cc_list, vv_list = [], [], []
                for which, idn in enumerate(stencil_idx):
                    moved = list(z)
                    moved[which] = moved[which] + hstep
                    jn = (g * (sh_basis(normal_of_stencil(moved)) @ sh - shade)) * sw / hstep
                    sel = idn >= 0
                    rr_list.append(rows3[sel].ravel())
                    cc_list.append(np.repeat(idn[sel], 3))
                    vv_list.append(jn[sel].ravel())
                coo = (np.concatenate(vv_list), (np.concatenate(rr_list), np.concatenate(cc_list)))
                jac = sp.csr_matrix(coo, shape=(grid.n * 3, grid.n))
                det = x - x0
                # gradient term: ΔI - λ4 Δh with h = -(d - d0)  ->  residual gi + λ4 D det
                gres_x = (gi_x + l4 * (dx @ det)) * gw_x
                gres_y = (gi_y + l4 * (dy @ det)) * gw_y
                lhs = jac.T @ jac + l1 * eye + l2 * ltl + (l3 * l4 * l4) * gtg + 1e-4 * eye
                rhs = -(jac.T @ r.ravel() + l1 * det + l2 * (ltl @ det)
                        + l3 * l4 * (dx.T @ gres_x + dy.T @ gres_y))
                step = spsolve(lhs.tocsc(), rhs)
                x = x + np.clip(step, -opts.max_step_mm, opts.max_step_mm)
        log.debug("sfs phase %d done: mean |detail| %.3f mm", phase + 1, float(np.abs(x - x0).mean()))
    timings["depth"] = (time.perf_counter() - t2) * 1e3
    # fade the detail out toward the mask border and over the regions where shading is not geometry (eyes,
    # dark brows), so the detailed mesh has no cliff where refined and unrefined surface meet
    keep_region = np.asarray(opts.detail_regions, bool)
    keep = keep_region[np.clip(regions, 0, len(keep_region) - 1)]
    reliable = var & (photo_w >= 0.3) & keep & ~dark
    ramp = np.clip(distance_transform_edt(reliable) / max(opts.border_ramp_px, 1e-6), 0.0, 1.0)
    x = x0 + (x - x0) * ramp[yy, xx]
    depth = depth0.astype(np.float64).copy()
    depth[yy, xx] = x
    normals = depth_normals(depth, intrinsics)
    n_fin = normals_of(x)
    normals[yy, xx] = n_fin
    if opts.half_pixel_target:
        normals = _centre_normals(normals, var)
    normals0 = depth_normals(depth0.astype(np.float64), intrinsics)
    normals0[yy, xx] = n0
    if opts.final_relight:
        # the light was estimated on the medium normals; re-estimate it once on the refined ones (and the
        # albedo with it), as the coarse render's light was estimated on its own normals; both now sit at
        # the pixel centres, so against the image itself
        spec_img = grid.scatter(spec)[..., None]
        sh = fit_sh(image_px - spec_img, np.maximum(grid.scatter(g), 1e-3), normals, photo_w,
                    opts.sh_band2_ridge)
        shade_img = np.maximum(sh_basis(normals) @ sh, 1e-3)
        g = optimise_albedo(image_px, shade_img, grid.scatter(spec), prior, albedo_region_w * seen_all, grid, opts,
                            iterations=1, init=g)
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return SfsResult(depth=depth * var + depth0 * ~var, depth0=depth0.astype(np.float64), normals=normals,
                     normals0=normals0, albedo=grid.scatter(g), albedo0=albedo0, sh=sh, sh0=sh_coarse,
                     specular=grid.scatter(spec), mask=var, albedo_prior=prior_img * var[..., None],
                     sh_prior=sh0 / 0.6, holdout=None if holdout is None else np.asarray(holdout, bool) & var,
                     timings_ms=timings)
