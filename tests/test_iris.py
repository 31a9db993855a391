"""Image iris measurement (realtime.iris): drawn irises of known size, real renders through real MediaPipe,
the real talking-head video, and its use by the fitter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realtime.iris import measure_iris_diameters, rescale_iris_rings


def drawn_eyes(diameters_px: tuple[float, float], ring_error: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """A skin-toned image with two white eyes holding dark irises of known diameters, and MediaPipe-like
    landmarks whose iris rings are off by ``ring_error`` (the iris centre exact)."""
    k = 8   # drawn 8x larger with hard edges, then area-averaged: exact sub-pixel coverage
    big = np.full((200 * k, 300 * k, 3), (180, 140, 120), np.uint8)
    lm = np.zeros((478, 3), np.float32)
    for e, (cx, cy) in enumerate(((100.3, 100.6), (200.7, 99.4))):
        # Pixel centres sit at integer coordinates: in the large image, x_big + 0.5 = k (x + 0.5).
        c_big = (round(k * (cx + 0.5) - 0.5), round(k * (cy + 0.5) - 0.5))
        cv2.ellipse(big, c_big, (30 * k, 12 * k), 0, 0, 360, (235, 235, 230), -1)
        r = diameters_px[e] / 2
        cv2.circle(big, c_big, round(r * k), (70, 50, 40), -1)
        ring_r = r * (1.0 + ring_error * (1 if e == 0 else -1))
        base = 468 + 5 * e
        lm[base] = (cx, cy, 0)
        # Ring order as MediaPipe's: right, top, left, bottom (image axes).
        for j, (dx, dy) in enumerate(((1, 0), (0, -1), (-1, 0), (0, 1))):
            lm[base + 1 + j] = (cx + dx * ring_r, cy + dy * ring_r, 0)
    img = cv2.resize(big, (300, 200), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(img, (0, 0), 0.7), lm


def test_drawn_irises_measured_within_three_percent():
    for d in ((14.0, 17.5), (9.0, 22.0)):
        img, lm = drawn_eyes(d)
        got = measure_iris_diameters(img, lm)
        np.testing.assert_allclose(got, d, rtol=0.03)


def test_unmeasurable_eyes_are_nan():
    img, lm = drawn_eyes((14.0, 14.0))
    flat = np.full_like(img, 128)                      # no limbus at all
    assert np.isnan(measure_iris_diameters(flat, lm)).all()
    tiny = lm.copy()
    tiny[469:478, :2] = tiny[[468] * 5 + [473] * 4, :2]  # collapsed ring (no iris seen)
    assert np.isnan(measure_iris_diameters(img, tiny)).all()
    assert np.isnan(measure_iris_diameters(img, lm[:468])).all()   # no iris refinement


def test_rescale_rings_sets_the_horizontal_chord():
    _, lm = drawn_eyes((14.0, 17.5))
    out = rescale_iris_rings(lm, np.array([20.0, np.nan]), 1.0)
    assert np.linalg.norm(out[469, :2] - out[471, :2]) == pytest.approx(20.0)
    np.testing.assert_allclose(out[468], lm[468])                   # centre kept
    np.testing.assert_allclose(out[473:478], lm[473:478])           # unmeasured eye untouched
    assert lm[469, 0] != out[469, 0]                                 # a copy, input unchanged


@pytest.mark.slow
def test_renders_measured_closer_than_mediapipe_ring(face_model):
    """Real renders, real MediaPipe: the image measurement scatters less around the true diameter than
    MediaPipe's own horizontal ring chord, and the fitter's iris depth term reads the better value."""
    from realtime.facemodel import eye_rig
    from realtime.fitting import iris_chords_px
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator, gaze_rotation

    rig = eye_rig(face_model)
    edge_err, ring_err = [], []
    with SyntheticGenerator(face_model, 512, 512, seed=8) as gen, FaceMeshTracker(static=True) as tracker:
        for _ in range(16):
            s = gen.sample(yaw_deg=25.0)
            tracks = tracker.track(s.image)
            assert tracks
            edge = tracks[0].iris_diameter_px
            assert edge is not None and edge.shape == (2,)
            chords = iris_chords_px(tracks[0].landmarks_px)
            centres = rig.centres(face_model.shape(s.identity).astype(np.float64))
            for e in range(2):
                g = gaze_rotation(*s.gaze_deg[e])
                q = centres[e] + g @ np.array([0.0, 0.0, rig.iris_depth_mm])
                half = g @ np.array([rig.iris_radius_mm, 0.0, 0.0])
                ends = s.intrinsics.project((np.stack([q + half, q - half]) @ s.pose.rotation.T)
                                           + s.pose.translation_mm)
                true_px = float(np.linalg.norm(ends[0] - ends[1]))
                ring_err.append(abs(chords[e, 0] * 11.7 / 11.4 / true_px - 1.0))
                if np.isfinite(edge[e]):
                    edge_err.append(abs(edge[e] / true_px - 1.0))
    assert len(edge_err) >= 0.6 * len(ring_err)
    assert np.median(edge_err) < 0.06
    assert np.median(edge_err) < 0.7 * np.median(ring_err)


@pytest.mark.slow
def test_real_video_iris_diameters_are_stable(talking_tracks):
    """talking_720p.mp4: the limbus is measured in most frames for at least one eye, varies little
    from frame to frame (the person's distance barely changes), and agrees with MediaPipe's ring on average."""
    from realtime.fitting import iris_chords_px

    edges = [t.iris_diameter_px for t in talking_tracks]
    rings = [iris_chords_px(t.landmarks_px)[:, 0] for t in talking_tracks]
    e = np.array(edges)
    r = np.array(rings)
    assert np.isfinite(e).mean() >= 0.5          # measured 57 % of the eye-frames (one eye far more often)
    assert np.isfinite(e).any(axis=1).mean() >= 0.75   # 83 % of the frames
    for eye in range(2):
        v = e[np.isfinite(e[:, eye]), eye]
        if v.size < 8:
            continue
        med = float(np.median(v))
        assert 1.4826 * np.median(np.abs(v - med)) / med < 0.06
        assert med / float(np.median(r[:, eye])) == pytest.approx(1.0, abs=0.2)
