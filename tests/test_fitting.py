"""Landmark fitting: solver correctness on exactly projected model points, bounds, identity lock/reset."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from realtime.camera import Intrinsics
from realtime.facemodel import eye_rig
from realtime.fitting import (
    FaceFitter,
    FitOptions,
    FitStage,
    IntrinsicsResolver,
    solve_box_qp,
)
from realtime.results import FaceResult, FaceTrack, Frame, FrameResult, Pose
from realtime.synthetic import pose_from_euler

# Exact data: the solver must recover what generated it; priors off so nothing biases the answer. These
# tracks are the model's own correspondence points, not MediaPipe output, so the learned landmark prior
# (trained on MediaPipe's layout; tested on real MediaPipe in test_landmark_prior.py) is off throughout.
EXACT = FitOptions(landmark_prior=False, lock_identity=False, cold_iterations=25, expression_sigma=100.0,
                   expression_l1=0.0, identity_sigma=100.0,
                   iris_sigma_rel=0.05, robust_scale=0.0, visibility_weighting=False)


@pytest.fixture(scope="module")
def correspondence(face_model):
    from realtime.correspondence import load_correspondence

    return load_correspondence(face_model)


def project_track(model, corr, intr: Intrinsics, identity, expression, pose: Pose, track_id: int = 1,
                  noise_px: float = 0.0, rng: np.random.Generator | None = None) -> FaceTrack:
    """A FaceTrack whose 478 landmarks are the model's correspondence points projected with known params."""
    v = model.shape(identity, expression).astype(np.float64)
    cam = v @ pose.rotation.T + pose.translation_mm
    pts = corr.points(cam)
    lm = np.zeros((478, 3), np.float32)
    lm[:, :2] = intr.project(pts)
    z = pts[:468, 2]
    lm[:468, 2] = (z - z.mean()) * intr.fx / z.mean()
    if noise_px and rng is not None:
        lm[:468, :2] += rng.normal(0.0, noise_px, (468, 2))
    # Iris rings as MediaPipe draws them on an 11.7 mm iris (chords FitOptions.iris_chords_mm), in front of
    # each eyeball, along the head's own x / y axes.
    rig = eye_rig(model)
    centres = rig.centres(model.shape(identity).astype(np.float64))
    dh, dv = FitOptions().iris_chords_mm
    for e in range(2):
        q = centres[e] + [0.0, 0.0, rig.iris_depth_mm]
        ex, ey = np.array([dh / 2, 0.0, 0.0]), np.array([0.0, dv / 2, 0.0])
        ring = [q, q + ex, q + ey, q - ex, q - ey]
        cam = np.array(ring) @ pose.rotation.T + pose.translation_mm
        lm[468 + 5 * e: 473 + 5 * e, :2] = intr.project(cam)
    return FaceTrack(landmarks_px=lm, presence=0.95, box_px=(0.0, 0.0, 1.0, 1.0), track_id=track_id)


def test_box_qp_matches_general_optimizer():
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = 12
        a = rng.normal(size=(30, n))
        h = a.T @ a + 0.1 * np.eye(n)
        g = rng.normal(size=n) * 5
        lo = np.full(n, -np.inf)
        hi = np.full(n, np.inf)
        lo[4:] = -rng.uniform(0, 1, n - 4)
        hi[4:] = lo[4:] + 1.0
        x = solve_box_qp(h, g, lo, hi)
        bounds = [(None if np.isinf(a_) else a_, None if np.isinf(b_) else b_)
                  for a_, b_ in zip(lo, hi, strict=True)]

        def cost(v: np.ndarray, h: np.ndarray = h, g: np.ndarray = g) -> tuple[float, np.ndarray]:
            return float(0.5 * v @ h @ v - g @ v), h @ v - g

        ref = minimize(cost, np.clip(np.zeros(n), lo, hi), jac=True, bounds=bounds, method="L-BFGS-B",
                       options={"ftol": 1e-14, "gtol": 1e-10})
        assert np.all(x >= lo - 1e-9) and np.all(x <= hi + 1e-9)
        f = 0.5 * x @ h @ x - g @ x
        assert f <= ref.fun + 1e-6
        np.testing.assert_allclose(x, ref.x, atol=1e-4)


def test_recovers_known_parameters_from_projected_points(face_model, correspondence):
    rng = np.random.default_rng(1)
    intr = Intrinsics.from_fov(1280, 720, 60.0)
    names = face_model.expression_names
    for yaw in (-30.0, 0.0, 25.0):
        identity = rng.normal(0.0, 1.0, face_model.n_identity)
        expression = np.zeros(face_model.n_expressions)
        expression[names.index("eyeBlink_L")] = 0.8
        expression[names.index("mouthSmile_R")] = 0.6
        expression[names.index("jawOpen")] = 0.3
        pose = pose_from_euler(yaw, 5.0, -3.0, 550.0, (15.0, -10.0))
        track = project_track(face_model, correspondence, intr, identity, expression, pose)
        fitter = FaceFitter(face_model, correspondence, intr, EXACT)
        fit = fitter.fit(track)
        assert fit.residual_px < 0.05
        np.testing.assert_allclose(fit.expression, expression, atol=0.02)
        # Depth rests on the iris chords (a weak-perspective model of the ring): within 0.6 %.
        np.testing.assert_allclose(fit.pose.translation_mm, pose.translation_mm, atol=4.0)
        r_err = np.degrees(np.arccos(np.clip((np.trace(fit.pose.rotation @ pose.rotation.T) - 1) / 2, -1, 1)))
        assert r_err < 0.2
        n = face_model.face_area_vertices
        shape = face_model.shape(fit.identity, fit.expression)
        err = np.linalg.norm(shape[:n] - face_model.shape(identity, expression)[:n], axis=1)
        assert float(np.median(err)) < 1.0
        np.testing.assert_allclose(fit.vertices_mm, shape @ fit.pose.rotation.T + fit.pose.translation_mm,
                                   atol=1e-2)
        # The 68 landmarks are the model's landmark vertices, projected with the same camera.
        np.testing.assert_allclose(fit.landmarks68_mm, fit.vertices_mm[face_model.landmarks68], atol=1e-3)
        np.testing.assert_allclose(fit.landmarks68_px, intr.project(fit.landmarks68_mm), atol=1e-3)


