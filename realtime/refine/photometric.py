"""Analysis-by-synthesis identity refinement over one or more images (Lium et al.; Deep3D's hybrid loss).

MediaPipe's landmarks carry little identity information: a landmark fit leaves most of the face's shape to
the prior. The images carry more: the shading of the skin and where the face's outline and its dark
features fall. Each view's image is compared, at every visible skin vertex's projection, with the model's
own rendering of that vertex, ``Y(n_v) · L`` (second-order spherical harmonics of the vertex normal, light
per view by least squares with the skin albedo folded in), and the identity coefficients (shared by the
views) plus a small pose correction per view are moved by Gauss-Newton to reduce that residual. The
landmark reprojection term stays as an anchor and the identity prior is centred where the landmark fit put
it. Expressions stay those of the landmark fit.

The Jacobian of a vertex residual w.r.t. the parameters has two parts, both vectorised over vertices and
modes: where the vertex samples the image (image gradient × projection Jacobian × rotated basis) and how
its normal turns (SH derivative × normal change per mode; the unnormalised vertex normal is a sum of
triangle cross products, so its change per identity mode is bilinear in the current edges and the mode's
edge displacements, precomputed once). Images are resampled so the face spans ``face_px`` pixels and
blurred, coarse to fine, so the image gradients see a few millimetres around each projection. A Huber
weight drops what the model cannot render (hair, beard, cast shadows, background behind a wrong outline),
and only skin and nose vertices of the narrow face area take part (eyes, brows, lips have their own
colours).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.sparse as sp

from realtime.camera import Intrinsics
from realtime.correspondence import Correspondence
from realtime.facemodel import MorphableModel
from realtime.fitting import MeshBuilder
from realtime.refine.medium import REGION_NOSE, REGION_SKIN, vertex_regions
from realtime.refine.raster import rasterize
from realtime.refine.sfs import SH_C1, SH_C2, SH_C3, SH_C4, sh_basis
from realtime.refine.twoview import N_SURFACE, landmark_noise_factor
from realtime.refine.uv import sample_image
from realtime.results import FaceFit, FaceTrack, Pose

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PhotoFitOptions:
    iterations: int = 13
    face_px: int = 320
    """The face's bounding box is resampled to about this many pixels (≈ 1 mm per pixel)."""
    blur_px: tuple[float, ...] = (2.0, 0.0)
    """Gaussian blur per coarse-to-fine level (the iterations are split evenly over the levels)."""
    photo_sigma: float = 0.03
    """Residual scale of the colour term (intensities in [0, 1])."""
    photo_correlation: float = 4.0
    """Each vertex residual counts 1/this: neighbouring vertices sample overlapping (blurred) pixels."""
    landmark_sigma_mm: float = 2.0
    identity_sigma: float = 0.5
    rotation_sigma_deg: float = 2.0
    translation_sigma_mm: float = 5.0
    huber: float = 2.0
    """Residuals beyond this many ``photo_sigma`` get Huber weights."""
    min_facing: float = 0.2
    max_vertices: int = 4000
    """Per view: the skin vertices are subsampled to at most this many."""
    band2_ridge: float = 1e-5
    pose_iterations: int = 3
    """The first iterations move only the per-view poses (identity held)."""
    saturation: float = 0.97
    """Vertices whose colour reaches this (or 1 - this) in any channel are left out (clipped pixels)."""


@dataclass(frozen=True, slots=True)
class PhotoView:
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    intrinsics: Intrinsics
    fit: FaceFit
    """The landmark fit of this view (pose and expression; its identity is the starting point)."""
    track: FaceTrack | None = None
    """Landmarks of this view (the anchor term); without them only the priors anchor the fit."""


@dataclass(frozen=True, slots=True)
class PhotoFitResult:
    identity: np.ndarray
    fits: tuple[FaceFit, ...]
    """Per-view fits with the refined identity and pose (expressions unchanged)."""
    photometric_rms: tuple[float, float]
    """RMS colour residual (grey levels 0-255, visible skin vertices, all views) before / after."""
    iterations: int
    timings_ms: dict[str, float] = field(default_factory=dict)


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices: skew(a) @ b = a × b."""
    out = np.zeros((*v.shape[:-1], 3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def sh_basis_grad(n: np.ndarray) -> np.ndarray:
    """(P, 3) normals -> (P, 9, 3) derivatives of ``sh_basis`` w.r.t. the normal's components."""
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    g = np.zeros((len(n), 9, 3))
    g[:, 1, 1] = SH_C1
    g[:, 2, 2] = SH_C1
    g[:, 3, 0] = SH_C1
    g[:, 4, 0], g[:, 4, 1] = SH_C2 * y, SH_C2 * x
    g[:, 5, 1], g[:, 5, 2] = SH_C2 * z, SH_C2 * y
    g[:, 6, 2] = SH_C3 * 6.0 * z
    g[:, 7, 0], g[:, 7, 2] = SH_C2 * z, SH_C2 * x
    g[:, 8, 0], g[:, 8, 1] = 2.0 * SH_C4 * x, -2.0 * SH_C4 * y
    return g


