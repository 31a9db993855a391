"""Two-view reconstruction (after Lium et al. 2021): a front and a side image fitted with one identity.

The paper feeds both images to one network; we get the same benefit — the side view fixes the depth
profile (nose, chin, forehead slope) that a frontal view leaves to the prior — by fitting the model jointly:
one identity shared by the views, pose and expression per view. The per-view pose/expression solves are the
live fitter's own (``FaceFitter`` with the identity locked to the current estimate); the shared identity is
updated by summing each view's linearised landmark-reprojection normal equations (block coordinate descent).

With a single image, the one-input scheme of the paper is followed: the textured coarse reconstruction is
rendered rotated by 30° and the rendering is used as the second view (``rotated_view``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from realtime.camera import Intrinsics
from realtime.correspondence import Correspondence
from realtime.facemodel import MorphableModel
from realtime.fitting import FaceFitter, FitOptions
from realtime.refine.landmark_bias import LandmarkBias, load_landmark_bias
from realtime.results import FaceFit, FaceTrack

log = logging.getLogger(__name__)

N_SURFACE = 468
SIDE_MIN_YAW_DEG = 35.0
"""A side view must be turned at least this far (the issue's |yaw| ≥ 35°)."""
ROTATED_VIEW_DEG = 30.0
_NOISE_YAW_DEG = np.array([0.0, 20.0, 35.0, 45.0, 55.0, 90.0])
_NOISE_REL = np.array([1.0, 1.6, 2.8, 4.6, 9.7, 30.0])
"""MediaPipe landmark error relative to a frontal view, by |yaw| (median px error / inter-ocular distance on
clean synthetic renders of the model: 1.2 % frontal, 2.0 % at 20°, 3.4 % at 35°, 5.6 % at 45°, 11.8 % at
55°). A view's landmarks are weighted by the inverse square, so a side view never outvotes the front."""


def landmark_noise_factor(yaw_deg: float) -> float:
    return float(np.interp(abs(yaw_deg), _NOISE_YAW_DEG, _NOISE_REL))


@dataclass(frozen=True, slots=True)
class JointFit:
    fits: tuple[FaceFit, ...]
    """Per-view fits sharing ``identity`` (same order as the input views)."""
    identity: np.ndarray
    single_fits: tuple[FaceFit, ...]
    """The independent single-view fits the joint fit started from."""
    residual_px: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ViewInput:
    track: FaceTrack
    intrinsics: Intrinsics


def _facing_weights(normals_cam: np.ndarray, points_cam: np.ndarray) -> np.ndarray:
    ray = points_cam / np.linalg.norm(points_cam, axis=1, keepdims=True)
    facing = -(normals_cam * ray).sum(axis=1)
    return np.clip((facing - 0.05) / 0.3, 0.0, 1.0)


class JointFitter:
    """Fits several views of one face with a shared identity."""

    def __init__(self, model: MorphableModel, correspondence: Correspondence,
                 options: FitOptions | None = None, landmark_sigma_mm: float = 1.0,
                 identity_sigma: float = 1.0, bias: LandmarkBias | bool | None = True) -> None:
        """``bias``: the landmark bias table (True: the model's installed table if any; False/None: off)."""
        self.model = model
        self.correspondence = correspondence
        self.options = options or FitOptions(lock_identity=False, cold_iterations=20)
        ids = np.asarray(correspondence.vertex_ids[:N_SURFACE])
        bary = np.asarray(correspondence.barycentric[:N_SURFACE], np.float64)

        def restrict(a: np.ndarray) -> np.ndarray:
            return np.einsum("...lkc,lk->...lc", a[..., ids, :].astype(np.float64), bary)

        self._mean = restrict(model.mean_mm)                         # (L, 3)
        self._id = restrict(model.identity_basis_mm)                 # (K, L, 3)
        self._exp = restrict(model.expression_basis_mm)              # (E, L, 3)
        from realtime.refine.uv import vertex_normals

        nrm = vertex_normals(model.mean_mm, model.triangles)
        nl = np.einsum("lkc,lk->lc", nrm[ids], bary)
        self._normals = nl / np.linalg.norm(nl, axis=1, keepdims=True)
        self._w = np.clip(np.asarray(correspondence.weights[:N_SURFACE], np.float64), 0.0, 1.0)
        self.landmark_sigma_mm = landmark_sigma_mm
        self.identity_sigma = identity_sigma
        self.prior_at_singles = True
        self.bias: LandmarkBias | None = (load_landmark_bias(model) if bias is True
                                          else bias if isinstance(bias, LandmarkBias) else None)

    def _identity_equations(self, fit: FaceFit, track: FaceTrack, k: Intrinsics, identity: np.ndarray,
                            sigma_mm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """JᵀJ and Jᵀr of one view's landmark reprojection w.r.t. identity, at its pose and expression."""
        rot = np.asarray(fit.pose.rotation, np.float64)
        t = np.asarray(fit.pose.translation_mm, np.float64)
        p = self._mean + np.tensordot(identity, self._id, axes=1) + np.tensordot(
            np.asarray(fit.expression, np.float64), self._exp, axes=1)
        x = p @ rot.T + t
        z = x[:, 2]
        uv = np.asarray(track.landmarks_px, np.float64)[:N_SURFACE, :2]
        w = self._w * _facing_weights(self._normals @ rot.T, x)
        if sigma_mm is None:
            yaw = fit.pose.euler_deg()[0]
            sigma: np.ndarray | float = self.landmark_sigma_mm * landmark_noise_factor(yaw)
        else:
            sigma = np.maximum(sigma_mm, self.landmark_sigma_mm)
        sw = np.sqrt(w) * (float(np.median(z)) / k.fx / sigma)
        r = np.stack([(k.fx * x[:, 0] / z + k.cx - uv[:, 0]), (k.fy * x[:, 1] / z + k.cy - uv[:, 1])], 1)
        r *= sw[:, None]
        jp = np.zeros((len(z), 2, 3))
        jp[:, 0, 0] = k.fx / z
        jp[:, 0, 2] = -k.fx * x[:, 0] / z**2
        jp[:, 1, 1] = k.fy / z
        jp[:, 1, 2] = -k.fy * x[:, 1] / z**2
        jp *= sw[:, None, None]
        basis = np.einsum("klc,dc->kld", self._id, rot)            # rotated identity basis (K, L, 3)
        jac = np.einsum("lac,klc->lak", jp, basis).reshape(-1, len(identity))
        return jac.T @ jac, jac.T @ r.reshape(-1)

    def fit(self, views: Sequence[ViewInput], iterations: int = 4) -> JointFit:
        if not views:
            raise ValueError("no views to fit")
        fitters = [FaceFitter(self.model, self.correspondence, v.intrinsics, self.options) for v in views]
        singles = tuple(f.fit(v.track) for f, v in zip(fitters, views, strict=True))
        # start from the most frontal view's identity (its landmarks are the least self-occluded)
        yaws = [abs(s.pose.euler_deg()[0]) for s in singles]
        identity = np.asarray(singles[int(np.argmin(yaws))].identity, np.float64).copy()
        fits = list(singles)
        if iterations == 0 and len(views) == 1:
            return JointFit(singles, identity.astype(np.float32), singles, (float(singles[0].residual_px),))
        k_id = len(identity)
        # the identity prior is centred where the single-view fits put it (the fitter's own prior, e.g. its
        # learned landmark regressor, lives there), not at the mean face
        prior_centre = (np.mean([np.asarray(s.identity, np.float64) for s in singles], axis=0)
                        if self.prior_at_singles else np.zeros(k_id))
        tracks = [v.track for v in views]
        sigmas: list[np.ndarray | None] = [None] * len(views)
        for it in range(iterations):
            if self.bias is not None:
                # remove MediaPipe's expected offset at each view's current pose; weight by what is left
                for i, (fit, v) in enumerate(zip(fits, views, strict=True)):
                    depth = float(np.median(np.asarray(fit.vertices_mm)[: self.model.face_area_vertices, 2]))
                    tracks[i], sigmas[i] = self.bias.correct(v.track, fit.pose, v.intrinsics, depth)
            for i, f in enumerate(fitters):
                f.lock_identity(identity)
                f.reset_tracking()
                fits[i] = f.fit(tracks[i])
            h = np.eye(k_id) / self.identity_sigma**2
            g = (identity - prior_centre) / self.identity_sigma**2
            for i, (fit, v) in enumerate(zip(fits, views, strict=True)):
                a, b = self._identity_equations(fit, tracks[i], v.intrinsics, identity, sigmas[i])
                h += a
                g += b
            step = -np.linalg.solve(h, g)
            identity = identity + step
            log.debug("joint fit iteration %d: |Δα| = %.3f", it, float(np.linalg.norm(step)))
        for i, f in enumerate(fitters):
            f.lock_identity(identity)
            f.reset_tracking()
            fits[i] = f.fit(tracks[i])
        return JointFit(tuple(fits), identity.astype(np.float32), singles,
                        tuple(float(f.residual_px) for f in fits))


def is_side_view(fit: FaceFit) -> bool:
    return abs(fit.pose.euler_deg()[0]) >= SIDE_MIN_YAW_DEG


def rotated_view(image: np.ndarray, fit: FaceFit, model: MorphableModel, intrinsics: Intrinsics,
                 yaw_deg: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render the textured reconstruction turned by ±30° about its own vertical axis (one-input scheme).

    The texture is the input image projected onto the mesh; the turn goes away from the side the face
    already shows (toward frontal from a side view, toward the side from a frontal one, as the paper's
    automatic rotation does). Returns the (H, W, 3) uint8 rendering and the rotated camera-space vertices.
    """
    from realtime.render import OffscreenRenderer

    yaw_now = fit.pose.euler_deg()[0]
    turn = yaw_deg if yaw_deg is not None else (-ROTATED_VIEW_DEG if yaw_now > 0 else ROTATED_VIEW_DEG)
    verts = np.asarray(fit.vertices_mm, np.float64)
    centre = verts[: model.face_area_vertices].mean(axis=0)
    # rotation about the head's own up axis (model +y mapped into camera space)
    up = np.asarray(fit.pose.rotation, np.float64) @ np.array([0.0, 1.0, 0.0])
    a = np.radians(turn)
    kx = np.array([[0, -up[2], up[1]], [up[2], 0, -up[0]], [-up[1], up[0], 0]])
    rot = np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)
    rotated = ((verts - centre) @ rot.T + centre).astype(np.float32)
    tri = np.asarray(model.triangles, np.int32)
    # texture coordinates: where each vertex was in the input image (textured mode projects an image with
    # the given intrinsics, so render the original geometry's projection via per-vertex colours instead)
    from realtime.refine.uv import sample_image

    colours = sample_image(image.astype(np.float64) / 255.0, intrinsics.project(verts))
    with OffscreenRenderer(intrinsics.width, intrinsics.height) as r:
        sh = np.zeros((9, 3), np.float32)
        sh[0] = 1.0 / 0.282095  # flat unit shading: show the texture's colours as they are
        grey = np.full((intrinsics.height, intrinsics.width, 3), 128, np.uint8)
        img = r.render(rotated, tri, intrinsics, "lit", sh_coeffs=sh, background=grey,
                       vertex_colors=np.clip(colours, 0, 1).astype(np.float32))
    return img, rotated
