"""Morphable-model fitting to MediaPipe landmarks: perspective pose, bounded expressions, locked identity.

The fitter minimises, by Gauss-Newton with box constraints on the expression weights,

    Σ_l w_l |π(R·P_l + t) − u_l|² / σ²            2D landmarks (in mm at the face's depth, so resolution-free)
  + Σ_l w_l ((Z_l − Z̄) − (z_l − z̄)·Z/f)² / σ_z²     MediaPipe's relative depth (weak)
  + Σ_eyes (Z_iris − f·D_iris/d_iris)² / σ_iris²     metric scale from the iris (D_iris = 11.7 mm)
  + |α|² + |β|² / σ_β²                               Gaussian identity prior, small expression prior

where P_l = mean_l + B_id,l α + B_exp,l β are the model points the correspondence table ties to each of
MediaPipe's 468 surface landmarks. Left and right blendshapes are separate unknowns with independent,
identical priors: nothing couples _L to _R, so one-sided expressions are never symmetrised.

The bases are restricted to the landmark points once (478 × 3 rows); per frame the solver touches only
those, and the full mesh is formed once at the end with one matmul. Identity is estimated from several good
(frontal, confident, near-neutral) frames by accumulating each frame's identity normal equations, then
frozen: afterwards each frame solves pose + 53 expression weights only.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from realtime.camera import Intrinsics
from realtime.facemodel import IRIS_DIAMETER_MM, eye_rig
from realtime.iris import rescale_iris_rings
from realtime.results import FRONTAL_ROTATION, EngineEstimate, FaceFit, FaceTrack, FrameResult, Pose

if TYPE_CHECKING:
    from realtime.facemodel import MorphableModel
    from realtime.landmark_prior import LandmarkPrior

log = logging.getLogger(__name__)


N_SURFACE_LANDMARKS = 468
"""MediaPipe's face-surface landmarks; 468..477 are the two irises (not on the model surface)."""

# MediaPipe FaceMesh indices (refine_landmarks=True). Right/left are the subject's.
_RIGHT_IRIS = (469, 470, 471, 472)  # contour points: horizontal pair (469, 471), vertical pair (470, 472)
_LEFT_IRIS = (474, 475, 476, 477)

# Landmarks on and around the eyelid margins and the lips (MediaPipe FaceMesh topology: the eye contours
# with their first surrounding ring, the inner and outer lip contours).
_OPENING_LANDMARKS = frozenset({
    # right eye contour + ring
    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
    130, 25, 110, 24, 23, 22, 26, 112, 243, 190, 56, 28, 27, 29, 30, 247,
    # left eye contour + ring
    263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 414, 286, 258, 257, 259, 260, 467,
    # lips (outer and inner contours)
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
})

# Eyelid opening: (upper, lower) lid landmark pairs and the two eye corners, per eye (subject's right, left).
_EYE_OPENINGS = (
    ((159, 158, 160), (145, 153, 144), (33, 133)),
    ((386, 385, 387), (374, 380, 373), (263, 362)),
)

_EYE_UP = np.array([o[0] for o in _EYE_OPENINGS])
_EYE_LO = np.array([o[1] for o in _EYE_OPENINGS])
_EYE_CORNER_A = np.array([o[2][0] for o in _EYE_OPENINGS])
_EYE_CORNER_B = np.array([o[2][1] for o in _EYE_OPENINGS])

