"""Eye-closure events from MediaPipe lid landmarks (realtime/clinical/eyes.py)."""

from __future__ import annotations

import numpy as np

from realtime.clinical.eyes import closure_from_aperture, detect_eye_closures, eye_aperture


def test_closure_is_per_eye_and_scale_free():
    """Each eye is normalised by its own open baseline: a smaller eye is not 'more closed'."""
    n = 120
    t = np.arange(n) / 30.0
    ap = np.tile([0.40, 0.25], (n, 1))  # the right eye is naturally narrower
    ap[50:54, 0] = 0.04  # left wink
    ap[80:83] *= 0.1     # blink
    c = closure_from_aperture(ap, np.ones(n, bool), t)
    assert np.allclose(c[:40], 0.0)
    assert c[51, 0] > 0.85 and c[51, 1] < 0.05
    ev = detect_eye_closures(np.arange(n), c, np.ones(n, bool))
    assert [(e.start_frame, e.end_frame, e.side) for e in ev] == [(50, 53, "left"), (80, 82, "both")]


def test_hysteresis_keeps_one_event():
    """A closure that dips below 'on' but stays above 'off' is one event, not several."""
    n = 40
    c = np.zeros((n, 2))
    c[10:20] = [[0.9, 0.85], [0.45, 0.45], [0.9, 0.9], [0.42, 0.41], [0.8, 0.8], [0.6, 0.6], [0.9, 0.9],
                [0.5, 0.5], [0.45, 0.4], [0.7, 0.7]]
    c[30, 1] = 0.45  # never reaches 'on': no event
    ev = detect_eye_closures(np.arange(n), c, np.ones(n, bool))
    assert [(e.start_frame, e.end_frame, e.side) for e in ev] == [(10, 19, "both")]


def test_one_sided_closure_on_video_frames(videos_dir):
    """Real MediaPipe on frames 340-420 of wink_blink_gaze.mp4: the bilateral blinks at 347 and 371 and
    the subject's LEFT eye closing alone at 388 (image right; labelled by looking at the frames)."""
    import av

    from realtime.landmarks import FaceMeshTracker

    marks = []
    with av.open(str(videos_dir / "wink_blink_gaze.mp4")) as box, FaceMeshTracker() as tracker:
        for i, frame in enumerate(box.decode(video=0)):
            if i < 340:
                continue
            if i >= 420:
                break
            faces = tracker.track(frame.to_ndarray(format="rgb24"))
            marks.append(faces[0].landmarks_px if faces else np.full((478, 3), np.nan, np.float32))
    lm = np.asarray(marks)
    ap = eye_aperture(lm)
    ok = np.all(np.isfinite(ap), axis=1)
    assert ok.all()
    c = closure_from_aperture(ap, ok, np.arange(len(lm)) / 30.0)
    ev = detect_eye_closures(np.arange(340, 420), c, ok)
    sides = {e.side for e in ev}
    assert sides == {"both", "left"}, ev
    assert [(e.start_frame, e.end_frame) for e in ev if e.side == "left"] == [(388, 388)]
    assert any(e.start_frame <= 347 <= e.end_frame and e.side == "both" for e in ev)
    assert any(e.start_frame <= 371 <= e.end_frame and e.side == "both" for e in ev)