def _rodrigues(w: np.ndarray) -> np.ndarray:
    r, _ = cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))
    return np.asarray(r)


def _rotvec(r: np.ndarray) -> np.ndarray:
    w, _ = cv2.Rodrigues(np.asarray(r, np.float64))
    return np.asarray(w).ravel()


@dataclass(slots=True)
class _ViewState:
    image: np.ndarray
    """(h, w, 3) float crop in [0, 1] (unblurred)."""
    k: Intrinsics
    """Crop intrinsics."""
    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    rotation0: np.ndarray
    translation0: np.ndarray
    uv: np.ndarray | None
    """(468, 2) landmarks in crop pixels, or None."""
    stack: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 9)))
    """(h, w, 9) blurred image and its x, y gradients at the current level."""
    light: np.ndarray = field(default_factory=lambda: np.zeros((9, 3)))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(slots=True)
class _Terms:
    r: np.ndarray
    """(R,) weighted residuals."""
    j: np.ndarray | None
    """(R, K + 6) weighted Jacobian (identity, then this view's rotation and translation)."""
    rms: float
    """Unweighted RMS colour residual over the visible vertices (0-1 units)."""


class PhotometricFitter:
    """Refines a landmark fit's identity (and each view's pose) against the images."""

    def __init__(self, model: MorphableModel, correspondence: Correspondence,
                 options: PhotoFitOptions | None = None) -> None:
        self.model = model
        self.options = options or PhotoFitOptions()
        self.mesher = MeshBuilder(model)
        o = self.options
        fa = model.face_area_vertices
        narrow = model.narrow_face_area_vertices or fa
        regions = vertex_regions(model)
        cand = np.nonzero((np.arange(model.n_vertices) < narrow)
                          & np.isin(regions, (REGION_SKIN, REGION_NOSE)))[0]
        stride = max(1, int(np.ceil(len(cand) / o.max_vertices)))
        self.vertices = cand[::stride]
        tri = np.asarray(model.triangles, np.int64)
        self.face_tri = tri[(tri < fa).all(axis=1)]
        # triangles around the sampled vertices (their normals are the area-weighted sums of these)
        member = np.zeros(model.n_vertices, bool)
        member[self.vertices] = True
        ring = self.face_tri[member[self.face_tri].any(axis=1)]
        self.ring = ring
        slot = np.full(model.n_vertices, -1, np.int64)
        slot[self.vertices] = np.arange(len(self.vertices))
        rows, cols = [], []
        for c in range(3):
            ok = slot[ring[:, c]] >= 0
            rows.append(slot[ring[ok, c]])
            cols.append(np.nonzero(ok)[0])
        r_idx, c_idx = np.concatenate(rows), np.concatenate(cols)
        self.incidence = sp.csr_matrix((np.ones(len(r_idx)), (r_idx, c_idx)),
                                       shape=(len(self.vertices), len(ring)))
        # each vertex stands for its share of the surface (the mesh is denser around the eyes, nose and
        # mouth than on the cheeks and forehead, where the shading tells most about the shape)
        m0 = model.mean_mm.astype(np.float64)
        area = 0.5 * np.linalg.norm(np.cross(m0[ring[:, 1]] - m0[ring[:, 0]], m0[ring[:, 2]] - m0[ring[:, 0]]),
                                    axis=1)
        va = self.incidence @ (area / 3.0)
        self.area_weight = va / max(float(va.mean()), 1e-12)
        self.mean_fa = model.mean_mm[:fa].astype(np.float64)
        self.id_fa = model.identity_basis_mm[:, :fa].astype(np.float64)          # (K, F, 3)
        self.exp_fa = model.expression_basis_mm[:, :fa].astype(np.float64)       # (E, F, 3)
        self.id_v = self.id_fa[:, self.vertices]                                   # (K, C, 3)
        b = self.id_fa.transpose(2, 1, 0)                                          # (3, F, K)
        self.d_e1 = np.ascontiguousarray(b[:, ring[:, 1]] - b[:, ring[:, 0]])      # (3, T, K) per component
        self.d_e2 = np.ascontiguousarray(b[:, ring[:, 2]] - b[:, ring[:, 0]])
        ids = np.asarray(correspondence.vertex_ids[:N_SURFACE])
        bary = np.asarray(correspondence.barycentric[:N_SURFACE], np.float64)

        def restrict(a: np.ndarray) -> np.ndarray:
            return np.einsum("...lkc,lk->...lc", a[..., ids, :].astype(np.float64), bary)

        self.lm_mean = restrict(model.mean_mm)
        self.lm_id = restrict(model.identity_basis_mm)
        self.lm_exp = restrict(model.expression_basis_mm)
        self.lm_w = np.clip(np.asarray(correspondence.weights[:N_SURFACE], np.float64), 0.0, 1.0)

    # ------------------------------------------------------------------------------------------ set-up
    def _prepare(self, view: PhotoView) -> _ViewState:
        # imported here: snapshot imports this module (RefineOptions.photo)
        from realtime.refine.snapshot import RefineOptions, make_crop

        fit = view.fit
        verts = np.asarray(fit.vertices_mm, np.float64)
        crop = make_crop(view.image, verts, self.model, view.intrinsics,
                         RefineOptions(mm_per_px=1e-3, max_crop_px=self.options.face_px))
        uv = None
        if view.track is not None:
            lm = np.asarray(view.track.landmarks_px, np.float64)[:N_SURFACE, :2]
            # original pixel x -> crop pixel: the same mapping make_crop gave the intrinsics
            sx = crop.intrinsics.fx / view.intrinsics.fx
            sy = crop.intrinsics.fy / view.intrinsics.fy
            uv = np.stack(((lm[:, 0] - view.intrinsics.cx) * sx + crop.intrinsics.cx,
                           (lm[:, 1] - view.intrinsics.cy) * sy + crop.intrinsics.cy), axis=1)
        rot = np.asarray(fit.pose.rotation, np.float64)
        t = np.asarray(fit.pose.translation_mm, np.float64)
        return _ViewState(crop.image, crop.intrinsics, np.asarray(fit.expression, np.float64), rot.copy(),
                          t.copy(), rot.copy(), t.copy(), uv)

    @staticmethod
    def _set_level(vs: _ViewState, blur: float) -> None:
        img = cv2.GaussianBlur(vs.image, (0, 0), blur) if blur > 0 else vs.image
        gy, gx = np.gradient(img, axis=(0, 1))
        vs.stack = np.concatenate([img, gx, gy], axis=-1)

    # ------------------------------------------------------------------------------------------ terms
    def _shape(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        return self.mean_fa + np.tensordot(identity, self.id_fa, axes=1) + np.tensordot(
            expression, self.exp_fa, axes=1)

    def _visible(self, vs: _ViewState, cam: np.ndarray, normals_cam: np.ndarray) -> np.ndarray:
        k = vs.k
        px = k.project(cam)
        # the depth test needs no more than half the resolution (pixel centres: x' = (x + 0.5) / 2 - 0.5)
        hh, ww = (k.height + 1) // 2, (k.width + 1) // 2
        r = rasterize((px + 0.5) * 0.5 - 0.5, self.face_tri, hh, ww, depth=cam[:, 2])
        zbuf = np.where(r.mask, 1.0 / np.maximum(
            np.einsum("hwk,hwk->hw", r.barycentric, 1.0 / cam[self.face_tri[np.maximum(r.triangle, 0)], 2]),
            1e-9), np.inf)
        pv = px[self.vertices]
        inside = (pv[:, 0] >= 1) & (pv[:, 0] <= k.width - 2) & (pv[:, 1] >= 1) & (pv[:, 1] <= k.height - 2)
        ix = np.clip(np.rint((pv[:, 0] + 0.5) * 0.5 - 0.5).astype(np.int64), 0, ww - 1)
        iy = np.clip(np.rint((pv[:, 1] + 0.5) * 0.5 - 0.5).astype(np.int64), 0, hh - 1)
        front = cam[self.vertices, 2] <= zbuf[iy, ix] + 1.5
        ray = cam[self.vertices] / np.linalg.norm(cam[self.vertices], axis=1, keepdims=True)
        facing = -(normals_cam * ray).sum(axis=1)
        return np.asarray(inside & front & (facing > self.options.min_facing))

    def _normals(self, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Model-space unit normals at the sampled vertices, their length, and the ring's edges."""
        ring = self.ring
        e1 = shape[ring[:, 1]] - shape[ring[:, 0]]
        e2 = shape[ring[:, 2]] - shape[ring[:, 0]]
        nn = self.incidence @ np.cross(e1, e2)
        length = np.maximum(np.linalg.norm(nn, axis=1), 1e-12)
        return nn / length[:, None], length, e1, e2

    def _fit_light(self, vs: _ViewState, y: np.ndarray, colour: np.ndarray, w: np.ndarray) -> np.ndarray:
        sw = np.sqrt(w)[:, None]
        a = y * sw
        ridge = np.diag([1e-4] * 4 + [self.options.band2_ridge] * 5) * max(float(w.sum()), 1.0)
        return np.asarray(np.linalg.solve(a.T @ a + ridge, a.T @ (colour * sw)))

    def _photo_terms(self, vs: _ViewState, identity: np.ndarray, jacobian: bool,
                     refresh: bool) -> _Terms:
        """Colour residuals of one view. ``refresh``: new visibility, light and robust weights first."""
        o = self.options
        shape = self._shape(identity, vs.expression)
        n, length, e1, e2 = self._normals(shape)
        rot, t = vs.rotation, vs.translation
        cam = shape @ rot.T + t
        nc = n @ rot.T
        samples = sample_image(vs.stack, vs.k.project(cam[self.vertices]))
        colour, gx, gy = samples[:, :3], samples[:, 3:6], samples[:, 6:9]
        y = sh_basis(nc)
        if refresh:
            # clipped (over- or under-exposed) pixels do not follow the shading model
            exposed = (colour.max(axis=1) < o.saturation) & (colour.min(axis=1) > 1.0 - o.saturation)
            vis = (self._visible(vs, cam, nc) & exposed).astype(np.float64)
            vs.light = self._fit_light(vs, y, colour, vis)
            res = np.linalg.norm(colour - y @ vs.light, axis=1)
            thr = o.huber * o.photo_sigma
            vs.weights = vis * np.minimum(1.0, thr / np.maximum(res, 1e-12))
            vs.light = self._fit_light(vs, y, colour, vs.weights)
        resid = colour - y @ vs.light                                            # (C, 3)
        vis = vs.weights > 0
        rms = float(np.sqrt((resid[vis] ** 2).mean())) if vis.any() else 0.0
        sw = np.sqrt(vs.weights * self.area_weight / (o.photo_sigma**2 * o.photo_correlation))
        r = (resid * sw[:, None]).ravel()
        if not jacobian:
            return _Terms(r, None, rms)
        # d(normal)/d(identity): unnormalised normal change per mode, projected off the normal
        # d(e1 × e2) = de1 × e2 + e1 × de2, written out per component (np.cross on (K, T, 3) is 4x slower)
        a, c = self.d_e1, self.d_e2                                              # (3, T, K)
        p, q = e2.T[:, :, None], e1.T[:, :, None]                                # (3, T, 1)
        dfn = np.stack([a[1] * p[2] - a[2] * p[1] + q[1] * c[2] - q[2] * c[1],
                        a[2] * p[0] - a[0] * p[2] + q[2] * c[0] - q[0] * c[2],
                        a[0] * p[1] - a[1] * p[0] + q[0] * c[1] - q[1] * c[0]], axis=-1)  # (T, K, 3)
        tt, kk = dfn.shape[:2]
        dnn = (self.incidence @ dfn.reshape(tt, kk * 3)).reshape(-1, kk, 3)
        dn = (dnn - n[:, None, :] * np.einsum("ckd,cd->ck", dnn, n)[..., None]) / length[:, None, None]
        dnc = dn @ rot.T                                                         # (C, K, 3)
        ds_dn = np.einsum("cjd,jq->cqd", sh_basis_grad(nc), vs.light)            # (C, 3ch, 3)
        xc = cam[self.vertices]
        k = vs.k
        iz = 1.0 / xc[:, 2]
        du = np.zeros((len(xc), 2, 3))
        du[:, 0, 0] = k.fx * iz
        du[:, 0, 2] = -k.fx * xc[:, 0] * iz**2
        du[:, 1, 1] = k.fy * iz
        du[:, 1, 2] = -k.fy * xc[:, 1] * iz**2
        grad = np.stack([gx, gy], axis=-1)                                       # (C, 3ch, 2)
        g = np.einsum("cqa,cad->cqd", grad, du)                                  # d colour / d camera point
        basis = self.id_v @ rot.T                                                # (K, C, 3)
        j_id = np.einsum("cqd,kcd->cqk", g, basis) - np.einsum("cqd,ckd->cqk", ds_dn, dnc)
        q = xc - t                                                               # rotated model points
        j_rot = np.einsum("cqd,cde->cqe", g, -_skew(q)) - np.einsum("cqd,cde->cqe", ds_dn, -_skew(nc))
        jac = np.concatenate([j_id, j_rot, g], axis=2) * sw[:, None, None]
        return _Terms(r, jac.reshape(-1, jac.shape[2]), rms)

    def _landmark_terms(self, vs: _ViewState, identity: np.ndarray, jacobian: bool) -> _Terms:
        if vs.uv is None:
            return _Terms(np.zeros(0), np.zeros((0, len(identity) + 6)) if jacobian else None, 0.0)
        p = self.lm_mean + np.tensordot(identity, self.lm_id, axes=1) + np.tensordot(
            vs.expression, self.lm_exp, axes=1)
        q = p @ vs.rotation.T
        x = q + vs.translation
        k = vs.k
        z = x[:, 2]
        proj = np.stack((k.fx * x[:, 0] / z + k.cx, k.fy * x[:, 1] / z + k.cy), axis=1)
        yaw = Pose(vs.rotation, vs.translation).euler_deg()[0]
        sigma_px = self.options.landmark_sigma_mm * landmark_noise_factor(yaw) * k.fx / float(np.median(z))
        sw = np.sqrt(self.lm_w) / sigma_px
        r = ((proj - vs.uv) * sw[:, None]).ravel()
        if not jacobian:
            return _Terms(r, None, 0.0)
        du = np.zeros((len(z), 2, 3))
        du[:, 0, 0] = k.fx / z
        du[:, 0, 2] = -k.fx * x[:, 0] / z**2
        du[:, 1, 1] = k.fy / z
        du[:, 1, 2] = -k.fy * x[:, 1] / z**2
        j_id = np.einsum("lad,kld->lak", du, self.lm_id @ vs.rotation.T)
        j_rot = np.einsum("lad,lde->lae", du, -_skew(q))
        jac = np.concatenate([j_id, j_rot, du], axis=2) * sw[:, None, None]
        return _Terms(r, jac.reshape(-1, jac.shape[2]), 0.0)

    def _prior(self, identity: np.ndarray, centre: np.ndarray, views: list[_ViewState]) -> float:
        o = self.options
        cost = float((((identity - centre) / o.identity_sigma) ** 2).sum())
        for vs in views:
            w = _rotvec(vs.rotation @ vs.rotation0.T)
            cost += float(((w / np.radians(o.rotation_sigma_deg)) ** 2).sum())
            cost += float((((vs.translation - vs.translation0) / o.translation_sigma_mm) ** 2).sum())
        return cost

    def _cost(self, identity: np.ndarray, centre: np.ndarray, views: list[_ViewState]) -> float:
        total = self._prior(identity, centre, views)
        for vs in views:
            total += float((self._photo_terms(vs, identity, False, False).r ** 2).sum())
            total += float((self._landmark_terms(vs, identity, False).r ** 2).sum())
        return total

    # ------------------------------------------------------------------------------------------ solve
    def fit_views(self, views: Sequence[PhotoView]) -> PhotoFitResult:
        """Start from, and centre the identity prior at, the most frontal view's identity (its landmarks are
        the least self-occluded). The other views' fits should be landmark fits with that identity locked
        (``JointFitter.fit(views, iterations=0).fits``): a side view's own single-view fit can collapse to a
        wrong identity, and its pose and expression with it."""
        yaws = [abs(v.fit.pose.euler_deg()[0]) for v in views]
        start = np.asarray(views[int(np.argmin(yaws))].fit.identity, np.float64)
        return self.fit(views, start, start)

    def fit(self, views: Sequence[PhotoView], identity: np.ndarray | None = None,
            prior_centre: np.ndarray | None = None) -> PhotoFitResult:
        """Refine ``identity`` (default: the first view's) against all views; prior centred at
        ``prior_centre`` (default: the starting identity)."""
        if not views:
            raise ValueError("no views to fit")
        t_start = time.perf_counter()
        o = self.options
        alpha = np.asarray(identity if identity is not None else views[0].fit.identity, np.float64).copy()
        centre = alpha.copy() if prior_centre is None else np.asarray(prior_centre, np.float64)
        states = [self._prepare(v) for v in views]
        n_k = len(alpha)
        n_p = n_k + 6 * len(states)
        levels = list(o.blur_px) or [0.0]
        for vs in states:
            self._set_level(vs, levels[-1])
        rms0 = float(np.mean([self._photo_terms(vs, alpha, False, True).rms for vs in states]))
        done = 0
        for it in range(o.iterations):
            level = levels[min(it * len(levels) // max(o.iterations, 1), len(levels) - 1)]
            if it == 0 or level != levels[min((it - 1) * len(levels) // max(o.iterations, 1),
                                              len(levels) - 1)]:
                for vs in states:
                    self._set_level(vs, level)
            h = np.zeros((n_p, n_p))
            g = np.zeros(n_p)
            rms = []
            before = self._prior(alpha, centre, states)   # the cost at the current parameters, from the terms
            for i, vs in enumerate(states):
                sl = np.r_[np.arange(n_k), n_k + 6 * i + np.arange(6)]
                for terms in (self._photo_terms(vs, alpha, True, True), self._landmark_terms(vs, alpha, True)):
                    if terms.j is None or not len(terms.r):
                        continue
                    h[np.ix_(sl, sl)] += terms.j.T @ terms.j
                    g[sl] += terms.j.T @ terms.r
                    before += float(terms.r @ terms.r)
                    if terms.rms:
                        rms.append(terms.rms)
            # priors (identity at its centre, pose at the landmark fit's)
            h[:n_k, :n_k] += np.eye(n_k) / o.identity_sigma**2
            if it < o.pose_iterations:
                # first align each view (pose only): a side view's landmark pose can be degrees off
                h[:n_k, :n_k] += np.eye(n_k) * 1e9
            g[:n_k] += (alpha - centre) / o.identity_sigma**2
            for i, vs in enumerate(states):
                b = n_k + 6 * i
                wr = 1.0 / np.radians(o.rotation_sigma_deg) ** 2
                wt = 1.0 / o.translation_sigma_mm**2
                h[b : b + 3, b : b + 3] += np.eye(3) * wr
                g[b : b + 3] += _rotvec(vs.rotation @ vs.rotation0.T) * wr
                h[b + 3 : b + 6, b + 3 : b + 6] += np.eye(3) * wt
                g[b + 3 : b + 6] += (vs.translation - vs.translation0) * wt
            step = -np.linalg.solve(h, g)
            saved = [(vs.rotation.copy(), vs.translation.copy()) for vs in states]
            scale = 1.0
            accepted = False
            for _ in range(4):
                trial = alpha + scale * step[:n_k]
                for i, vs in enumerate(states):
                    b = n_k + 6 * i
                    vs.rotation = _rodrigues(scale * step[b : b + 3]) @ saved[i][0]
                    vs.translation = saved[i][1] + scale * step[b + 3 : b + 6]
                if self._cost(trial, centre, states) < before:
                    alpha = trial
                    accepted = True
                    break
                scale *= 0.5
            if not accepted:
                for vs, (r0, t0) in zip(states, saved, strict=True):
                    vs.rotation, vs.translation = r0, t0
                log.debug("photometric fit: no decrease at iteration %d", it)
                if level == levels[-1]:
                    break
            done = it + 1
            log.debug("photometric fit %d: blur %.1f, rms %.4f, |Δα| %.3f", it, level,
                      float(np.mean(rms)) if rms else 0.0, float(np.linalg.norm(scale * step[:n_k])))
        for vs in states:
            self._set_level(vs, levels[-1])
        rms1 = float(np.mean([self._photo_terms(vs, alpha, False, True).rms for vs in states]))
        fits = []
        for view, vs in zip(views, states, strict=True):
            f = view.fit
            fits.append(self.mesher.make_fit(view.intrinsics, alpha, vs.expression, vs.rotation, vs.translation,
                                             f.residual_px, f.confidence, f.identity_locked, f.scale_source))
        timings = {"photometric_fit": (time.perf_counter() - t_start) * 1e3}
        return PhotoFitResult(alpha.astype(np.float32), tuple(fits), (rms0 * 255.0, rms1 * 255.0), done,
                              timings)
