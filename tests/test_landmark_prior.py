"""The learned landmark prior: shipped weights, pose-free features, one-sided reading on real renders through
real MediaPipe, and its use inside the fitter."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.correspondence import topology_hash
from realtime.fitting import FaceFitter, FitOptions
from realtime.landmark_prior import LandmarkPrior, default_path, features, load_landmark_prior
from realtime.synthetic import rotation_from_euler


@pytest.fixture(scope="module")
def prior(face_model) -> LandmarkPrior:
    p = load_landmark_prior(face_model.name, topology_hash(face_model.triangles))
    assert p is not None, f"no shipped landmark prior at {default_path(face_model.name)}"
    return p


@pytest.fixture(scope="module")
def renders(face_model):
    """Real MediaPipe landmarks of renders: neutral, one-sided blinks and smiles, two head poses."""
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    cases = [{}, {"eyeBlink_L": 1.0}, {"eyeBlink_R": 1.0}, {"mouthSmile_L": 0.9}, {"mouthSmile_R": 0.9}]
    rng = np.random.default_rng(3)
    out = []
    with SyntheticGenerator(face_model, 512, 512, seed=17) as gen, FaceMeshTracker(static=True) as tracker:
        for k, expression in enumerate(cases * 2):
            s = gen.sample(identity=rng.normal(0.0, 1.0, face_model.n_identity).astype(np.float32),
                           expression=expression, yaw_deg=-20.0 if k < len(cases) else 20.0, pitch_deg=0.0,
                           roll_deg=0.0, seed=500 + k)
            tracks = tracker.track(s.image)
            assert tracks, f"MediaPipe lost render {k}"
            out.append((expression, s, tracks[0]))
    return out


def test_features_ignore_pose_and_scale(prior):
    """Rotating, scaling and moving a landmark set leaves its features unchanged except the pose entries."""
    rng = np.random.default_rng(0)
    pts = prior.template[None] + rng.normal(0.0, 0.01, (1, 468, 3))
    lm = np.concatenate([pts, pts[:, :10]], axis=1)                     # iris slots: any points
    r = rotation_from_euler(25.0, -10.0, 5.0)
    moved = 3.7 * lm @ r.T + np.array([100.0, -40.0, 7.0])
    a, b = features(lm, prior.template), features(moved, prior.template)
    shape_part = slice(0, 468 * 3 + 30)
    np.testing.assert_allclose(a[:, shape_part], b[:, shape_part], atol=2e-3 * float(np.abs(a).max()))


def test_save_load_round_trip(prior, tmp_path, renders):
    path = tmp_path / "prior.npz"
    prior.save(path)
    again = LandmarkPrior.load(path)
    lm = np.stack([t.landmarks_px for _, _, t in renders])
    e1, i1 = prior.predict(lm)
    e2, i2 = again.predict(lm)
    np.testing.assert_allclose(e1, e2, atol=1e-6)
    np.testing.assert_allclose(i1, i2, atol=1e-5)


def test_bad_file_is_a_clear_error(tmp_path):
    from realtime.errors import MissingResourceError

    bad = tmp_path / "prior.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(MissingResourceError):
        LandmarkPrior.load(bad)


def test_one_sided_renders_read_on_their_side(face_model, prior, renders):
    names = face_model.expression_names
    for expression, _, track in renders:
        e, _ = prior.predict(track.landmarks_px)
        assert e.shape == (1, face_model.n_expressions) and e.min() >= 0.0 and e.max() <= 1.0
        for active, weight in expression.items():
            mirror = active[:-1] + ("R" if active.endswith("L") else "L")
            margin = float(e[0, names.index(active)] - e[0, names.index(mirror)])
            assert margin >= 0.3, (active, weight, margin)


def test_fit_with_prior_reads_one_sided_and_stays_on_the_landmarks(face_model, renders):
    """Inside the fitter (the default): active side read, mirror not; the mesh still sits on MediaPipe's
    points (reprojection residual comparable to the prior-free fit)."""
    from realtime.correspondence import load_correspondence

    corr = load_correspondence(face_model)
    names = face_model.expression_names
    margins = []
    for expression, s, track in renders:
        with_prior = FaceFitter(face_model, corr, s.intrinsics, FitOptions.single_image()).fit(track)
        without = FaceFitter(face_model, corr, s.intrinsics,
                             FitOptions.single_image(landmark_prior=False)).fit(track)
        assert with_prior.residual_px <= 2.0 * without.residual_px + 1.0
        for active in expression:
            mirror = active[:-1] + ("R" if active.endswith("L") else "L")
            margins.append(float(with_prior.expression[names.index(active)]
                                 - with_prior.expression[names.index(mirror)]))
    m = np.array(margins)
    assert np.all(m > 0.05), m               # always the moving side
    assert np.mean(m >= 0.3) >= 0.75, m      # and mostly by the margin (eyes: landmarks decide)


def test_prior_on_real_video_frames(face_model, prior, talking_tracks):
    """Real faces: finite, bounded readings that change smoothly from frame to frame."""
    lms = [t.landmarks_px for t in talking_tracks[:30]]
    e, ident = prior.predict(np.stack(lms))
    assert np.isfinite(e).all() and np.isfinite(ident).all()
    assert e.min() >= 0.0 and e.max() <= 1.0
    # A talking person: consecutive frames differ far less than the weights' range.
    assert float(np.median(np.abs(np.diff(e, axis=0)))) < 0.05
    # One person: the per-frame identity readings agree (coefficient spread well below the prior's 1.0).
    assert float(ident.std(axis=0).mean()) < 0.5


@pytest.mark.slow
def test_training_tool_end_to_end(tmp_path):
    """tools/train_landmark_prior.py on a tiny set: renders through MediaPipe, trains, writes a loadable prior."""
    import sys

    sys.path.insert(0, "tools")
    try:
        import train_landmark_prior
    finally:
        sys.path.remove("tools")
    out = tmp_path / "prior.npz"
    assert train_landmark_prior.main(["--data", str(tmp_path / "data"), "--count", "250", "--epochs", "1",
                                      "--holdout", "50", "--out", str(out)]) == 0
    trained = LandmarkPrior.load(out)
    data = train_landmark_prior.load_chunks(tmp_path / "data")
    assert len(data["lm"]) >= 240                                # MediaPipe found (almost) every render
    perm = train_landmark_prior.mirror_permutation(data)
    assert np.array_equal(perm[perm], np.arange(478))            # a mirror map is its own inverse
    assert set(perm[468:473]) == set(range(473, 478))            # irises swap eyes
    e, ident = trained.predict(data["lm"][:2])
    assert e.shape == (2, 53) and ident.shape == (2, 100)
