"""MediaPipe tracking on the real videos and photos: coverage, geometry in pixels, presence, ids, faces."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import IMAGE_NAMES, VIDEO_NAMES

from realtime.capture import VideoSource
from realtime.landmarks import N_LANDMARKS, FaceMeshTracker, LandmarkStage, landmarks_from_proto
from realtime.pipeline import Pipeline
from realtime.results import Frame, FrameResult

# MediaPipe mesh index -> iBUG-68 index (0-based) for points both define unambiguously.
MP_TO_IBUG = {33: 36, 263: 45, 133: 39, 362: 42, 61: 48, 291: 54, 1: 30, 152: 8}


def read_pts(path: Path) -> np.ndarray:
    body = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(body, float).reshape(-1, 2) - 1.0  # .pts is 1-based


def rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


class Collect:
    """Keeps each result without its image (a whole video of frames would take hundreds of MB)."""

    def __init__(self) -> None:
        self.results: list[FrameResult] = []

    def consume(self, result: FrameResult) -> None:
        f = result.frame
        light = Frame(np.empty((f.height, f.width, 0), np.uint8), f.index, f.timestamp_s, f.capture_time_s)
        self.results.append(FrameResult(light, result.faces, dict(result.timings_ms), result.dropped_before))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_face_tracked_on_every_video(videos_dir: Path, name: str) -> None:
    path = videos_dir / name
    with av.open(str(path)) as c:
        expected = c.streams.video[0].frames
    sink = Collect()
    source = VideoSource(path)
    with Pipeline(source, [LandmarkStage()], [sink]) as pipeline:
        stats = pipeline.run()
    assert stats.source_error is None
    assert stats.frames == expected == len(sink.results) and stats.dropped == 0
    assert stats.frames_with_face >= 0.95 * expected
    ts = np.array([r.frame.timestamp_s for r in sink.results])
    assert np.all(np.diff(ts) > 0)
    tracked = [r for r in sink.results if r.faces]
    ids = {r.faces[0].track.track_id for r in tracked}
    assert len(ids) == 1  # one person, never lost: the track id survives every frame
    h, w = source.height, source.width
    for r in tracked[:: max(1, len(tracked) // 20)]:
        t = r.faces[0].track
        assert t.landmarks_px.shape == (N_LANDMARKS, 3) and t.landmarks_px.dtype == np.float32
        assert 0.5 < t.presence <= 1.0
        x0, y0, x1, y1 = t.box_px
        assert -0.1 * w < x0 < x1 < 1.1 * w and -0.1 * h < y0 < y1 < 1.1 * h
        assert x1 - x0 > 0.1 * min(w, h)  # a real face, not a degenerate box
        assert np.allclose(t.box_px, (*t.landmarks_px[:, :2].min(0), *t.landmarks_px[:, :2].max(0)))
        assert r.timings_ms["landmarks"] > 0
    assert "landmarks" in stats.stages and stats.stages["landmarks"].median_ms > 0


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_landmarks_land_on_annotated_points(images_dir: Path, name: str) -> None:
    """Pixel geometry check: MediaPipe points agree with human iBUG-68 annotations (NME < 8 %)."""
    gt = read_pts(images_dir / f"{name}.pts")
    with FaceMeshTracker(static=True) as tracker:
        faces = tracker.track(rgb(images_dir / f"{name}.jpg"))
    assert len(faces) == 1
    mp_idx, ibug_idx = zip(*MP_TO_IBUG.items(), strict=True)
    interocular = np.linalg.norm(gt[36] - gt[45])
    err = np.linalg.norm(faces[0].landmarks_px[list(mp_idx), :2] - gt[list(ibug_idx)], axis=1) / interocular
    # Trivial baseline on the same points: the annotated points' centroid for every point.
    baseline = np.linalg.norm(gt[list(ibug_idx)].mean(0) - gt[list(ibug_idx)], axis=1) / interocular
    assert err.mean() < 0.08 < baseline.mean()


def test_small_face_fallback_finds_the_speaker(images_dir: Path) -> None:
    """einstein.jpg: a small face in a large photo. FaceMesh's short-range detector misses it."""
    image = rgb(images_dir / "einstein.jpg")
    with FaceMeshTracker(static=True, small_face_fallback=False) as tracker:
        assert tracker.track(image) == []
    gt = read_pts(images_dir / "einstein.pts")
    with FaceMeshTracker(static=True) as tracker:
        faces = tracker.track(image)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box_px
    assert x0 < gt[:, 0].mean() < x1 and y0 < gt[:, 1].mean() < y1  # in full-image pixels


def test_no_face_and_two_faces(images_dir: Path) -> None:
    a = rgb(images_dir / "lfpw_image_0010.jpg")
    b = rgb(images_dir / "takeo.jpg")
    b = cv2.resize(b, (round(b.shape[1] * a.shape[0] / b.shape[0]), a.shape[0]))
    both = np.ascontiguousarray(np.concatenate([a, b], axis=1))
    with FaceMeshTracker(max_faces=2, static=True) as tracker:
        assert tracker.track(np.full((480, 640, 3), 128, np.uint8)) == []
        faces = tracker.track(both)
    assert len(faces) == 2
    centres = sorted((f.box_px[0] + f.box_px[2]) / 2 for f in faces)
    assert centres[0] < a.shape[1] < centres[1]  # one face in each half
    assert len({f.track_id for f in faces}) == 2
    with FaceMeshTracker(max_faces=1, static=True) as tracker:
        assert len(tracker.track(both)) == 1


def test_vectorised_proto_parse_matches_per_point_values() -> None:
    from mediapipe.framework.formats import landmark_pb2

    rng = np.random.default_rng(1)
    pts = rng.normal(size=(N_LANDMARKS, 3)).astype(np.float32)
    msg = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in pts:
        msg.landmark.add(x=float(x), y=float(y), z=float(z))
    assert np.array_equal(landmarks_from_proto(msg), pts)
    msg.landmark[5].visibility = 0.5  # another layout: the fallback path gives the same values
    assert np.array_equal(landmarks_from_proto(msg), pts)


def test_tracker_rejects_bad_images() -> None:
    with FaceMeshTracker() as tracker, pytest.raises(ValueError, match="RGB"):
        tracker.track(np.zeros((10, 10), np.uint8))
