"""Annotated video writer: frame times follow the source, odd sizes, drawing, unwritable paths."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from realtime.annotate import annotate, draw_points
from realtime.errors import OutputError
from realtime.results import FaceResult, FaceTrack, Frame, FrameResult
from realtime.videoout import VideoWriterSink, check_output_file


@pytest.fixture(scope="module")
def frames(videos_dir: Path) -> list[np.ndarray]:
    with av.open(str(videos_dir / "wink_blink_gaze.mp4")) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(6), c.decode(video=0), strict=False)]


def test_variable_frame_times_and_odd_size(frames: list[np.ndarray], tmp_path: Path) -> None:
    """Live sources drop frames: the output keeps each frame at its source time (ms PTS)."""
    times = [10.0, 10.1, 10.15, 10.5, 10.55, 11.0]
    out = tmp_path / "vfr.mp4"
    with VideoWriterSink(out, fps=30) as sink:
        for i, (t, img) in enumerate(zip(times, frames, strict=True)):
            sink.consume(FrameResult(Frame(np.ascontiguousarray(img[:301, :511]), i, t, 0.0)))
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (510, 300)  # yuv420p: even sizes
        decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    # (B-frames shift the whole stream by the encoder delay; the spacing is the source's)
    assert [round(t - decoded[0][0], 3) for t, _ in decoded] == [round(t - times[0], 3) for t in times]
    # Lossy but close to the input (no annotations without faces except the text line at the top).
    err = np.abs(decoded[2][1][40:].astype(int) - frames[2][40:300, :510].astype(int)).mean()
    assert err < 6.0


def test_annotations_mark_landmarks_without_touching_the_source(frames: list[np.ndarray]) -> None:
    img = frames[0].copy()
    pts = np.array([[10.2, 20.7, 0.0], [100.0, 50.0, 0.0], [-5.0, 3.0, 0.0], [600.0, 10.0, 0.0]], np.float32)
    draw_points(img, pts, np.array([255, 0, 0], np.uint8), radius=1)
    assert (img[20:23, 9:12] == [255, 0, 0]).all() and (img[49:52, 99:102] == [255, 0, 0]).all()
    lm = np.zeros((478, 3), np.float32)
    lm[:, 0] = np.linspace(100, 300, 478)
    lm[:, 1] = 200
    track = FaceTrack(lm, 0.9, (100.0, 200.0, 300.0, 200.0))
    r = FrameResult(Frame(frames[1], 0, 0.0, 0.0), faces=[FaceResult(track)])
    before = frames[1].copy()
    canvas = annotate(frames[1].copy(), r)
    assert np.array_equal(frames[1], before)
    assert (canvas[200, 100:301] != before[200, 100:301]).any(axis=-1).mean() > 0.9


def test_unwritable_or_unknown_outputs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create folder"):
        check_output_file(blocker / "out.mp4")
    with pytest.raises(OutputError, match="unsupported output type"):
        check_output_file(tmp_path / "out.gif")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path / "dir.mp4")
    assert check_output_file(tmp_path / "new" / "ok.mkv") == tmp_path / "new" / "ok.mkv"


def test_drawing_runs_on_its_own_thread_and_failures_surface_at_close(frames: list[np.ndarray],
                                                                       tmp_path: Path) -> None:
    """Drawing (the mesh renderer) and encoding are two threads; a drawing error neither blocks the
    pipeline's consume() nor passes silently, and the drawing callable is closed on its own thread."""
    import threading

    class Draw:
        def __init__(self) -> None:
            self.threads: set[str] = set()
            self.closed_on: str | None = None

        def __call__(self, image: np.ndarray, result: FrameResult) -> np.ndarray:
            self.threads.add(threading.current_thread().name)
            if result.frame.index == 3:
                raise RuntimeError("GL context lost")
            image[:8] = 255
            return image

        def close(self) -> None:
            self.closed_on = threading.current_thread().name

    draw = Draw()
    sink = VideoWriterSink(tmp_path / "x.mp4", fps=30, draw=draw, max_queue=2)
    for i in range(3):
        sink.consume(FrameResult(Frame(frames[i], i, i / 30.0, 0.0)))
    with pytest.raises(OutputError, match="GL context lost"):
        for i in range(3, 40):   # after the failure consume() raises instead of queueing (never blocks)
            sink.consume(FrameResult(Frame(frames[i % len(frames)], i, i / 30.0, 0.0)))
    with pytest.raises(OutputError, match="GL context lost"):
        sink.close()
    assert draw.threads == {"video-draw"} and draw.closed_on == "video-draw"
    with av.open(str(tmp_path / "x.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 3   # what was drawn before the failure is in the file
    assert decoded[0][:6].min() > 200