class CorrespondenceLike(Protocol):
    """What the fitter needs from ``realtime.correspondence.Correspondence``."""

    @property
    def vertex_ids(self) -> np.ndarray: ...
    @property
    def barycentric(self) -> np.ndarray: ...
    @property
    def weights(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class FitOptions:
    """Solver weights and identity-lock policy. Units: mm unless stated."""

    iterations: int = 2
    """Gauss-Newton iterations per tracked frame, warm-started from the previous frame (on talking_720p one
    iteration already lands within 0.014 mm of the converged fit; two within 0.001 mm)."""
    cold_iterations: int = 12
    """Iterations for a cold start (first frame of a track, single images)."""
    landmark_sigma_mm: float = 1.5
    """Landmark noise, expressed in mm at the face's depth."""
    depth_sigma_mm: float = 12.0
    """Noise of MediaPipe's relative depth (a weak term)."""
    iris_sigma_rel: float = 0.03
    """Relative noise assumed for the depth one iris implies. Tracking trusts it more than its per-frame
    noise (≈ 10 % on 13 px irises): the identity lock averages many frames, and a larger value lets the
    identity prior set the size (measured: locked-identity error 5.2 mm at 0.08, 3.9 mm at 0.03).
    Single images use ``FitOptions.single_image()`` (0.08)."""
    iris_diameter_mm: float = IRIS_DIAMETER_MM
    iris_chords_mm: tuple[float, float] = (11.4, 10.5)
    """Horizontal (469-471) and vertical (470-472) chords of MediaPipe's iris ring on an 11.7 mm iris seen
    head-on (median over 480 eyes of synthetic renders; the ring is wider than tall)."""
    iris_chords_sd_mm: tuple[float, float] = (1.6, 1.0)
    """Their spread on the same renders: the vertical chord is the more repeatable one."""
    iris_edge_mm: float = 11.4
    """What the limbus diameter measured in the image (``FaceTrack.iris_diameter_px``, ``realtime.iris``)
    reads on an 11.7 mm iris seen head-on (``tools/bench_fitting.py --calibrate-iris``, 313 of 400 eyes of
    seed-7 renders measured: median 11.42 mm, robust s.d. 0.56 mm, against 1.30 / 0.87 mm for MediaPipe's
    horizontal / vertical ring chords). Where it was measured, the eye's MediaPipe ring is rescaled
    about its centre to agree with it before anything reads the ring (the iris depth term, and the learned
    prior, whose only absolute-size cue is the iris size relative to the face)."""
    @property
    def ring_per_limbus(self) -> float:
        """MediaPipe's horizontal ring chord per image-measured limbus diameter: a measured eye's ring is
        rescaled by this × its measured diameter (the fitter at run time, the prior's trainer on its data)."""
        return self.iris_chords_mm[0] / self.iris_edge_mm

    iris_when_locked: bool = False
    """Keep the iris term after the identity lock (off: the locked identity carries the scale, and the
    per-frame iris diameter is the noisiest measurement we have)."""
    expression_sigma: float = 1.0
    """Std-dev of the (weak) zero-mean prior on each expression weight, identical for _L and _R."""
    expression_l1: float = 3.0
    """Sparsity: a linear cost per unit weight (weights are ≥ 0, so this is an L1 prior), same for _L/_R."""
    identity_sigma: float = 1.0
    """Std-dev of the identity prior (the modes are standard-normal: keep 1 unless regularising harder)."""
    lock_identity: bool = True
    """Freeze identity after ``lock_frames`` good frames (per-frame solving is then pose + expression)."""
    solve_identity: bool = True
    """Estimate identity at all (False: mean face, e.g. for baselines)."""
    lock_frames: int = 15
    lock_max_angle_deg: float = 20.0
    lock_min_presence: float = 0.5
    lock_max_expression: float = 0.35
    """A good frame has no expression weight above this (near-neutral)."""
    lock_prior_growth: float = 0.5
    """The identity prior grows as N**growth with N accumulated frames (frames share MediaPipe's bias)."""
    reid_frames: int = 4
    reid_threshold_mm: float = 2.0
    """A re-found track whose identity differs by more than this (RMS over landmarks) is a new face."""
    visibility_weighting: bool = True
    """Down-weight landmarks whose model normal turns away from the camera (far-side contour)."""
    eye_opening_sigma: float = 0.03
    """Noise of MediaPipe's eyelid opening (lid distance / eye width, per eye). This feature term makes the
    fitted lids follow the tracked ones (MediaPipe measures eye closure well even where single lid points
    slide over the surface); 0 disables it. Left and right eyes are separate, equal-weight terms."""
    landmark_prior: bool = True
    """Centre the expression and identity priors on the learned landmark regressor's estimate
    (``realtime.landmark_prior``) instead of on zero / the mean face, when the model has one."""
    prior_expression_strength: float = 10.0
    """Scales the regressor's expression prior (precision = strength / held-out residual variance)."""
    prior_identity_strength: float = 100.0
    """Scales the regressor's identity prior in the same way."""
    prior_skip_prefixes: tuple[str, ...] = ("eyeBlink", "eyeLook", "eyeSquint", "eyeWide", "brow")
    """Blendshapes the learned prior leaves to the landmarks (zero-centred prior + L1 as without a prior). The
    eyes: on real video the regressor, trained on rendered eyes, reads closed lids as a downward gaze
    (wink_blink_gaze.mp4: both eyes shut -> eyeLookDown 1.0, eyeBlink 0.05), while the eyelid-opening term
    reads real closures well. The brows: the regressor reads a weak brow raise as none (the 30 % side of the
    synthetic palsy patient: browOuterUp_R 0.30 -> 0.02, brow ratio 0.09 for a true 0.33), the landmarks keep
    the left/right ratio (0.27; tools/bench_clinical.py --only e2e), at +0.03 mm expression motion error on
    held-out renders."""
    prior_asymmetry_prefixes: tuple[str, ...] = ("eyeBlink",)
    """Paired blendshapes left to the landmarks (``prior_skip_prefixes``) whose left-right *difference* is still
    centred on the learned prior's difference: the level (both eyes shut or open) comes from the landmarks and
    the eyelid-opening term, which read real closures well, the one-sidedness also from the regressor, which
    learnt how MediaPipe registers a one-sided blink on renders (its lid points move only part of the way)."""
    prior_asymmetry_strength: float = 3.0
    """Precision of that difference term: strength / (sd_L² + sd_R²) with the regressor's held-out spreads; 0
    disables it. One-sided renders of the tuning seeds 7/11/13 (300 blinks): read with the 0.3 margin in 62 %
    without the term, 73 % with it (64 -> 81 % with a prior retrained on one-sided renders, not shipped:
    docs/fitting.md)."""
    prior_asymmetry_min: float = 0.1
    """The difference term is one-sided: it acts only where the regressor reads at least this much difference
    and the fit shows less of it on that side, so it adds asymmetry the landmarks under-register but never
    removes asymmetry they show (on real video the regressor reads no blink at all on closed eyes)."""
    robust_scale: float = 0.0
    """Cauchy robust weighting of landmarks at this many ``landmark_sigma_mm`` (0 = plain least squares)."""
    damping: float = 1e-4

    @classmethod
    def single_image(cls, **overrides: object) -> FitOptions:
        """Settings for one unrelated image (reconstruct, benchmarks): identity free, never locked, more
        iterations from the cold start, the iris trusted at its single-frame noise level, and a tighter
        identity prior (σ 0.5: one view's landmarks cannot pin 100 modes; on the synthetic set this cut the
        single-image shape error from 4.83 to 4.57 mm, mean face 4.81)."""
        base: dict[str, object] = {"lock_identity": False, "cold_iterations": 12, "iris_sigma_rel": 0.08,
                                   "identity_sigma": 0.5}
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass(slots=True)
class _Observation:
    uv: np.ndarray          # (468, 2) px
    z_px: np.ndarray        # (468,) MediaPipe relative depth, px
    iris_px: np.ndarray            # (2 eyes, horizontal/vertical chord) apparent iris ring chords, px
    presence: float
    track_id: int
    prior_expression: np.ndarray | None = None   # (E,) the landmark regressor's estimate
    prior_identity: np.ndarray | None = None     # (K,)


@dataclass(slots=True)
class _IdentityAccumulator:
    a: np.ndarray
    b: np.ndarray
    prior_sum: np.ndarray
    frames: int = 0
    prior_frames: int = 0

    @classmethod
    def empty(cls, k: int) -> _IdentityAccumulator:
        return cls(np.zeros((k, k)), np.zeros(k), np.zeros(k))


def _rodrigues(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return np.eye(3)
    k = w / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(theta) * kx + (1.0 - math.cos(theta)) * (kx @ kx)


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    v0, v1, v2 = (vertices[triangles[:, i]] for i in range(3))
    fn = np.cross(v1 - v0, v2 - v0)
    n = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(n, triangles[:, i], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


def iris_chords_px(landmarks_px: np.ndarray) -> np.ndarray:
    """(2 eyes: subject's right, left; 2 chords: horizontal 469-471, vertical 470-472) iris ring chords, px.

    Zeros when the landmarks have no iris refinement.
    """
    out = np.zeros((2, 2))
    if landmarks_px.shape[0] < 478:
        return out
    for e, (a, b, c, d) in enumerate((_RIGHT_IRIS, _LEFT_IRIS)):
        out[e, 0] = float(np.linalg.norm(landmarks_px[a, :2] - landmarks_px[c, :2]))
        out[e, 1] = float(np.linalg.norm(landmarks_px[b, :2] - landmarks_px[d, :2]))
    return out


@dataclass
class _State:
    rotation: np.ndarray = field(default_factory=lambda: FRONTAL_ROTATION.copy())
    translation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 600.0]))
    expression: np.ndarray = field(default_factory=lambda: np.zeros(0))
    identity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valid: bool = False
    track_id: int | None = None


def shipped_landmark_prior(model: MorphableModel) -> LandmarkPrior | None:
    """The landmark prior shipped for this model (loaded once per process), or None."""
    from realtime.correspondence import topology_hash
    from realtime.landmark_prior import load_landmark_prior

    return load_landmark_prior(model.name, topology_hash(model.triangles))


