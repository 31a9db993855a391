"""Capture: every frame of the real videos, timestamps, images, hand-offs, bad inputs, camera back-off."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import VIDEO_NAMES

from realtime.capture import (
    ArraySource,
    CameraSource,
    FrameSource,
    ImageSource,
    LatestFrameHandoff,
    QueueHandoff,
    VideoSource,
    open_source,
)
from realtime.errors import BadInputError
from realtime.results import Frame


def drain(source: FrameSource, timeout_s: float = 60.0) -> list[Frame]:
    frames = []
    deadline = time.monotonic() + timeout_s
    with source:
        while time.monotonic() < deadline:
            item = source.get(0.5)
            if item is None:
                if source.ended:
                    return frames
                continue
            frames.append(item[0])
    raise AssertionError(f"source did not end within {timeout_s} s")


def container_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.video[0].frames)


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_every_frame_decoded_with_monotonic_pts(videos_dir: Path, name: str) -> None:
    path = videos_dir / name
    src = VideoSource(path)
    frames = drain(src)
    assert src.error is None
    expected = container_frames(path)
    assert expected > 0
    assert len(frames) == expected == src.stats.expected
    assert src.stats.dropped == 0 and src.stats.decode_errors == 0
    ts = np.array([f.timestamp_s for f in frames])
    assert ts[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(ts) > 0)
    # PTS, not a counter: the mean spacing is the container's frame period.
    assert np.mean(np.diff(ts)) == pytest.approx(1.0 / src.fps, rel=0.01)
    assert [f.index for f in frames] == list(range(expected))
    f = frames[len(frames) // 2]
    assert f.image.dtype == np.uint8 and f.image.shape == (src.height, src.width, 3)


def test_frames_are_rgb(videos_dir: Path) -> None:
    """Our RGB frame equals OpenCV's BGR decode of the same frame with channels swapped."""
    path = videos_dir / "talking_720p.mp4"
    with VideoSource(path) as src:
        item = src.get(10.0)
    assert item is not None
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    diff = np.abs(item[0].image.astype(int) - bgr[:, :, ::-1].astype(int))
    swapped = np.abs(item[0].image.astype(int) - bgr.astype(int))
    assert diff.mean() < 2.0 < swapped.mean()


def test_latest_frame_handoff_keeps_newest_and_counts_drops() -> None:
    h = LatestFrameHandoff()
    img = np.zeros((2, 2, 3), np.uint8)
    for i in range(5):
        assert h.put(Frame(img, i, i / 30, 0.0))
    item = h.get(0.1)
    assert item is not None
    frame, dropped = item
    assert frame.index == 4 and dropped == 4 and h.dropped == 4
    assert h.get(0.01) is None and not h.ended
    h.finish()
    assert h.ended


def test_queue_handoff_blocks_instead_of_dropping() -> None:
    h = QueueHandoff(maxsize=2)
    img = np.zeros((2, 2, 3), np.uint8)
    produced: list[int] = []

    def producer() -> None:
        for i in range(6):
            h.put(Frame(img, i, 0.0, 0.0))
            produced.append(i)
        h.finish()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.2)
    assert len(produced) == 2  # blocked on the full queue
    got = []
    while (item := h.get(1.0)) is not None:
        got.append(item[0].index)
        assert item[1] == 0
    t.join(2.0)
    assert got == list(range(6)) and h.dropped == 0 and h.ended


def test_realtime_file_is_paced_and_drops_when_processing_is_slow(videos_dir: Path) -> None:
    src = VideoSource(videos_dir / "wink_blink_gaze.mp4", realtime=True)
    got: list[tuple[Frame, int]] = []
    with src:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            item = src.get(0.5)
            if item is not None:
                got.append(item)
                time.sleep(0.1)  # a processing step slower than the 30 fps source
        elapsed = time.perf_counter() - t0
    ts = np.array([f.timestamp_s for f, _ in got])
    assert np.all(np.diff(ts) > 0)
    # Paced: the source time processed so far follows the wall clock (not 10x faster like a free decode).
    assert ts[-1] == pytest.approx(elapsed, abs=0.35)
    assert sum(d for _, d in got) > 10
    indices = [f.index for f, _ in got]
    assert all(b - a == d + 1 for (a, b), (_, d) in zip(itertools.pairwise(indices), got[1:], strict=True))


