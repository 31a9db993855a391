"""One-sided expressions are never symmetrised: synthetic renders and the real wink video, through real
MediaPipe and the real fitter.

Issue 3's figure is "active side exceeds mirror by ≥ 0.3 in ≥ 95 % of one-sided renders". Measured here
(single one-sided expressions, |yaw| ≤ 30°): the active side is above its mirror in every render and the 0.3
margin is reached in 88 % (82 % without the one-sided blink-difference term); the bench's harder set (random
other expressions, |yaw| ≤ 45°) reaches 69 % (tools/bench_fitting.py, docs/fitting.md). The floors below keep
it from silently regressing.
"""

from __future__ import annotations

import numpy as np
import pytest

from realtime.fitting import FaceFitter, FitOptions, FitStage, IntrinsicsResolver

PAIRS = (("eyeBlink_L", "eyeBlink_R"), ("eyeBlink_R", "eyeBlink_L"),
         ("mouthSmile_L", "mouthSmile_R"), ("mouthSmile_R", "mouthSmile_L"))


@pytest.fixture(scope="module")
def correspondence(face_model):
    from realtime.correspondence import load_correspondence

    return load_correspondence(face_model)


@pytest.mark.slow
def test_one_sided_renders_keep_their_side(face_model, correspondence):
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    names = face_model.expression_names
    rng = np.random.default_rng(5)
    margins = []
    with SyntheticGenerator(face_model, 512, 512, seed=99, yaw_deg=30.0) as gen, \
            FaceMeshTracker(static=True) as tracker:
        for i in range(40):
            active, mirror = PAIRS[i % 4]
            s = gen.sample(expression={active: float(rng.uniform(0.6, 1.0))})
            tracks = tracker.track(s.image)
            assert tracks, "MediaPipe lost a synthetic face"
            fitter = FaceFitter(face_model, correspondence, s.intrinsics, FitOptions.single_image())
            fit = fitter.fit(tracks[0])
            margins.append(float(fit.expression[names.index(active)] - fit.expression[names.index(mirror)]))
    m = np.array(margins)
    assert np.mean(m > 0.0) >= 0.95, m          # the moving side is the one fitted
    assert np.all(m > -0.3), m                   # never a flipped side
    assert np.mean(m >= 0.3) >= 0.85, m          # floor of the 0.3-margin figure (measured 0.88)


@pytest.fixture(scope="module")
def blink_renders(face_model):
    """Real MediaPipe landmarks of renders: one-sided blinks (both sides, ±20° yaw, some with another random
    expression), and symmetric eyes (open, both shut)."""
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    names = face_model.expression_names
    rng = np.random.default_rng(41)
    out = []
    with SyntheticGenerator(face_model, 512, 512, seed=43) as gen, FaceMeshTracker(static=True) as tracker:
        for k in range(16):
            w = gen.random_expression(rng) if k % 2 else np.zeros(face_model.n_expressions, np.float32)
            if k < 12:
                active = ("eyeBlink_L", "eyeBlink_R")[k % 2 if k < 6 else (k + 1) % 2]
                mirror = active[:-1] + ("R" if active.endswith("L") else "L")
                w[names.index(active)], w[names.index(mirror)] = rng.uniform(0.6, 1.0), 0.0
            else:
                w[:] = 0.0
                w[names.index("eyeBlink_L")] = w[names.index("eyeBlink_R")] = 1.0 if k >= 14 else 0.0
            s = gen.sample(expression=w, yaw_deg=float((-20.0, 0.0, 20.0)[k % 3]), pitch_deg=0.0, roll_deg=0.0)
            tracks = tracker.track(s.image)
            assert tracks, f"MediaPipe lost render {k}"
            out.append((s, tracks[0]))
    return out


