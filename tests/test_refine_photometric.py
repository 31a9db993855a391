"""Analysis-by-synthesis identity refinement (realtime/refine/photometric.py) on real renders and MediaPipe."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.refine.photometric import PhotometricFitter, PhotoView, _rodrigues


def _aligned_error(model, identity: np.ndarray, truth_identity: np.ndarray) -> float:
    """Mean face-area vertex error (mm) after rigid alignment (the two-view benchmark's measure)."""
    fa = model.face_area_vertices
    v = model.shape(np.asarray(identity, np.float32))[:fa].astype(np.float64)
    t = model.shape(np.asarray(truth_identity, np.float32))[:fa].astype(np.float64)
    vc, tc = v - v.mean(0), t - t.mean(0)
    u, _, wt = np.linalg.svd(vc.T @ tc)
    r = (u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ wt))]) @ wt).T
    return float(np.linalg.norm(vc @ r.T - tc, axis=1).mean())


@pytest.fixture(scope="module")
def pair(face_model):
    """A front and a side render of one random identity, their MediaPipe tracks and single-view fits."""
    from realtime.correspondence import load_correspondence
    from realtime.landmarks import FaceMeshTracker
    from realtime.refine.twoview import JointFitter, ViewInput
    from realtime.synthetic import SyntheticGenerator

    m = face_model
    corr = load_correspondence(m)
    rng = np.random.default_rng(5)
    ident = rng.normal(0.0, 1.0, m.n_identity).astype(np.float32)
    samples, views = [], []
    with SyntheticGenerator(m, 512, 512, seed=5) as gen, FaceMeshTracker(static=True) as tracker:
        for yaw in (2.0, -48.0):
            smp = gen.sample(identity=ident, expression=np.zeros(m.n_expressions), yaw_deg=yaw,
                             pitch_deg=0.0, roll_deg=0.0, seed=9)
            tracks = tracker.track(smp.image)
            assert tracks
            samples.append(smp)
            views.append(ViewInput(tracks[0], smp.intrinsics))
    jf = JointFitter(m, corr).fit(views, iterations=0)
    # each view fitted with the most frontal view's identity locked: what the refine job hands over
    photo_views = [PhotoView(s.image, v.intrinsics, f, v.track) for s, v, f in zip(samples, views, jf.fits,
                                                                                    strict=True)]
    single_errors = [_aligned_error(m, f.identity, ident) for f in jf.single_fits]
    return corr, ident, photo_views, single_errors


def test_jacobian_matches_finite_differences(face_model, pair) -> None:
    """The analytic colour and landmark Jacobians (identity modes and pose) against finite differences on a
    real render. Bilinear sampling is only piecewise smooth, so the colour columns agree to ~10 %."""
    corr, _, views, _ = pair
    pf = PhotometricFitter(face_model, corr)
    vs = pf._prepare(views[1])
    pf._set_level(vs, 2.0)
    a = np.asarray(views[1].fit.identity, np.float64)
    photo = pf._photo_terms(vs, a, True, True)
    lm = pf._landmark_terms(vs, a, True)
    assert photo.j is not None and lm.j is not None
    for col in (0, 7, 60):
        eps = 1e-4
        a2 = a.copy()
        a2[col] += eps
        fd = (pf._photo_terms(vs, a2, False, False).r - photo.r) / eps
        assert np.linalg.norm(fd - photo.j[:, col]) < 0.25 * np.linalg.norm(fd), col
        fd_lm = (pf._landmark_terms(vs, a2, False).r - lm.r) / eps
        assert np.linalg.norm(fd_lm - lm.j[:, col]) < 0.02 * np.linalg.norm(fd_lm), col
    r0, t0 = vs.rotation.copy(), vs.translation.copy()
    n_id = face_model.n_identity
    for c in range(6):
        d = np.zeros(6)
        d[c] = 1e-5 if c < 3 else 1e-3
        vs.rotation, vs.translation = _rodrigues(d[:3]) @ r0, t0 + d[3:]
        fd = (pf._photo_terms(vs, a, False, False).r - photo.r) / d[c]
        vs.rotation, vs.translation = r0, t0
        assert np.linalg.norm(fd - photo.j[:, n_id + c]) < 0.25 * np.linalg.norm(fd), c


@pytest.mark.slow
def test_two_view_photometric_fit_beats_the_landmark_fits(face_model, pair) -> None:
    corr, ident, views, singles = pair
    res = PhotometricFitter(face_model, corr).fit_views(views)
    assert len(res.fits) == 2
    assert np.allclose(res.fits[0].identity, res.fits[1].identity)
    # the colour residual of the visible skin drops (grey levels)
    assert res.photometric_rms[1] < 0.7 * res.photometric_rms[0]
    joint = _aligned_error(face_model, res.identity, ident)
    print("single-view landmark fits", singles, "two-view photometric", joint, res.photometric_rms)
    assert joint < 0.9 * min(singles)
    # pose corrections stay small (the landmark fit's pose is a few degrees off at most)
    for v, f in zip(views, res.fits, strict=True):
        dr = np.degrees(np.linalg.norm(_rotvec_of(np.asarray(f.pose.rotation) @ np.asarray(v.fit.pose.rotation).T)))
        assert dr < 6.0


def _rotvec_of(r: np.ndarray) -> np.ndarray:
    import cv2

    w, _ = cv2.Rodrigues(np.asarray(r, np.float64))
    return np.asarray(w).ravel()


@pytest.mark.slow
def test_refine_job_runs_the_two_view_photometric_fit(face_model, pair, tmp_path) -> None:
    """The job (as `realtime-face refine FRONT --side SIDE`): tracks both renders, fits them, refines the
    identity against both images, then runs the medium/fine stages on the front view and exports."""
    import json

    from realtime.refine.job import RefineEngine, RefineRequest

    corr, ident, views, singles = pair
    with RefineEngine(face_model, corr) as eng:
        out, _ = eng.run(RefineRequest(image=views[0].image, intrinsics=views[0].intrinsics,
                                       side_image=views[1].image, side_intrinsics=views[1].intrinsics,
                                       out_dir=str(tmp_path)))
    assert out.views == 2
    assert out.photometric_fit_rms is not None
    assert out.photometric_fit_rms[1] < 0.7 * out.photometric_fit_rms[0]
    assert out.timings_ms["photometric_fit"] > 0
    assert np.isfinite(out.detailed_vertices_mm).all()
    meta = json.loads((tmp_path / "face.json").read_text())
    assert meta["parameters"]["views"] == 2
    fitted = np.asarray(meta["parameters"]["identity"])
    assert _aligned_error(face_model, fitted, ident) < min(singles)
