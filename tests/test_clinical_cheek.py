"""Cheek puff re-measured from the image's shading (``realtime.clinical.cheek``): real renders, a real video."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.clinical.cheek import CheekEvidenceOptions, CheekPuffEstimator, FrameParams, calibrate_bias


def test_bias_calibration_learns_the_pose_slope_only_from_a_range_of_poses():
    rng = np.random.default_rng(3)
    yaw = rng.uniform(-10, 10, 24)
    pitch = rng.uniform(-4, 4, 24)
    true = np.stack([-0.15 + 0.01 * yaw, -0.10 + 0.025 * yaw - 0.01 * pitch], axis=1)
    cal = calibrate_bias(true + rng.normal(0, 0.03, true.shape), yaw, pitch)
    assert np.allclose(cal.bias(np.array([8.0]), np.array([0.0]))[0],
                       [-0.15 + 0.08, -0.10 + 0.2], atol=0.05)
    assert cal.residual_sd.max() < 0.05
    # Neutral frames all at one pose: a constant bias, no extrapolation to other poses.
    narrow = rng.normal(5.0, 0.4, 15)
    raw = np.stack([0.2 + 0.03 * (narrow - 5.0), 0.1 - 0.03 * (narrow - 5.0)], axis=1)
    cal = calibrate_bias(raw + rng.normal(0, 0.05, raw.shape), narrow, np.zeros(15))
    shift = cal.bias(np.array([0.0]), np.array([0.0]))[0] - cal.bias(np.array([5.0]), np.array([0.0]))[0]
    assert np.all(np.abs(shift) < 0.05), shift


def _track_and_fit(model, corr, intr, images):
    from realtime.fitting import FaceFitter, FitOptions
    from realtime.landmarks import FaceMeshTracker

    fits = []
    with FaceMeshTracker(max_faces=1, static=True, measure_iris=True) as tracker:
        fitter = FaceFitter(model, corr, intr, FitOptions())
        for img in images:
            tracks = tracker.track(img)
            assert tracks, "MediaPipe found no face"
            fits.append(fitter.fit(tracks[0]))
    return fits


def _deltas(model, corr, intr, images, neutral: int, options=None, fits=None, identity=None):
    """Calibrated (left, right) cheek-puff readings of images[neutral:], calibrated on images[:neutral]."""
    fits = fits if fits is not None else _track_and_fit(model, corr, intr, images)
    if identity is None:
        # the person's identity as a session has it: from the neutral frames (median, like session_identity)
        identity = np.median([f.identity for f in fits[:neutral]], axis=0)
    est = CheekPuffEstimator(model, identity, intr, corr, options)
    raw = np.array([est.estimate(FrameParams(img, f.expression, f.pose.rotation, f.pose.translation_mm))
                    for img, f in zip(images, fits, strict=True)])
    ang = np.array([f.pose.euler_deg()[:2] for f in fits])
    cal = calibrate_bias(raw[:neutral], ang[:neutral, 0], ang[:neutral, 1])
    live = np.array([f.expression[est.index] for f in fits])
    return raw[neutral:] - cal.bias(ang[neutral:, 0], ang[neutral:, 1]), live[neutral:], cal


PUFF_TRUTH = (1.0, 0.3)


@pytest.fixture(scope="module")
def puff_renders(face_model):
    """The synthetic palsy patient's cheek puff (left 1.0, right 0.3), which the live fit barely sees: six
    neutral renders over ±8° of yaw, then four puffed ones; tracked and fitted like a session's frames."""
    from realtime.correspondence import load_correspondence
    from realtime.synthetic import SyntheticGenerator

    model, corr = face_model, load_correspondence(face_model)
    names = model.expression_names
    rng = np.random.default_rng(11)
    identity = rng.normal(0.0, 0.7, model.n_identity).astype(np.float32)
    puff = np.zeros(model.n_expressions, np.float32)
    puff[names.index("cheekPuff_L")], puff[names.index("cheekPuff_R")] = PUFF_TRUTH
    yaws_neutral, yaws_puff = (-8.0, -4.0, 0.0, 4.0, 8.0, -2.0), (-5.0, -1.0, 3.0, 6.0)
    images = []
    with SyntheticGenerator(model, 512, 512, seed=5) as gen:
        fixed = dict(identity=identity, horizontal_fov_deg=50.0, clean=True, seed=21)
        intr = Intrinsics.from_fov(512, 512, 50.0)
        for k, yaw in enumerate(yaws_neutral + yaws_puff):
            expr = puff if k >= len(yaws_neutral) else np.zeros_like(puff)
            s = gen.sample(**fixed, expression=expr, yaw_deg=yaw, pitch_deg=2.0, roll_deg=0.0,
                           distance_mm=600.0)
            images.append(s.image)
    fits = _track_and_fit(model, corr, intr, images)
    return corr, intr, images, fits, identity, len(yaws_neutral)