def test_asymmetry_term_adds_one_sidedness_and_never_removes_it(face_model, correspondence, blink_renders):
    """The learned prior's blink difference (``FitOptions.prior_asymmetry_*``): on one-sided blinks the fit's
    active − mirror margin grows (never shrinks), and the issue's 0.3 margin is reached more often; on
    symmetric eyes (open or both shut) it changes nothing."""
    names = face_model.expression_names
    i_l, i_r = names.index("eyeBlink_L"), names.index("eyeBlink_R")
    with_term, without = [], []
    for s, track in blink_renders:
        fits = [FaceFitter(face_model, correspondence, s.intrinsics,
                           FitOptions.single_image(prior_asymmetry_strength=strength)).fit(track, mesh=False)
                for strength in (FitOptions().prior_asymmetry_strength, 0.0)]
        sign = float(np.sign(s.expression[i_l] - s.expression[i_r]))
        with_term.append(sign * float(fits[0].expression[i_l] - fits[0].expression[i_r]))
        without.append(sign * float(fits[1].expression[i_l] - fits[1].expression[i_r]))
        if sign == 0.0:   # symmetric eyes: the term is inactive
            np.testing.assert_allclose(fits[0].expression, fits[1].expression, atol=0.02)
    a, b = np.array(with_term[:12]), np.array(without[:12])
    assert np.all(a >= b - 0.02), (a, b)
    assert np.mean(a >= 0.3) > np.mean(b >= 0.3), (a, b)
    assert np.mean(a >= 0.3) >= 0.75, a


@pytest.mark.slow
def test_real_wink_video_blinks_follow_each_eye(face_model, correspondence, videos_dir):
    """wink_blink_gaze.mp4: closed eyes fit as blinks, open as not, and any left/right difference in
    MediaPipe's lid opening shows up on the same side of the fit."""
    import av

    from realtime.landmarks import FaceMeshTracker
    from realtime.results import FaceResult, Frame, FrameResult

    names = face_model.expression_names
    i_l, i_r = names.index("eyeBlink_L"), names.index("eyeBlink_R")
    stage = FitStage(face_model, correspondence, IntrinsicsResolver(), FitOptions())

    def opening(lm: np.ndarray, up: int, lo: int, a: int, b: int) -> float:
        return float(np.linalg.norm(lm[up, :2] - lm[lo, :2]) / np.linalg.norm(lm[a, :2] - lm[b, :2]))

    rows = []
    with av.open(str(videos_dir / "wink_blink_gaze.mp4")) as container, FaceMeshTracker() as tracker:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            img = frame.to_ndarray(format="rgb24")
            r = FrameResult(frame=Frame(img, i, float(frame.time or 0.0), 0.0),
                            faces=[FaceResult(track=t) for t in tracker.track(img)])
            if not r.faces:
                continue
            stage.process(r)
            lm = r.faces[0].track.landmarks_px
            fit = r.faces[0].fit
            assert fit is not None
            rows.append((opening(lm, 386, 374, 263, 362), opening(lm, 159, 145, 33, 133),
                         fit.expression[i_l], fit.expression[i_r]))
    o_l, o_r, b_l, b_r = np.array(rows).T
    closed = (o_l < 0.2) & (o_r < 0.2)
    open_ = (o_l > 0.35) & (o_r > 0.35)
    assert closed.sum() >= 20 and open_.sum() >= 100
    assert np.median(np.minimum(b_l[closed], b_r[closed])) > 0.6
    assert np.median(np.maximum(b_l[open_], b_r[open_])) < 0.2
    uneven = np.abs(o_l - o_r) > 0.08
    toward_closed = (b_l - b_r) * np.sign(o_r - o_l)   # > 0: the more closed eye has the larger blink
    assert np.all(toward_closed[uneven] > -0.05), (o_l[uneven], o_r[uneven], b_l[uneven], b_r[uneven])
    closing = uneven & (np.minimum(o_l, o_r) < 0.3)      # one eye actually closing (not two open eyes)
    assert closing.sum() >= 5
    assert np.mean(toward_closed[closing] > 0.0) >= 0.95
