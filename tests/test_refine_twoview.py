"""Two-view joint fit on synthetic front + side renders, and the landmark bias table."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.refine.landmark_bias import load_landmark_bias


def test_landmark_bias_table_grows_with_yaw(face_model) -> None:
    table = load_landmark_bias(face_model)
    assert table is not None, "realtime/data/mediapipe_yaw_bias_<model>.npz is missing"
    off0, sig0 = table.at(0.0)
    off50, sig50 = table.at(50.0)
    assert off0.shape == (468, 2) and sig0.shape == (468,)
    assert np.median(np.linalg.norm(off50, axis=1)) > 2 * np.median(np.linalg.norm(off0, axis=1))
    assert np.median(sig50) > np.median(sig0)
    assert table.samples.min() > 0


@pytest.mark.slow
def test_joint_fit_shares_identity_and_beats_the_side_view(face_model) -> None:
    from realtime.correspondence import load_correspondence
    from realtime.landmarks import FaceMeshTracker
    from realtime.refine.twoview import JointFitter, ViewInput, is_side_view
    from realtime.synthetic import SyntheticGenerator

    m = face_model
    corr = load_correspondence(m)
    zero = np.zeros(m.n_expressions)
    rng = np.random.default_rng(5)
    ident = rng.normal(0.0, 1.0, m.n_identity).astype(np.float32)
    views = []
    with SyntheticGenerator(m, 512, 512, seed=5) as gen, FaceMeshTracker(static=True) as tracker:
        for yaw in (2.0, -48.0):
            smp = gen.sample(identity=ident, expression=zero, yaw_deg=yaw, pitch_deg=0.0, roll_deg=0.0,
                             seed=9)
            tracks = tracker.track(smp.image)
            assert tracks
            views.append(ViewInput(tracks[0], smp.intrinsics))
    jf = JointFitter(m, corr).fit(views)
    assert len(jf.fits) == 2
    assert np.allclose(jf.fits[0].identity, jf.fits[1].identity)
    assert is_side_view(jf.fits[1]) and not is_side_view(jf.fits[0])
    assert max(jf.residual_px) < 10.0

    def err(identity: np.ndarray) -> float:   # mean face-area vertex error after rigid alignment (mm)
        v = m.shape(identity)[: m.face_area_vertices].astype(np.float64)
        t = m.shape(ident)[: m.face_area_vertices].astype(np.float64)
        vc, tc = v - v.mean(0), t - t.mean(0)
        u, _, wt = np.linalg.svd(vc.T @ tc)
        r = (u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ wt))]) @ wt).T
        return float(np.linalg.norm(vc @ r.T - tc, axis=1).mean())

    singles = [err(np.asarray(f.identity)) for f in jf.single_fits]
    joint = err(jf.identity)
    print("single-view errors", singles, "joint", joint)
    # one shared identity explains both views better than the views do on average
    assert joint < 0.5 * (singles[0] + singles[1])