@pytest.mark.slow
def test_one_sided_cheek_puff_is_read_from_the_shading_of_renders(face_model, puff_renders):
    corr, intr, images, fits, _, n_neutral = puff_renders
    delta, live, _ = _deltas(face_model, corr, intr, images, n_neutral, fits=fits)
    # A single frame's weak-side reading is noisy (±0.3 around 0.3 on such renders); the report averages
    # a repetition's frames. Here: the mean over four head poses.
    left, right = delta.mean(axis=0)
    assert left >= 0.6, delta
    assert right <= 0.55, delta
    assert left - right >= 0.35, delta
    # What the report would have without the shading: the live fit sees much less on the healthy side.
    assert live[:, 0].mean() < left - 0.2, (live, delta)


@pytest.mark.slow
def test_refined_neutral_face_explains_the_neutral_frames_and_brings_the_readings_to_the_truth(
        face_model, puff_renders):
    """The report refines the person's neutral face on neutral frames before it measures the cheeks: the
    colour residual falls, the face gets closer to the true one, and the readings get closer to the truth."""
    from realtime.clinical.cheek import refine_neutral_face

    corr, intr, images, fits, true_identity, n = puff_renders
    lock = np.median([f.identity for f in fits[:n]], axis=0)
    frames = [FrameParams(img, f.expression, f.pose.rotation, f.pose.translation_mm)
              for img, f in zip(images[:n], fits[:n], strict=True)]
    refined, (rms_lock, rms_refined) = refine_neutral_face(face_model, corr, lock, intr, frames)
    assert rms_refined < 0.7 * rms_lock, (rms_lock, rms_refined)

    fa = face_model.face_area_vertices

    def shape_error(identity: np.ndarray) -> float:
        d = face_model.shape(identity)[:fa] - face_model.shape(true_identity)[:fa]
        return float(np.linalg.norm(d - d.mean(axis=0), axis=1).mean())

    assert shape_error(refined) < shape_error(lock)
    truth = np.array(PUFF_TRUTH)
    with_lock = _deltas(face_model, corr, intr, images, n, fits=fits, identity=lock)[0].mean(axis=0)
    with_refined = _deltas(face_model, corr, intr, images, n, fits=fits, identity=refined)[0].mean(axis=0)
    assert np.abs(with_refined - truth).sum() < np.abs(with_lock - truth).sum(), (with_lock, with_refined)
    assert np.abs(with_refined - truth).max() < 0.15, with_refined


@pytest.mark.slow
def test_cheek_readings_swap_sides_in_a_mirrored_real_video(face_model, videos_dir):
    """Real frames (expressions_cheekpuff_pucker_eyeroll.mp4) and the same frames mirrored left-right: the
    calibrated left/right readings must swap. A side mix-up anywhere (image, fit, blendshape order) fails."""
    import av

    from realtime.correspondence import load_correspondence

    neutral, test = [0, 6, 12, 18, 24, 28], [320, 340, 780, 905]
    wanted = set(neutral + test)
    frames: dict[int, np.ndarray] = {}
    with av.open(str(videos_dir / "expressions_cheekpuff_pucker_eyeroll.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                frames[i] = f.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    images = [frames[i] for i in neutral + test]
    mirrored = [np.ascontiguousarray(img[:, ::-1]) for img in images]
    corr = load_correspondence(face_model)
    intr = Intrinsics.from_fov(480, 480, 60.0)
    opts = CheekEvidenceOptions()
    d, _, cal = _deltas(face_model, corr, intr, images, len(neutral), opts)
    dm, _, cal_m = _deltas(face_model, corr, intr, mirrored, len(neutral), opts)
    assert cal.residual_sd.max() < 0.2 and cal_m.residual_sd.max() < 0.2
    assert np.abs(d - dm[:, ::-1]).max() < 0.3, (d, dm)
    # the asymmetry itself swaps: (left − right) in the original = (right − left) in the mirror image
    a, b = d[:, 0] - d[:, 1], dm[:, 1] - dm[:, 0]
    assert np.ptp(a) > 0.3 and np.corrcoef(a, b)[0, 1] > 0.8, (a, b)