class FaceFitter:
    """Stateful fitter for one tracked face (warm start across frames, identity lock)."""

    def __init__(self, model: MorphableModel, correspondence: CorrespondenceLike, intrinsics: Intrinsics,
                 options: FitOptions | None = None, prior: LandmarkPrior | None = None) -> None:
        self.model = model
        self.intrinsics = intrinsics
        self.options = options or FitOptions()
        if prior is None and self.options.landmark_prior:
            prior = shipped_landmark_prior(model)
        usable = (prior is not None and prior.n_expressions == model.n_expressions
                  and prior.n_identity == model.n_identity)
        self.prior = prior if usable and self.options.landmark_prior else None
        if self.prior is not None:
            skip = np.array([n.startswith(self.options.prior_skip_prefixes) for n in model.expression_names])
            self._plain_exp = skip.astype(np.float64)
            self._prior_exp_prec = np.where(skip, 0.0, self.options.prior_expression_strength
                                            / self.prior.expression_sd**2)
            self._prior_id_prec = self.options.prior_identity_strength / self.prior.identity_sd**2
            # Left-right difference terms: (β_a − β_b − (p_a − p_b))² · precision, for each listed pair.
            mirror = np.asarray(model.expression_mirror)
            sided = [i for i, n in enumerate(model.expression_names)
                     if n.startswith(self.options.prior_asymmetry_prefixes) and mirror[i] > i]
            sd = self.prior.expression_sd
            self._asym_pairs = [(i, int(mirror[i]), self.options.prior_asymmetry_strength
                                 / float(sd[i] ** 2 + sd[mirror[i]] ** 2)) for i in sided]
        self.n_exp = model.n_expressions
        self.n_id = model.n_identity
        ids = np.asarray(correspondence.vertex_ids)[:N_SURFACE_LANDMARKS].astype(np.int64)
        bary = np.asarray(correspondence.barycentric, np.float64)[:N_SURFACE_LANDMARKS]
        self.landmark_weights = np.clip(np.asarray(correspondence.weights, np.float64)[:N_SURFACE_LANDMARKS],
                                        0.0, 1.0)
        n_l = ids.shape[0]
        self.n_landmarks = n_l

        def restrict(a: np.ndarray) -> np.ndarray:   # (..., N, 3) -> (..., L, 3), barycentric combination
            return np.einsum("...lkc,lk->...lc", a[..., ids, :].astype(np.float64), bary)

        self._mean_l = restrict(model.mean_mm)                                     # (L, 3)
        # (L, 3, K) layouts so that per-landmark Jacobians are one batched matmul.
        self._exp_l = np.ascontiguousarray(np.moveaxis(restrict(model.expression_basis_mm), 0, -1))
        self._id_l = np.ascontiguousarray(np.moveaxis(restrict(model.identity_basis_mm), 0, -1))
        self._exp_flat = self._exp_l.reshape(3 * n_l, self.n_exp)
        self._id_flat = self._id_l.reshape(3 * n_l, self.n_id)
        self._all_l = np.ascontiguousarray(np.concatenate([self._exp_l, self._id_l], axis=2))
        # (3, L, K) copies: rotating the basis is then a single (3 x 3) @ (3, L·K) product.
        self._exp_c = np.ascontiguousarray(self._exp_l.transpose(1, 0, 2))
        self._all_c = np.ascontiguousarray(self._all_l.transpose(1, 0, 2))
        # Preallocated Jacobians (u rows, v rows, depth rows) and residuals: no per-frame big allocations.
        # float32 halves the JᵀJ cost (the dominant one); H and the solve are float64.
        # The (weak) depth term uses the more reliable half of the landmarks: it needs the face's relief,
        # not every point, and its rows are a third of the JᵀJ cost.
        order = np.argsort(-self.landmark_weights, kind="stable")
        self._depth_ids = np.sort(order[: n_l // 2])
        n_rows = 2 * n_l + self._depth_ids.size
        self._jac_exp = np.zeros((n_rows, 6 + self.n_exp), np.float32)
        self._jac_full = np.zeros((n_rows, 6 + self.n_exp + self.n_id), np.float32)
        self._res = np.zeros(n_rows, np.float32)
        self._locked_base_l = self._mean_l.copy()
        normals = _vertex_normals(model.mean_mm.astype(np.float64), model.triangles)
        nl = np.einsum("lkc,lk->lc", normals[ids], bary)
        self._normals_l = nl / np.maximum(np.linalg.norm(nl, axis=1, keepdims=True), 1e-9)
        # Side-facing landmarks on the neutral face (normal ≥ 40° from +z), away from the eye and lip openings
        # (whose boundary normals are meaningless for visibility).
        openings = np.zeros(n_l, bool)
        openings[[i for i in _OPENING_LANDMARKS if i < n_l]] = True
        self._side_landmarks = np.flatnonzero((self._normals_l[:, 2] < math.cos(math.radians(40.0)))
                                              & ~openings)
        # Eyeball centres (identity-only, linear in α) for the iris scale term: the same rig the renders use.
        rig = eye_rig(model)
        self._eye_centre_mean = rig.centres(model.mean_mm.astype(np.float64))            # (2, 3)
        self._eye_centre_basis = np.stack(
            [model.identity_basis_mm[:, loop].astype(np.float64).mean(axis=1).T for loop in rig.loops])
        self._iris_offset = np.array([0.0, 0.0, rig.iris_depth_mm])
        # What MediaPipe's ring chords measure on an 11.7 mm iris (its ring is not round), and how much to
        # trust each: both measured on synthetic renders (``tools/bench_fitting.py --calibrate-iris``).
        scale = self.options.iris_diameter_mm / IRIS_DIAMETER_MM
        self._iris_chords_mm = scale * np.asarray(self.options.iris_chords_mm, np.float64)
        self._iris_chord_use = 1.0 / np.asarray(self.options.iris_chords_sd_mm, np.float64) ** 2

        self.mesher = MeshBuilder(model)
        # "Near-neutral" for the identity lock ignores where the eyes look: gaze barely moves the face, and
        # a person looking slightly off-camera is still a good frame to learn their shape from.
        self._face_expressions = np.array([i for i, n in enumerate(model.expression_names)
                                           if not n.startswith("eyeLook")], np.int64)
        import cv2  # noqa: F401  (cold starts use solvePnP: import now, not on the first live frame)

        self._state = _State(expression=np.zeros(self.n_exp), identity=np.zeros(self.n_id))
        self._locked_identity: np.ndarray | None = None
        self._reid_reference: np.ndarray | None = None
        self._acc = _IdentityAccumulator.empty(self.n_id)
        self._verify: _IdentityAccumulator | None = None
        self.events: list[str] = []
        """Events raised by the last ``fit`` ("identity-locked", "identity-reset", "new-face")."""

    # ------------------------------------------------------------------ public API
    @property
    def identity_locked(self) -> bool:
        return self._locked_identity is not None

    @property
    def identity(self) -> np.ndarray:
        return self._state.identity.copy()

    @property
    def cold(self) -> bool:
        """True when the next ``fit`` starts from scratch (no previous frame to warm-start from)."""
        return not self._state.valid

    @property
    def identity_verifying(self) -> bool:
        """True while a re-found track is being checked against the lock (identity solved freely)."""
        return self._verify is not None

    @property
    def reid_reference(self) -> np.ndarray | None:
        """The identity a re-found face's landmark-only candidate is compared with (None when unlocked):
        the locked identity itself, unless ``lock_identity`` was given another reference."""
        return None if self._reid_reference is None else self._reid_reference.copy()

    def reset_identity(self) -> None:
        """Forget the locked identity and everything accumulated; the next good frames lock a new one."""
        self._locked_identity = None
        self._reid_reference = None
        self._acc = _IdentityAccumulator.empty(self.n_id)
        self._verify = None
        self._state.identity = np.zeros(self.n_id)

    def lock_identity(self, identity: np.ndarray, *, reid_reference: np.ndarray | None = None) -> None:
        """Freeze a known identity (e.g. a saved patient profile, or the photometrically refined identity).

        ``reid_reference``: what re-identification compares a re-found face's candidate with. The candidate
        is a landmark-only estimate from a few frames; an identity refined from other evidence (the images'
        shading, ``realtime.identity_refine``) sits further from any landmark-only estimate of the same
        person than the landmark lock it started from, so the caller passes that landmark lock here. Default:
        ``identity`` itself."""
        self._locked_identity = np.asarray(identity, np.float64).copy()
        ref = self._locked_identity if reid_reference is None else reid_reference
        self._reid_reference = np.asarray(ref, np.float64).copy()
        self._state.identity = self._locked_identity
        self._locked_base_l = self._mean_l + (self._id_flat @ self._locked_identity).reshape(-1, 3)

    def reset_tracking(self) -> None:
        """Drop the warm start (the next frame is solved from scratch); identity is kept."""
        self._state.valid = False

    def fit(self, track: FaceTrack, warm_start: EngineEstimate | None = None, *, mesh: bool = True) -> FaceFit:
        """Fit one frame. ``mesh=False`` leaves ``vertices_mm`` empty ((0, 3)) for a caller that rebuilds the
        mesh itself (the smoothing stage), so the full mesh is formed once per frame."""
        t0 = time.perf_counter()
        self.events = []
        opt = self.options
        obs = self._observe(track)
        st = self._state
        new_track = st.track_id is not None and track.track_id != st.track_id
        if new_track and self._locked_identity is not None and opt.solve_identity:
            # Same person back, or a new one? Verify on the next good frames before trusting the lock.
            self._verify = _IdentityAccumulator.empty(self.n_id)
        st.track_id = track.track_id
        cold = not st.valid or new_track
        if warm_start is not None:
            st.rotation = np.asarray(warm_start.rotation, np.float64).copy()
            st.translation = np.asarray(warm_start.translation_mm, np.float64).copy()
            st.expression = np.clip(np.asarray(warm_start.expression, np.float64), 0.0, 1.0)
            if self._locked_identity is None and opt.solve_identity:
                st.identity = np.asarray(warm_start.identity, np.float64).copy()
            cold = False
        if cold:
            st.expression = np.zeros(self.n_exp)
            self._init_pose(obs)
        # While verifying a re-found track, identity is solved freely for a few frames (then restored if
        # it is the same person).
        free_identity = opt.solve_identity and (self._locked_identity is None or self._verify is not None)
        if cold:
            # Pose and expression first (cheap: 59 unknowns), then identity too; a tracked face needs only a
            # few identity steps here (the lock accumulator estimates it over frames).
            rigid = opt.cold_iterations // 2
            with_id = (opt.cold_iterations - rigid) if not opt.lock_identity else min(3, opt.cold_iterations)
            for _ in range(rigid if free_identity else opt.cold_iterations):
                self._gn_step(obs, False)
            for _ in range(with_id if free_identity else 0):
                self._gn_step(obs, True)
        else:
            # Identity still moving (not locked): one more step than a locked frame.
            for _ in range(max(opt.iterations, 3) if free_identity else opt.iterations):
                self._gn_step(obs, free_identity)
        st.valid = True
        self._update_identity_lock(obs)
        fit = self._make_fit(obs, mesh)
        log.debug("fit %.2f ms", (time.perf_counter() - t0) * 1e3)
        return fit

    # ------------------------------------------------------------------ observations and init
    def _observe(self, track: FaceTrack) -> _Observation:
        lm = np.asarray(track.landmarks_px, np.float64)
        if track.iris_diameter_px is not None:
            lm = rescale_iris_rings(lm, track.iris_diameter_px, self.options.ring_per_limbus)
        iris = iris_chords_px(lm)
        obs = _Observation(uv=lm[:N_SURFACE_LANDMARKS, :2], z_px=lm[:N_SURFACE_LANDMARKS, 2], iris_px=iris,
                           presence=float(track.presence), track_id=int(track.track_id))
        if self.prior is not None and lm.shape[0] >= 478:
            expression, identity = self.prior.predict(lm)
            obs.prior_expression = expression[0].astype(np.float64)
            obs.prior_identity = identity[0].astype(np.float64)
        return obs

    def _init_pose(self, obs: _Observation) -> None:
        """Cold start: iterative PnP of the current identity's landmark points from a frontal guess."""
        import cv2

        st = self._state
        pts = self._mean_l + (self._id_flat @ st.identity).reshape(-1, 3)
        use = self.landmark_weights > 0.3
        k = self.intrinsics.matrix
        # A frontal guess at the depth the face's pixel size implies, then iterative PnP from it.
        width_px = float(np.ptp(obs.uv[use, 0]))
        width_mm = float(np.ptp(pts[use, 0]))
        z0 = self.intrinsics.fx * width_mm / max(width_px, 1.0)
        c = obs.uv[use].mean(axis=0)
        t0 = np.array([(c[0] - self.intrinsics.cx) * z0 / self.intrinsics.fx,
                       (c[1] - self.intrinsics.cy) * z0 / self.intrinsics.fy, z0])
        rvec0, _ = cv2.Rodrigues(FRONTAL_ROTATION)
        ok, rvec, tvec = cv2.solvePnP(pts[use].astype(np.float64), obs.uv[use].astype(np.float64), k,
                                      np.zeros(5), np.asarray(rvec0, np.float64).copy(),
                                      t0.reshape(3, 1).copy(), useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        rvec, tvec = np.asarray(rvec, np.float64), np.asarray(tvec, np.float64)
        if ok and float(tvec[2, 0]) > 0:
            st.rotation = cv2.Rodrigues(rvec)[0]
            st.translation = tvec.reshape(3).astype(np.float64)
        else:
            st.rotation = FRONTAL_ROTATION.copy()
            st.translation = t0

    # ------------------------------------------------------------------ Gauss-Newton
    def _landmark_points(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        if self._locked_identity is not None and identity is self._state.identity:
            base = self._locked_base_l
        else:
            base = self._mean_l + (self._id_flat @ identity).reshape(-1, 3)
        return base + (self._exp_flat @ expression).reshape(-1, 3)

    def _gn_step(self, obs: _Observation, free_identity: bool) -> None:
        """One Gauss-Newton step: linearise, then the box-constrained update of all unknowns."""
        st = self._state
        ne = self.n_exp
        h, g = self._linearise(obs, free_identity, identity_prior=True)
        n = g.shape[0]
        lo = np.full(n, -np.inf)
        hi = np.full(n, np.inf)
        lo[6:6 + ne] = -st.expression
        hi[6:6 + ne] = 1.0 - st.expression
        delta = solve_box_qp(h, g, lo, hi)
        st.rotation = _rodrigues(delta[0:3]) @ st.rotation
        st.translation = st.translation + delta[3:6]
        st.expression = np.clip(st.expression + delta[6:6 + ne], 0.0, 1.0)
        if free_identity:
            st.identity = st.identity + delta[6 + ne:]

    def _linearise(self, obs: _Observation, free_identity: bool,
                   identity_prior: bool) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Newton normal equations (H, g = −∇) at the current state over [ω, t, β(, α)]: 2D rows
        (u, v), centred depth rows, iris rows, eyelid openings, expression prior (and identity prior)."""
        st, opt, k = self._state, self.options, self.intrinsics
        n_l = self.n_landmarks
        rot = st.rotation
        p = self._landmark_points(st.identity, st.expression)
        y = p @ rot.T
        x = y + st.translation
        z = np.maximum(x[:, 2], 1.0)
        mm_per_px = float(z.mean()) / k.fx
        w = self.landmark_weights
        if opt.visibility_weighting:
            # Only the side-facing landmarks (cheeks, jaw, the face oval) can turn away from the camera; the
            # eyelid margins' normals point into the eye socket even when seen, so they are never touched.
            sel = self._side_landmarks
            n_cam = self._normals_l[sel] @ rot.T
            facing = -np.einsum("lc,lc->l", n_cam, x[sel]) / np.linalg.norm(x[sel], axis=1)
            w = w.copy()
            w[sel] *= np.clip((facing - 0.05) * (1.0 / 0.25), 0.0, 1.0)
        iz = 1.0 / z
        if opt.robust_scale > 0:
            # Cauchy IRLS: landmarks far off (MediaPipe slips, occluded contour) lose influence smoothly.
            eu = k.fx * x[:, 0] * iz + k.cx - obs.uv[:, 0]
            ev = k.fy * x[:, 1] * iz + k.cy - obs.uv[:, 1]
            e2 = (eu * eu + ev * ev) * (mm_per_px / (opt.robust_scale * opt.landmark_sigma_mm)) ** 2
            w = w / (1.0 + e2)
        sw = np.sqrt(w) * (mm_per_px / opt.landmark_sigma_mm)   # px residual -> normalised mm residual
        a = k.fx * iz * sw                 # du/dX = (a, 0, c), dv/dX = (0, b, d), already weighted
        b = k.fy * iz * sw
        c = -a * x[:, 0] * iz
        d = -b * x[:, 1] * iz
        basis_c = self._all_c if free_identity else self._exp_c
        n_shape = basis_c.shape[2]
        rb = (rot @ basis_c.reshape(3, -1)).reshape(3, n_l, n_shape)   # rotated basis, one BLAS call
        use_depth = opt.depth_sigma_mm > 0
        jac = self._jac_full if free_identity else self._jac_exp
        r = self._res
        ju, jv, jz = jac[0:n_l], jac[n_l:2 * n_l], jac[2 * n_l:]
        yx, yy, yz = y[:, 0], y[:, 1], y[:, 2]
        # d/dω of a left-multiplied rotation update:  dX = ω × Y.
        ju[:, 0] = yy * c
        ju[:, 1] = yz * a - yx * c
        ju[:, 2] = -yy * a
        jv[:, 0] = yy * d - yz * b
        jv[:, 1] = -yx * d
        jv[:, 2] = yx * b
        ju[:, 3], ju[:, 4], ju[:, 5] = a, 0.0, c
        jv[:, 3], jv[:, 4], jv[:, 5] = 0.0, b, d
        np.multiply(rb[0], a[:, None], out=ju[:, 6:])
        ju[:, 6:] += rb[2] * c[:, None]
        np.multiply(rb[1], b[:, None], out=jv[:, 6:])
        jv[:, 6:] += rb[2] * d[:, None]
        r[0:n_l] = (k.fx * x[:, 0] * iz + k.cx - obs.uv[:, 0]) * sw
        r[n_l:2 * n_l] = (k.fy * x[:, 1] * iz + k.cy - obs.uv[:, 1]) * sw
        if use_depth:
            # MediaPipe relative depth, centred (its offset is arbitrary), converted px -> mm at the face.
            di = self._depth_ids
            wd = w[di]
            wz = wd / max(float(wd.sum()), 1e-9)
            sz = np.sqrt(wd) * (1.0 / opt.depth_sigma_mm)
            zd = obs.z_px[di]
            dz_obs = (zd - float(wz @ zd)) * mm_per_px
            xd = x[di, 2]
            r[2 * n_l:] = ((xd - float(wz @ xd)) - dz_obs) * sz
            jz[:, 0] = yy[di]
            jz[:, 1] = -yx[di]
            jz[:, 2:6] = 0.0
            jz[:, 6:] = rb[2][di]
            jz -= wz @ jz
            jz *= sz[:, None]
        else:
            jz[:] = 0.0
            r[2 * n_l:] = 0.0
        h = (jac.T @ jac).astype(np.float64)
        g = -(jac.T @ r).astype(np.float64)

        # Iris: metric depth of each eye (the only absolute-scale information in a single frame).
        if free_identity or opt.iris_when_locked:
            ji, ri = self._iris_rows(obs, free_identity)
            if ri.size:
                h[:6, :6] += ji[:, :6].T @ ji[:, :6]
                g[:6] -= ji[:, :6].T @ ri
                if free_identity:
                    jid = ji[:, 6:]
                    h[:6, 6 + self.n_exp:] += ji[:, :6].T @ jid
                    h[6 + self.n_exp:, :6] += jid.T @ ji[:, :6]
                    h[6 + self.n_exp:, 6 + self.n_exp:] += jid.T @ jid
                    g[6 + self.n_exp:] -= jid.T @ ri

        if opt.eye_opening_sigma > 0:
            ji, ri = self._eye_opening_rows(obs, x, y, iz, rb)
            h += ji.T @ ji
            g -= ji.T @ ri

        # Priors: expression (weak, identical and independent per side), identity (standard normal).
        ne = self.n_exp
        diag = np.einsum("ii->i", h)
        if obs.prior_expression is not None:
            # Centred on the regressor's reading, as wide as its held-out error (no sparsity pull to 0); the
            # skipped blendshapes keep the plain prior.
            plain = self._plain_exp
            diag[6:6 + ne] += self._prior_exp_prec + plain / opt.expression_sigma**2
            g[6:6 + ne] -= ((st.expression - obs.prior_expression) * self._prior_exp_prec
                            + plain * (st.expression / opt.expression_sigma**2 + opt.expression_l1))
            if opt.prior_asymmetry_strength > 0:
                # Only ever adds asymmetry: active where the regressor reads a one-sided difference that the
                # fit shows less of (on the same side). Scalar code: one pair (eyeBlink) by default.
                for ja, jb, prec in self._asym_pairs:
                    target = float(obs.prior_expression[ja] - obs.prior_expression[jb])
                    diff = float(st.expression[ja] - st.expression[jb])
                    if abs(target) < opt.prior_asymmetry_min or (diff if target > 0 else -diff) >= abs(target):
                        continue
                    pull = (diff - target) * prec
                    ia, ib = 6 + ja, 6 + jb
                    h[ia, ia] += prec
                    h[ib, ib] += prec
                    h[ia, ib] -= prec
                    h[ib, ia] -= prec
                    g[ia] -= pull
                    g[ib] += pull
        else:
            diag[6:6 + ne] += 1.0 / opt.expression_sigma**2
            g[6:6 + ne] -= st.expression / opt.expression_sigma**2 + opt.expression_l1
        if free_identity and identity_prior:
            if obs.prior_identity is not None:
                diag[6 + ne:] += self._prior_id_prec
                g[6 + ne:] -= (st.identity - obs.prior_identity) * self._prior_id_prec
            else:
                diag[6 + ne:] += 1.0 / opt.identity_sigma**2
                g[6 + ne:] -= st.identity / opt.identity_sigma**2
        diag[:6 + ne] += opt.damping * (1.0 + diag[:6 + ne])
        if identity_prior:
            diag[6 + ne:] += opt.damping * (1.0 + diag[6 + ne:])
        return h, g

    def _eye_opening_rows(self, obs: _Observation, x: np.ndarray, y: np.ndarray, iz: np.ndarray,
                          rb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows (2 eyes × unknowns) and residuals of the eyelid-opening term at the current state.

        Opening = mean lid-pair distance across the eye axis / eye width, measured the same way on the
        tracked and on the fitted landmarks; linearised with the (slowly varying) axis held fixed. Both
        eyes at once (arrays (2 eyes, 3 pairs)).
        """
        k, opt = self.intrinsics, self.options
        up, lo, ca, cb = _EYE_UP, _EYE_LO, _EYE_CORNER_A, _EYE_CORNER_B
        axis = obs.uv[ca] - obs.uv[cb]                                   # (2, 2)
        width = np.maximum(np.linalg.norm(axis, axis=1), 2.0)             # (2,)
        normal = np.column_stack([-axis[:, 1], axis[:, 0]]) / width[:, None]
        u = k.fx * x[:, 0] * iz + k.cx
        v = k.fy * x[:, 1] * iz + k.cy
        m = up.shape[1]
        fit_d = (u[up] - u[lo]) * normal[:, :1] + (v[up] - v[lo]) * normal[:, 1:]      # (2, 3)
        obs_d = ((obs.uv[up] - obs.uv[lo]) * normal[:, None, :]).sum(axis=2)
        s = 1.0 / (opt.eye_opening_sigma * m * width)                     # (2,)
        res = (fit_d - obs_d).sum(axis=1) * s
        # d(opening)/dX of each lid point: ±(n_x·fx/z, n_y·fy/z, −(n_x·fx·x + n_y·fy·y)/z²)·s.
        ids = np.concatenate([up, lo], axis=1)                            # (2, 2m)
        sign = np.r_[np.ones(m), -np.ones(m)]
        zi = iz[ids]
        a = k.fx * zi * normal[:, :1] * sign * s[:, None]
        b = k.fy * zi * normal[:, 1:] * sign * s[:, None]
        c = -(a * x[ids, 0] + b * x[ids, 1]) * zi
        yx, yy, yz = y[ids, 0], y[ids, 1], y[ids, 2]
        rows = np.empty((2, 6 + rb.shape[2]))
        rows[:, 0] = (yy * c - yz * b).sum(axis=1)
        rows[:, 1] = (yz * a - yx * c).sum(axis=1)
        rows[:, 2] = (yx * b - yy * a).sum(axis=1)
        rows[:, 3], rows[:, 4], rows[:, 5] = a.sum(axis=1), b.sum(axis=1), c.sum(axis=1)
        rows[:, 6:] = (np.einsum("el,elk->ek", a, rb[0][ids]) + np.einsum("el,elk->ek", b, rb[1][ids])
                       + np.einsum("el,elk->ek", c, rb[2][ids]))
        return rows, res

    def _iris_rows(self, obs: _Observation, with_identity: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows (eyes × [6 pose | 100 identity]) and residuals of the iris depth term at the current state.

        The iris plane lies ``iris_depth`` in front of the eyeball centre (straight gaze); its depth must
        equal f·D/d. Each chord is compared with what it measures on an 11.7 mm iris (D_h, D_v) times its
        foreshortening by the current head rotation (the disc's x / y axes projected on the image plane),
        so head turns do not bias the scale. Eyeball centres depend on identity only.
        """
        st, opt, k = self._state, self.options, self.intrinsics
        rows = []
        res = []
        # Foreshortening of the disc's horizontal / vertical axes: model x and y seen through the rotation,
        # projected on the image plane (columns 0 and 1 of R, their x/y components).
        fore = np.hypot(st.rotation[0, :2], st.rotation[1, :2])
        expected = self._iris_chords_mm * fore   # mm on the image plane per unit f/z
        for e in range(2):
            chords = obs.iris_px[e]
            if chords.min() <= 2.0:
                continue
            # Least-squares f/z from both chords, then the depth it implies.
            # Weighted least-squares f/z from both chords (weights: each chord's inverse variance).
            f_over_z = float((chords * self._iris_chord_use) @ expected) / float(
                (expected * self._iris_chord_use) @ expected)
            q = self._eye_centre_mean[e] + self._eye_centre_basis[e] @ st.identity + self._iris_offset
            y = st.rotation @ q
            z = y[2] + st.translation[2]
            z_target = k.fx / f_over_z
            s = 1.0 / (opt.iris_sigma_rel * z_target)
            row = np.zeros(6 + (self.n_id if with_identity else 0))
            row[0], row[1], row[5] = y[1], -y[0], 1.0
            if with_identity:
                row[6:] = st.rotation[2] @ self._eye_centre_basis[e]
            rows.append(row * s)
            res.append((z - z_target) * s)
        if not rows:
            return np.zeros((0, 6 + (self.n_id if with_identity else 0))), np.zeros(0)
        return np.array(rows), np.array(res)

    # ------------------------------------------------------------------ identity lock
    def _identity_normal_equations(self, obs: _Observation) -> tuple[np.ndarray, np.ndarray]:
        """This frame's identity normal equations at its fitted pose and expression: (A, b) with the frame's
        quadratic model ½αᵀAα − bᵀα + const. The identity prior is added once, at the solve.

        (Marginalising the pose instead, by a Schur complement, was measured worse on the head-turn
        sequence: 5.6 vs 5.2 mm; the bounded expressions cannot be marginalised as if free.)
        """
        h, g = self._linearise(obs, True, identity_prior=False)
        m = 6 + self.n_exp
        a = h[m:, m:]
        a = 0.5 * (a + a.T)
        return a, a @ self._state.identity + g[m:]

    def _good_frame(self, obs: _Observation, neutral: bool = True) -> bool:
        opt, st = self.options, self._state
        yaw, pitch, roll = Pose(st.rotation, st.translation).euler_deg()
        return (obs.presence >= opt.lock_min_presence
                and max(abs(yaw), abs(pitch), abs(roll)) <= opt.lock_max_angle_deg
                and (not neutral or float(st.expression[self._face_expressions].max(initial=0.0))
                     <= opt.lock_max_expression))

    def _solve_accumulated(self, acc: _IdentityAccumulator) -> np.ndarray:
        opt = self.options
        if self.prior is not None and acc.prior_frames:
            # The regressor's readings, averaged over the frames, as the prior centre; its width shrinks
            # with the frames like the landmark evidence's (both share MediaPipe's per-person bias).
            lam = acc.frames**opt.lock_prior_growth * self._prior_id_prec
            centre = acc.prior_sum / acc.prior_frames
            return np.linalg.solve(acc.a + np.diag(lam), acc.b + lam * centre)
        lam_i = acc.frames**opt.lock_prior_growth / opt.identity_sigma**2
        return np.linalg.solve(acc.a + lam_i * np.eye(self.n_id), acc.b)

    def _update_identity_lock(self, obs: _Observation) -> None:
        opt = self.options
        if not opt.solve_identity:
            return
        if self._locked_identity is None:
            if not self._good_frame(obs):
                return
            a, b = self._identity_normal_equations(obs)
            self._acc.a += a
            self._acc.b += b
            self._acc.frames += 1
            if obs.prior_identity is not None:
                self._acc.prior_sum += obs.prior_identity
                self._acc.prior_frames += 1
            if opt.lock_identity and self._acc.frames >= opt.lock_frames:
                self.lock_identity(self._solve_accumulated(self._acc))
                self.events.append("identity-locked")
                log.info("identity locked after %d good frames", self._acc.frames)
        elif self._verify is not None:
            if not self._good_frame(obs, neutral=False):
                return
            a, b = self._identity_normal_equations(obs)
            self._verify.a += a
            self._verify.b += b
            self._verify.frames += 1
            if obs.prior_identity is not None:
                self._verify.prior_sum += obs.prior_identity
                self._verify.prior_frames += 1
            if self._verify.frames >= opt.reid_frames:
                cand = self._solve_accumulated(self._verify)
                ref = self._reid_reference if self._reid_reference is not None else self._locked_identity
                diff = (self._id_flat @ (cand - ref)).reshape(-1, 3)
                rms = float(np.sqrt((diff**2).sum(axis=1).mean()))
                log.debug("re-identification: the candidate differs by %.2f mm RMS", rms)
                if rms > opt.reid_threshold_mm:
                    log.info("new face (identity differs by %.2f mm RMS): re-estimating identity", rms)
                    acc = self._verify
                    self.reset_identity()
                    self._acc = acc
                    self._state.identity = cand
                    self.events.append("new-face")
                else:
                    self._state.identity = self._locked_identity
                self._verify = None

    # ------------------------------------------------------------------ outputs
    def make_fit(self, identity: np.ndarray, expression: np.ndarray, rotation: np.ndarray,
                 translation: np.ndarray, residual_px: float, confidence: float, locked: bool,
                 scale_source: str = "iris", mesh: bool = True) -> FaceFit:
        return self.mesher.make_fit(self.intrinsics, identity, expression, rotation, translation, residual_px,
                                    confidence, locked, scale_source, mesh=mesh)

    def _make_fit(self, obs: _Observation, mesh: bool = True) -> FaceFit:
        st = self._state
        p = self._landmark_points(st.identity, st.expression)
        x = p @ st.rotation.T + st.translation
        proj = self.intrinsics.project(x)
        w = self.landmark_weights
        err = np.linalg.norm(proj - obs.uv, axis=1)
        residual = float(np.sqrt((w * err**2).sum() / max(float(w.sum()), 1e-9)))
        # Residual relative to the face's size: 1 % of the inter-ocular distance is "perfect", 8 % is poor.
        iod = float(np.linalg.norm(obs.uv[33] - obs.uv[263])) if self.n_landmarks > 263 else 100.0
        rel = residual / max(iod, 1.0)
        confidence = float(np.clip(obs.presence, 0.0, 1.0) / (1.0 + (rel / 0.04) ** 2))
        scale_source = "iris" if float(obs.iris_px.max()) > 2.0 else "prior"
        locked = self.identity_locked and self._verify is None   # not while re-checking a re-found face
        return self.make_fit(st.identity, st.expression, st.rotation, st.translation, residual, confidence,
                             locked, scale_source, mesh)


class MeshBuilder:
    """Full camera-space mesh and iBUG-68 landmarks from parameters (shared by the fitter and the smoother).

    The identity part (mean + identity modes) is cached while the identity does not change (it is locked
    most of the time), so a frame costs one (53 × 3N) expression matmul and one rigid transform.
    """

    def __init__(self, model: MorphableModel) -> None:
        self.model = model
        n_exp, n_id = model.n_expressions, model.n_identity
        self._exp_full = np.ascontiguousarray(model.expression_basis_mm.reshape(n_exp, -1), np.float32)
        self._lm68 = np.asarray(model.landmarks68, np.int64)
        self._mean_68 = model.mean_mm[self._lm68].astype(np.float64)
        self._exp_68 = np.ascontiguousarray(model.expression_basis_mm[:, self._lm68].reshape(n_exp, -1),
                                            np.float64)
        self._id_68 = np.ascontiguousarray(model.identity_basis_mm[:, self._lm68].reshape(n_id, -1),
                                           np.float64)
        self._base: np.ndarray | None = None
        self._base_key = b""

    def identity_base(self, identity: np.ndarray) -> np.ndarray:
        """mean + identity modes, (3N,) float32, cached per identity."""
        key = np.asarray(identity, np.float64).tobytes()
        if self._base is None or key != self._base_key:
            self._base = self.model.shape(np.asarray(identity, np.float32)).reshape(-1)
            self._base_key = key
        return self._base

    def mesh(self, identity: np.ndarray, expression: np.ndarray, rotation: np.ndarray,
             translation: np.ndarray) -> np.ndarray:
        """Camera-space full mesh (N, 3) float32."""
        v = np.asarray(expression, np.float32) @ self._exp_full
        v += self.identity_base(identity)
        out = v.reshape(-1, 3) @ np.asarray(rotation, np.float32).T
        out += np.asarray(translation, np.float32)
        return out

    def landmarks68(self, intrinsics: Intrinsics, identity: np.ndarray, expression: np.ndarray,
                    rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """iBUG-68 model landmarks: (68, 3) camera mm and (68, 2) px."""
        p = self._mean_68 + (np.asarray(identity, np.float64) @ self._id_68
                             + np.asarray(expression, np.float64) @ self._exp_68).reshape(-1, 3)
        cam = p @ np.asarray(rotation).T + np.asarray(translation)
        return cam, intrinsics.project(cam)

    def make_fit(self, intrinsics: Intrinsics, identity: np.ndarray, expression: np.ndarray,
                 rotation: np.ndarray, translation: np.ndarray, residual_px: float, confidence: float,
                 locked: bool, scale_source: str = "iris", mesh: bool = True) -> FaceFit:
        lm_mm, lm_px = self.landmarks68(intrinsics, identity, expression, rotation, translation)
        vertices = (self.mesh(identity, expression, rotation, translation) if mesh
                    else np.empty((0, 3), np.float32))
        return FaceFit(
            pose=Pose(rotation=np.array(rotation, np.float64),
                      translation_mm=np.array(translation, np.float64)),
            expression=np.asarray(expression, np.float32).copy(),
            identity=np.asarray(identity, np.float32).copy(),
            vertices_mm=vertices,
            landmarks68_px=lm_px.astype(np.float32),
            landmarks68_mm=lm_mm.astype(np.float32),
            residual_px=float(residual_px),
            confidence=float(confidence),
            identity_locked=locked,
            scale_source=scale_source,
        )


def solve_box_qp(h: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 max_iter: int = 30) -> np.ndarray:
    """argmin ½xᵀHx − gᵀx subject to lo ≤ x ≤ hi (H positive definite), by a primal active-set method.

    Each iteration solves the free block exactly; violators are pinned to their bound and bound variables
    whose gradient points inward are released (KKT), so the answer is the exact box-QP optimum once the
    active set settles — a handful of small solves for 59 (or 159) unknowns.
    """
    n = g.shape[0]
    x = np.zeros(n)
    at_lo = lo >= 0.0   # variables starting on a bound (step 0 is on the bound)
    at_hi = hi <= 0.0
    x[at_lo] = lo[at_lo]
    x[at_hi] = hi[at_hi]
    fixed = at_lo | at_hi
    # Start with bound variables whose unconstrained gradient pushes outward.
    grad0 = g - h @ x
    release = (at_lo & (grad0 > 0)) | (at_hi & (grad0 < 0))
    fixed &= ~release
    for _ in range(max_iter):
        free = ~fixed
        xf = x.copy()
        if free.any():
            rhs = g[free] - h[np.ix_(free, fixed)] @ x[fixed]
            xf[free] = np.linalg.solve(h[np.ix_(free, free)], rhs)
        viol = free & ((xf < lo - 1e-12) | (xf > hi + 1e-12))
        if viol.any():
            # Pin every violator to its bound at once (a projected active-set step: few solves when many
            # weights want to go below 0); wrongly pinned ones are released by the KKT check below.
            x = xf
            below = viol & (xf < lo)
            above = viol & (xf > hi)
            x[below] = lo[below]
            x[above] = hi[above]
            fixed |= viol
            continue
        x = xf
        grad = g - h @ x
        on_lo = fixed & (x <= lo + 1e-12)
        on_hi = fixed & (x >= hi - 1e-12)
        release = (on_lo & (grad > 1e-10)) | (on_hi & (grad < -1e-10))
        if not release.any():
            return x
        # Release the most violated multiplier only (standard active-set rule; avoids cycling).
        score = np.where(release, np.abs(grad), -1.0)
        fixed[int(np.argmax(score))] = False
    return np.clip(x, lo, hi)


class IntrinsicsResolver:
    """Camera intrinsics for a frame size: a calibration file (rescaled), a field of view, or the default.

    Shared by the fit and smoothing stages so both project with the same camera.
    """

    def __init__(self, intrinsics: Intrinsics | None = None, fov_deg: float | None = None,
                 calibration: str | Path | None = None) -> None:
        self._fixed = intrinsics
        self._fov = fov_deg
        self._calibration = Path(calibration) if calibration is not None else None
        self._cache: dict[tuple[int, int], Intrinsics] = {}
        if self._calibration is not None:
            Intrinsics.from_file(self._calibration)   # fail early (one-line BadInputError) on a bad file
        if fov_deg is not None:
            Intrinsics.from_fov(640, 480, fov_deg)     # validates the range

    def for_size(self, width: int, height: int) -> Intrinsics:
        key = (int(width), int(height))
        intr = self._cache.get(key)
        if intr is None:
            if self._fixed is not None:
                same = (self._fixed.width, self._fixed.height) == key
                intr = self._fixed if same else self._fixed.scaled(*key)
            elif self._calibration is not None:
                intr = Intrinsics.from_file(self._calibration, *key)
            elif self._fov is not None:
                intr = Intrinsics.from_fov(*key, self._fov)
            else:
                intr = Intrinsics.from_fov(*key)
            self._cache[key] = intr
        return intr


class FitStage:
    """Pipeline stage "fit": one ``FaceFitter`` per face slot; fills ``FaceResult.fit``.

    Handles the "reset-identity" event and adds the fitters' events ("identity-locked", "new-face") to the
    frame's events. With ``mesh=False`` (set when a ``SmoothingStage`` follows, which rebuilds the mesh from
    the smoothed parameters) the raw fit's ``vertices_mm`` is left empty: one full mesh per frame.
    """

    name = "fit"

    def __init__(self, model: MorphableModel | None = None, correspondence: CorrespondenceLike | None = None,
                 intrinsics: IntrinsicsResolver | None = None, options: FitOptions | None = None,
                 mesh: bool = True) -> None:
        self.mesh = mesh
        if model is None:
            from realtime.facemodel import load_face_model

            model = load_face_model()
        if correspondence is None:
            from realtime.correspondence import load_correspondence

            correspondence = load_correspondence(model)
        self.model = model
        self.correspondence = correspondence
        self.intrinsics = intrinsics or IntrinsicsResolver()
        self.options = options or FitOptions()
        self._fitters: list[FaceFitter] = []

    def _fitter(self, slot: int, intr: Intrinsics) -> FaceFitter:
        while len(self._fitters) <= slot:
            self._fitters.append(FaceFitter(self.model, self.correspondence, intr, self.options))
        f = self._fitters[slot]
        if f.intrinsics != intr:   # resolution change: same face, new camera model
            f.intrinsics = intr
            f.reset_tracking()
        return f

    def process(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        if "reset-identity" in result.events:
            for f in self._fitters:
                f.reset_identity()
        intr = self.intrinsics.for_size(result.frame.width, result.frame.height)
        for slot, face in enumerate(result.faces):
            fitter = self._fitter(slot, intr)
            face.fit = fitter.fit(face.track, warm_start=face.engine if fitter.cold else None, mesh=self.mesh)
            result.events.extend(e for e in fitter.events if e not in result.events)
        result.timings_ms[self.name] = (time.perf_counter() - t0) * 1000.0

    @property
    def fitters(self) -> tuple[FaceFitter, ...]:
        """The per-slot fitters made so far (for stages that work with their identity lock)."""
        return tuple(self._fitters)

    def close(self) -> None:
        self._fitters.clear()


def fit_image(image_rgb: np.ndarray, model: MorphableModel | None = None,
              intrinsics: Intrinsics | None = None, correspondence: CorrespondenceLike | None = None,
              options: FitOptions | None = None, tracker: object | None = None) -> FaceFit | None:
    """One-shot fit of the most prominent face in an image (identity free, not locked); None if no face.

    ``tracker`` is a ``FaceMeshTracker`` to reuse (a static one is created and closed otherwise).
    """
    from realtime.landmarks import FaceMeshTracker

    if model is None:
        from realtime.facemodel import load_face_model

        model = load_face_model()
    if correspondence is None:
        from realtime.correspondence import load_correspondence

        correspondence = load_correspondence(model)
    h, w = image_rgb.shape[:2]
    intr = intrinsics if intrinsics is not None else Intrinsics.from_fov(w, h)
    if (intr.width, intr.height) != (w, h):
        intr = intr.scaled(w, h)
    opt = options or FitOptions.single_image(cold_iterations=20)
    if isinstance(tracker, FaceMeshTracker):
        tracks = tracker.track(image_rgb)
    else:
        with FaceMeshTracker(max_faces=1, static=True) as own:
            tracks = own.track(image_rgb)
    if not tracks:
        return None
    track = max(tracks, key=lambda t: (t.box_px[2] - t.box_px[0]) * (t.box_px[3] - t.box_px[1]))
    return FaceFitter(model, correspondence, intr, opt).fit(track)