def test_single_image_and_folder(images_dir: Path, tmp_path: Path) -> None:
    one = images_dir / "einstein.jpg"
    frames = drain(ImageSource(one))
    assert len(frames) == 1 and frames[0].timestamp_s == 0.0
    bgr = cv2.imread(str(one))
    assert np.array_equal(frames[0].image, bgr[:, :, ::-1])

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("takeo", "einstein", "lfpw_image_0010"):
        shutil.copy(images_dir / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "notes.txt").write_text("not an image")
    src = ImageSource(folder)
    frames = drain(src)
    assert src.error is None
    assert [f.source for f in frames] == [str(folder)] * 3
    assert [f.timestamp_s for f in frames] == [0.0, 1.0, 2.0]
    assert frames[0].image.shape == cv2.imread(str(folder / "einstein.jpg")).shape  # sorted by name

    (folder / "zz_broken.png").write_bytes(b"\x89PNG broken")
    src = ImageSource(folder)
    frames = drain(src)
    assert len(frames) == 3 and src.stats.decode_errors == 1
    assert isinstance(src.error, BadInputError) and "1 of 4 images" in str(src.error)


def test_array_source_back_pressure_delivers_all() -> None:
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(20)]
    frames = drain(ArraySource(images, fps=10.0))
    assert [int(f.image[0, 0, 0]) for f in frames] == list(range(20))
    assert frames[3].timestamp_s == pytest.approx(0.3)
    with ArraySource(images) as src:  # sources are iterables of frames too
        assert [f.index for f in src] == list(range(20))


# ------------------------------------------------------------------------------------------ bad inputs


def test_missing_empty_and_text_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        VideoSource(tmp_path / "missing.mp4").open()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match="empty"):
        VideoSource(empty).open()
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(BadInputError, match="cannot open video"):
        VideoSource(text).open()
    with pytest.raises(BadInputError, match="image not found"):
        ImageSource(tmp_path / "none.jpg").open()
    with pytest.raises(BadInputError, match="cannot read image"):
        ImageSource(text).open()


def test_truncated_video_decodes_what_it_can(videos_dir: Path, tmp_path: Path) -> None:
    # talking_720p.mp4 has its index (moov) first: a cut copy still opens and decodes up to the cut.
    src_path = videos_dir / "talking_720p.mp4"
    data = src_path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    src = VideoSource(cut)
    frames = drain(src, timeout_s=30)
    total = container_frames(src_path)
    assert 0.2 * total < len(frames) < total
    assert isinstance(src.error, BadInputError)
    assert f"decoded {len(frames)} of {total} frames" in str(src.error)
    # wink_blink_gaze.mp4 has its index last: a cut copy cannot be opened at all.
    data = (videos_dir / "wink_blink_gaze.mp4").read_bytes()
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="cannot open video"):
        VideoSource(cut2).open()


def test_corrupt_middle_is_reported_not_hung(videos_dir: Path, tmp_path: Path) -> None:
    data = bytearray((videos_dir / "talking_720p.mp4").read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + 60_000] = rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    src = VideoSource(bad)
    t0 = time.monotonic()
    frames = drain(src, timeout_s=60)
    assert time.monotonic() - t0 < 30
    assert 100 < len(frames) < container_frames(videos_dir / "talking_720p.mp4")  # the intact parts decode
    assert isinstance(src.error, BadInputError) and "truncated or corrupt" in str(src.error)
    assert src.stats.decode_errors > 0