def test_expressions_stay_in_bounds_and_one_sided_is_not_symmetrised(face_model, correspondence):
    intr = Intrinsics.from_fov(640, 480, 55.0)
    names = face_model.expression_names
    opts = FitOptions(lock_identity=False, landmark_prior=False)
    for active, mirror in (("eyeBlink_L", "eyeBlink_R"), ("mouthSmile_R", "mouthSmile_L")):
        expression = np.zeros(face_model.n_expressions)
        expression[names.index(active)] = 1.0
        track = project_track(face_model, correspondence, intr, np.zeros(face_model.n_identity), expression,
                              pose_from_euler(10.0, 0.0, 0.0, 500.0))
        fit = FaceFitter(face_model, correspondence, intr, opts).fit(track)
        assert fit.expression.min() >= 0.0 and fit.expression.max() <= 1.0
        assert fit.expression[names.index(active)] - fit.expression[names.index(mirror)] > 0.5


def test_identity_locks_on_good_frames_then_resets(face_model, correspondence):
    rng = np.random.default_rng(2)
    intr = Intrinsics.from_fov(1280, 720, 60.0)
    n_id = face_model.n_identity
    person_a = rng.normal(0.0, 1.0, n_id)
    person_b = rng.normal(0.0, 1.0, n_id)
    opts = FitOptions(lock_frames=5, reid_frames=3, landmark_prior=False)
    fitter = FaceFitter(face_model, correspondence, intr, opts)
    neutral = np.zeros(face_model.n_expressions)
    events: list[str] = []
    for i in range(5):
        track = project_track(face_model, correspondence, intr, person_a, neutral,
                              pose_from_euler(-8.0 + 4 * i, 2.0, 0.0, 600.0), noise_px=0.5, rng=rng)
        fitter.fit(track)
        events += fitter.events
        assert fitter.identity_locked == (i == 4)
    assert events == ["identity-locked"]
    locked = fitter.identity

    def shape_rms(a, b):
        n = face_model.face_area_vertices
        d = face_model.shape(a)[:n] - face_model.shape(b)[:n]
        return float(np.sqrt((d**2).sum(axis=1).mean()))

    assert shape_rms(locked, person_a) < 0.6 * shape_rms(np.zeros(n_id), person_a)
    # Locked: expressive, turned frames do not change the identity.
    smile = neutral.copy()
    smile[face_model.expression_index("mouthSmile_L")] = 0.9
    fit = fitter.fit(project_track(face_model, correspondence, intr, person_a, smile,
                                   pose_from_euler(35.0, 0.0, 0.0, 600.0)))
    np.testing.assert_array_equal(fit.identity, locked.astype(np.float32))
    assert fit.identity_locked
    # The same person re-found under a new track id keeps the lock.
    for _ in range(4):
        fitter.fit(project_track(face_model, correspondence, intr, person_a, neutral,
                                 pose_from_euler(0.0, 0.0, 0.0, 600.0), track_id=2))
        assert "new-face" not in fitter.events
    np.testing.assert_array_equal(fitter.identity, locked)
    # A different person under a new track id: detected, identity re-estimated.
    seen: list[str] = []
    for _ in range(4):
        fitter.fit(project_track(face_model, correspondence, intr, person_b, neutral,
                                 pose_from_euler(0.0, 0.0, 0.0, 600.0), track_id=3))
        seen += fitter.events
    assert "new-face" in seen
    assert shape_rms(fitter.identity, person_b) < shape_rms(fitter.identity, person_a)
    # Explicit reset.
    fitter.reset_identity()
    assert not fitter.identity_locked


def test_fit_stage_handles_reset_event_and_intrinsics(face_model, correspondence, tmp_path):
    intr = Intrinsics.from_fov(640, 480, 50.0)
    calib = tmp_path / "cam.json"
    calib.write_text('{"fx": 1000, "fy": 1000, "cx": 640, "cy": 360, "width": 1280, "height": 720}')
    resolver = IntrinsicsResolver(calibration=calib)
    scaled = resolver.for_size(640, 360)
    assert scaled.fx == pytest.approx(500.0) and scaled.cx == pytest.approx(320.0)
    stage = FitStage(face_model, correspondence, IntrinsicsResolver(fov_deg=50.0),
                     FitOptions(lock_frames=2, landmark_prior=False))
    track = project_track(face_model, correspondence, intr, np.zeros(face_model.n_identity),
                          np.zeros(face_model.n_expressions), pose_from_euler(0.0, 0.0, 0.0, 500.0))
    image = np.zeros((480, 640, 3), np.uint8)
    results = []
    for i in range(3):
        r = FrameResult(frame=Frame(image, i, i / 30.0, 0.0), faces=[FaceResult(track=track)])
        stage.process(r)
        results.append(r)
    assert all(r.faces[0].fit is not None for r in results)
    assert "identity-locked" in results[1].events
    assert results[2].faces[0].fit.identity_locked
    assert "fit" in results[2].timings_ms
    r = FrameResult(frame=Frame(image, 3, 0.1, 0.0), faces=[FaceResult(track=track)],
                    events=["reset-identity"])
    stage.process(r)
    assert not r.faces[0].fit.identity_locked