def test_video_over_http_is_decoded_whole(videos_dir: Path) -> None:
    """A file behind an HTTP URL (a loopback server) is a file: every frame, back-pressure, PTS."""
    import functools
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(videos_dir))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            src = VideoSource(f"http://127.0.0.1:{server.server_address[1]}/talking_720p.mp4")
            frames = drain(src)
        finally:
            server.shutdown()
    assert not src.live and src.error is None
    assert len(frames) == container_frames(videos_dir / "talking_720p.mp4") and src.stats.dropped == 0
    assert np.all(np.diff([f.timestamp_s for f in frames]) > 0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.mp4", "rtsp://127.0.0.1:9/x"])
def test_unreachable_url_fails_quickly(url: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(BadInputError, match="cannot open video"):
        VideoSource(url, open_timeout_s=3.0, read_timeout_s=3.0).open()
    assert time.monotonic() - t0 < 10


def test_missing_camera_is_a_clear_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(BadInputError, match="camera 9 not found"):
        open_source(camera=9).open()
    assert time.monotonic() - t0 < 5
    with pytest.raises(BadInputError, match="exactly one input"):
        open_source(camera=0, video="x.mp4")


class FakeCapture:
    """A camera double replaying real video frames (BGR, like OpenCV) that can go away and come back."""

    def __init__(self, frames: list[np.ndarray], script: list[bool]) -> None:
        self.frames = frames
        self.script = script  # per read: True = a frame, False = failure; empty = frames forever
        self.reads = 0
        self.open = True

    def isOpened(self) -> bool:
        return self.open

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {
            cv2.CAP_PROP_FRAME_WIDTH: 512.0,
            cv2.CAP_PROP_FRAME_HEIGHT: 512.0,
            cv2.CAP_PROP_FPS: 30.0,
        }.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        i = self.reads
        self.reads += 1
        ok = self.script[i] if i < len(self.script) else True
        time.sleep(0.005)
        return (True, self.frames[i % len(self.frames)]) if ok else (False, None)

    def release(self) -> None:
        self.open = False


@pytest.fixture(scope="module")
def bgr_frames(videos_dir: Path) -> list[np.ndarray]:
    with av.open(str(videos_dir / "wink_blink_gaze.mp4")) as c:
        return [f.to_ndarray(format="bgr24") for _, f in zip(range(5), c.decode(video=0), strict=False)]


def test_camera_reconnects_with_backoff(bgr_frames: list[np.ndarray]) -> None:
    opened: list[FakeCapture] = []

    def factory(index: int) -> FakeCapture:
        # First device: 10 frames, then unplugged. Second open fails (still away). Third works.
        n = len(opened)
        cap = FakeCapture(bgr_frames, [True] * 10 + [False] * 1000 if n == 0 else [])
        cap.open = n != 1
        opened.append(cap)
        return cap

    src = CameraSource(0, capture_factory=factory, backoff_s=(0.05, 0.1), reconnect_timeout_s=5.0)
    got = []
    with src:
        t0 = time.monotonic()
        while len(got) < 20 and time.monotonic() - t0 < 10:
            item = src.get(0.5)
            if item is not None:
                got.append(item[0])
    assert len(got) == 20 and src.stats.reconnects == 1 and len(opened) == 3
    ts = [f.timestamp_s for f in got]
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert np.array_equal(got[0].image, bgr_frames[0][:, :, ::-1])  # BGR -> RGB


def test_camera_that_stays_away_ends_with_error(bgr_frames: list[np.ndarray]) -> None:
    calls = []

    def factory(index: int) -> FakeCapture:
        cap = FakeCapture(bgr_frames, [True] * 3 + [False] * 1000)
        cap.open = not calls
        calls.append(index)
        return cap

    src = CameraSource(3, capture_factory=factory, backoff_s=(0.05, 0.1, 0.2), reconnect_timeout_s=0.6)
    t0 = time.monotonic()
    frames = drain(src, timeout_s=10)
    assert len(frames) == 3
    assert time.monotonic() - t0 < 5
    assert isinstance(src.error, BadInputError) and "camera 3 stopped delivering" in str(src.error)
    assert len(calls) >= 3  # retried with back-off before giving up
