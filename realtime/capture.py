"""Frame sources: cameras (OpenCV), video files and URLs (PyAV), single images and image folders.

Every source decodes on its own producer thread and hands frames to the processing thread through one of
two hand-offs:

* ``LatestFrameHandoff`` (live cameras, ``--realtime`` files): a one-frame slot. The producer overwrites a
  frame that was not picked up yet, so processing always gets the newest frame; overwritten frames are
  dropped and counted (``FrameResult.dropped_before``).
* ``QueueHandoff`` (files as fast as possible, images): a small bounded queue. The producer blocks while it
  is full (back-pressure), so every frame is processed and memory stays bounded.

Errors found while opening raise ``BadInputError`` (exit code 2). Errors found while decoding (truncated or
corrupt data, a camera that stays unplugged) end the stream after everything decodable was delivered;
they are kept in ``FrameSource.error`` so that the caller can finish its outputs first and then report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import BadInputError, UserError
from realtime.results import Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
URL_OPEN_TIMEOUT_S = 10.0
"""Bound on connecting to a URL; a stalled read also ends after ``URL_READ_TIMEOUT_S``."""
URL_READ_TIMEOUT_S = 10.0
MAX_CONSECUTIVE_DECODE_ERRORS = 50
"""A file that keeps failing this many packets in a row is treated as unreadable from there on."""
DEFAULT_QUEUE_SIZE = 4
"""Frames buffered between decode and processing for non-realtime sources (720p RGB: 2.8 MB each)."""


def is_url(text: str) -> bool:
    return "://" in text


# --------------------------------------------------------------------------------------------- hand-offs


class Handoff(ABC):
    """Thread-safe frame hand-off from one producer thread to one consumer thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._finished = False  # producer is done (end of stream or error)
        self._closed = False  # consumer gave up: producers must stop
        self.dropped = 0

    @abstractmethod
    def _has_item(self) -> bool: ...

    @abstractmethod
    def _take(self) -> tuple[Frame, int]: ...

    @abstractmethod
    def put(self, frame: Frame) -> bool:
        """Hand over a frame; False when the consumer closed the hand-off (the producer should stop)."""

    def get(self, timeout: float | None = None) -> tuple[Frame, int] | None:
        """The next frame and how many frames were dropped just before it, or None on timeout/end."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item() or self._finished or self._closed, timeout):
                return None
            if self._has_item():
                item = self._take()
                self._cond.notify_all()
                return item
            return None

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """The producer finished and every frame it produced was taken (or the hand-off was closed)."""
        with self._cond:
            return self._closed or (self._finished and not self._has_item())

    @property
    def closed(self) -> bool:
        return self._closed


class LatestFrameHandoff(Handoff):
    """One-slot hand-off: a newer frame replaces one not yet taken (counted in ``dropped``)."""

    def __init__(self) -> None:
        super().__init__()
        self._slot: Frame | None = None
        self._pending_drops = 0

    def _has_item(self) -> bool:
        return self._slot is not None

    def _take(self) -> tuple[Frame, int]:
        frame, self._slot = self._slot, None
        drops, self._pending_drops = self._pending_drops, 0
        assert frame is not None
        return frame, drops

    def put(self, frame: Frame) -> bool:
        with self._cond:
            if self._closed:
                return False
            if self._slot is not None:
                self.dropped += 1
                self._pending_drops += 1
            self._slot = frame
            self._cond.notify_all()
            return True


class QueueHandoff(Handoff):
    """Bounded FIFO: ``put`` blocks while full, so nothing is dropped and memory stays bounded."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__()
        self._queue: deque[Frame] = deque()
        self._maxsize = max(1, maxsize)

    def _has_item(self) -> bool:
        return bool(self._queue)

    def _take(self) -> tuple[Frame, int]:
        return self._queue.popleft(), 0

    def put(self, frame: Frame) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: len(self._queue) < self._maxsize or self._closed)
            if self._closed:
                return False
            self._queue.append(frame)
            self._cond.notify_all()
            return True


# ----------------------------------------------------------------------------------------------- sources


@dataclass
class CaptureStats:
    delivered: int = 0
    """Frames handed to the hand-off (decoded or grabbed)."""
    dropped: int = 0
    """Frames overwritten in the latest-frame hand-off before processing took them."""
    decode_errors: int = 0
    """Packets/images that could not be decoded."""
    reconnects: int = 0
    """Times a live camera was re-opened after it stopped delivering frames."""
    expected: int | None = None
    """Frame count announced by the container, when it announces one."""


class FrameSource(ABC):
    """A source of RGB frames decoded on its own thread. Use as a context manager (``open``/``close``)."""

    kind: str = "source"
    live: bool = False

    def __init__(self, description: str, *, latest_only: bool, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.description = description
        self.latest_only = latest_only
        """Latest-frame hand-off (live) instead of the back-pressure queue; ``_open`` may still change it."""
        self._queue_size = queue_size
        self.handoff: Handoff = LatestFrameHandoff() if latest_only else QueueHandoff(queue_size)
        self.stats = CaptureStats()
        self.error: UserError | None = None
        """Why the stream ended early (truncated/corrupt file, camera lost); earlier frames are kept."""
        self.fps: float | None = None
        self.width = 0
        self.height = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._next_index = 0
        self._opened = False
        self.decode_ms: deque[float] = deque(maxlen=20_000)
        """Per-frame decode + colour conversion time on the producer thread (waiting excluded)."""

    # Subclasses implement these three.
    @abstractmethod
    def _open(self) -> None:
        """Open the device/file (raise ``BadInputError``) and fill ``fps``, ``width``, ``height``."""

    @abstractmethod
    def _produce(self) -> None:
        """Decode frames and pass them to ``_emit`` until the end, an error, or ``_emit`` returns False."""

    @abstractmethod
    def _release(self) -> None:
        """Free the device/file (called on the producer thread when it ends)."""

    @property
    def opened(self) -> bool:
        return self._opened

    def open(self) -> None:
        """Open the input (raises ``BadInputError`` at once for bad paths) and start the decode thread."""
        if self._opened:
            return
        self._open()
        if self.latest_only != isinstance(self.handoff, LatestFrameHandoff):
            self.handoff = LatestFrameHandoff() if self.latest_only else QueueHandoff(self._queue_size)
        self._opened = True
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.kind}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._produce()
        except UserError as exc:
            self.error = exc
        except Exception as exc:  # a decoder bug must not kill the app silently: report it as bad input
            log.debug("capture thread failed", exc_info=True)
            self.error = BadInputError(f"{self.description}: {exc}")
        finally:
            try:
                self._release()
            finally:
                self.stats.dropped = self.handoff.dropped
                self.handoff.finish()

    def _emit(self, image: np.ndarray, timestamp_s: float) -> bool:
        """Hand one RGB frame over; False when the consumer stopped."""
        if self._stop.is_set():
            return False
        frame = Frame(
            image=image,
            index=self._next_index,
            timestamp_s=timestamp_s,
            capture_time_s=time.perf_counter(),
            source=self.description,
        )
        self._next_index += 1
        ok = self.handoff.put(frame)
        if ok:
            self.stats.delivered += 1
        return ok

    def get(self, timeout: float | None = None) -> tuple[Frame, int] | None:
        """Next frame and the number dropped before it; None on timeout or at the end (see ``ended``)."""
        return self.handoff.get(timeout)

    @property
    def ended(self) -> bool:
        return self.handoff.ended

    def __iter__(self) -> Iterator[Frame]:
        """Every frame until the end (opens the source if needed); ``error`` tells why it ended early."""
        self.open()
        while True:
            item = self.get(0.1)
            if item is not None:
                yield item[0]
            elif self.ended:
                return

    def stop(self) -> None:
        """Ask the producer to stop (returns at once; ``close`` waits for it)."""
        self._stop.set()
        self.handoff.close()

    def close(self, timeout: float = 5.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A blocking read that ignores interrupts (a stuck driver): the thread is a daemon, the
                # process can still exit; say so instead of hanging.
                log.warning("%s: decode thread did not stop within %.0f s", self.description, timeout)
            self._thread = None
        self.stats.dropped = self.handoff.dropped

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False when stopped."""
        return not self._stop.wait(seconds)


class VideoSource(FrameSource):
    """A video file or URL decoded with PyAV (FFmpeg). Timestamps are the frames' PTS in seconds."""

    kind = "video"

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = False,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        decoder_threads: int | None = None,
        open_timeout_s: float = URL_OPEN_TIMEOUT_S,
        read_timeout_s: float = URL_READ_TIMEOUT_S,
    ) -> None:
        self.path = str(path)
        self.url = is_url(self.path)
        # Live streams must never back up (newest frame wins); files, also over HTTP, are processed whole
        # unless paced with --realtime. Whether a URL is live is settled in _open.
        super().__init__(self.path, latest_only=realtime or _live_scheme(self.path), queue_size=queue_size)
        self.live = self.latest_only and not realtime
        self.realtime = realtime
        self.decoder_threads = decoder_threads if decoder_threads else min(4, os.cpu_count() or 1)
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._container: Any = None
        self._stream: Any = None

    def _open(self) -> None:
        import av

        if not self.url:
            p = Path(self.path)
            if not p.exists():
                raise BadInputError(f"video not found: {self.path}")
            if not p.is_file():
                raise BadInputError(f"not a video file: {self.path}")
            if p.stat().st_size == 0:
                raise BadInputError(f"video file is empty: {self.path}")
        try:
            self._container = av.open(
                self.path,
                timeout=(self.open_timeout_s, self.read_timeout_s) if self.url else None,
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise BadInputError(f"cannot open video {self.path}: {_av_reason(exc)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise BadInputError(f"no video stream in {self.path}")
        stream = self._container.streams.video[0]
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.width, self.height = int(stream.width), int(stream.height)
        if self.url and not self.latest_only and self._container.duration is None:
            self.latest_only = self.live = True  # no duration: a live stream (e.g. HLS live) over HTTP
        # Frame threading decodes several frames at once (throughput for files) but delays each frame by
        # the thread count; live streams use slice threading, which adds no delay.
        stream.thread_type = "SLICE" if self.live else "AUTO"
        stream.codec_context.thread_count = self.decoder_threads
        self.stats.expected = int(stream.frames) if stream.frames and not self.live else None
        if self.width <= 0 or self.height <= 0:
            self._container.close()
            raise BadInputError(f"cannot read the video size of {self.path} (not a video?)")

    def _produce(self) -> None:
        import av

        stream = self._stream
        time_base = stream.time_base or Fraction(1, 90000)
        start = stream.start_time or 0
        fps = self.fps or 30.0
        consecutive_errors = 0
        last_ts = -np.inf
        wall0: float | None = None
        ts0 = 0.0
        packets = self._container.demux(stream)
        t_mark = time.perf_counter()
        while not self._stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.EOFError:
                break
            except (av.error.FFmpegError, OSError) as exc:
                # Demuxer error (corrupt container, network failure/timeout): stop reading, keep what we have.
                self.stats.decode_errors += 1
                log.debug("demux error in %s: %s", self.path, exc)
                if self.url:
                    raise BadInputError(f"stream {self.path} failed: {_av_reason(exc)}") from None
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                self.stats.decode_errors += 1
                consecutive_errors += 1
                log.debug("decode error in %s: %s", self.path, exc)
                if consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    break
                continue
            consecutive_errors = 0
            for vf in frames:
                ts = float((vf.pts - start) * time_base) if vf.pts is not None else self._next_index / fps
                if ts <= last_ts:  # broken/duplicate PTS: keep timestamps strictly increasing
                    ts = last_ts + 1.0 / fps
                last_ts = ts
                image = vf.to_ndarray(format="rgb24")
                self.decode_ms.append((time.perf_counter() - t_mark) * 1000.0)
                if self.realtime:
                    now = time.perf_counter()
                    if wall0 is None:
                        wall0, ts0 = now, ts
                    delay = wall0 + (ts - ts0) - now
                    if delay > 0 and not self._sleep(delay):
                        return
                if not self._emit(image, ts):
                    return
                t_mark = time.perf_counter()  # waiting for the consumer is not decoding
        if self._stop.is_set():
            return
        decoded = self._next_index
        expected = self.stats.expected
        if self.stats.decode_errors or (expected is not None and decoded < expected):
            of = f" of {expected}" if expected is not None else ""
            raise BadInputError(
                f"{self.path}: truncated or corrupt video: decoded {decoded}{of} frames"
                f" ({self.stats.decode_errors} unreadable packets)"
            )
        if decoded == 0:
            raise BadInputError(f"{self.path}: no decodable video frames")

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


_LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp")


def _live_scheme(path: str) -> bool:
    return is_url(path) and path.split("://", 1)[0].lower() in _LIVE_SCHEMES


def _av_reason(exc: BaseException) -> str:
    """FFmpeg's short reason (``strerror``) without PyAV's repetition of the file name."""
    reason = getattr(exc, "strerror", None)
    if isinstance(exc, TimeoutError) or "Immediate exit" in str(reason):
        return "timed out"
    return str(reason or exc).strip() or type(exc).__name__


def _camera_exists(index: int) -> bool | None:
    """True/False where the OS tells (Linux ``/dev/videoN``), None where only opening can tell."""
    if sys.platform.startswith("linux"):
        return Path(f"/dev/video{index}").exists()
    return None


def list_cameras(max_index: int = 10) -> list[int]:
    """Camera indices that exist (Linux: video device nodes; elsewhere: indices that open, quickly)."""
    if sys.platform.startswith("linux"):
        found = []
        for p in Path("/dev").glob("video*"):
            suffix = p.name[5:]
            if suffix.isdigit() and int(suffix) < max_index:
                found.append(int(suffix))
        return sorted(found)
    import cv2

    found = []
    for i in range(min(max_index, 4)):
        cap = cv2.VideoCapture(i)
        if cap.isOpened():
            found.append(i)
        cap.release()
    return found


def quiet_opencv() -> None:
    """OpenCV's backends print warnings for missing devices; our own message says it in one line."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    import cv2

    with contextlib.suppress(AttributeError):  # older builds have no cv2.utils.logging
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # type: ignore[attr-defined]


class CameraSource(FrameSource):
    """A live camera through OpenCV. Timestamps: monotonic clock, seconds since the camera opened.

    When the camera stops delivering (unplugged), it is re-opened with exponential back-off until
    ``reconnect_timeout_s`` passes without a frame; then the stream ends with an error.
    """

    kind = "camera"
    live = True

    def __init__(
        self,
        index: int,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        open_timeout_s: float = 5.0,
        reconnect_timeout_s: float = 30.0,
        backoff_s: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        capture_factory: Callable[[int], Any] | None = None,
    ) -> None:
        super().__init__(f"camera {index}", latest_only=True)
        self.index = index
        self.requested = (width, height, fps)
        self.open_timeout_s = open_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.backoff_s = tuple(backoff_s)
        self._factory = capture_factory
        self._cap: Any = None
        self.t0_monotonic = 0.0
        """``time.monotonic()`` at open; frame timestamps are seconds since then."""

    def _make_capture(self) -> Any:
        if self._factory is not None:
            return self._factory(self.index)
        import cv2

        quiet_opencv()
        return cv2.VideoCapture(self.index)

    def _try_open(self) -> Any | None:
        cap = self._make_capture()
        if not cap.isOpened():
            cap.release()
            return None
        import cv2

        w, h, fps = self.requested
        if w:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(w))
        if h:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(h))
        if fps:
            cap.set(cv2.CAP_PROP_FPS, float(fps))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1.0)  # we want the newest frame, not a driver backlog
        return cap

    def _open(self) -> None:
        if self._factory is None and _camera_exists(self.index) is False:
            cams = list_cameras()
            found = ", ".join(str(c) for c in cams) if cams else "none"
            raise BadInputError(
                f"camera {self.index} not found (cameras found: {found}); use --video PATH instead"
            )
        deadline = time.monotonic() + self.open_timeout_s
        for attempt in range(1000):
            cap = self._try_open()
            if cap is not None:
                self._cap = cap
                break
            wait = self.backoff_s[min(attempt, len(self.backoff_s) - 1)]
            if time.monotonic() + wait > deadline:
                raise BadInputError(f"camera {self.index} cannot be opened (busy or unplugged?)")
            log.warning("camera %d cannot be opened; retrying in %.1f s", self.index, wait)
            time.sleep(wait)
        import cv2

        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if fps > 0 else None
        self.t0_monotonic = time.monotonic()
        log.info("camera %d: %dx%d @ %s fps", self.index, self.width, self.height, self.fps or "?")

    def _produce(self) -> None:
        import cv2

        while not self._stop.is_set():
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if ok and bgr is not None:
                t = time.monotonic() - self.t0_monotonic
                t_conv = time.perf_counter()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                self.decode_ms.append((time.perf_counter() - t_conv) * 1000.0)
                if not self._emit(rgb, t):
                    return
                continue
            if not self._reconnect():
                return

    def _reconnect(self) -> bool:
        """Re-open the camera with back-off; False when stopped. Raises when it stays away too long."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        give_up = time.monotonic() + self.reconnect_timeout_s
        attempt = 0
        while not self._stop.is_set():
            wait = self.backoff_s[min(attempt, len(self.backoff_s) - 1)]
            attempt += 1
            if time.monotonic() + wait > give_up:
                raise BadInputError(
                    f"camera {self.index} stopped delivering frames and did not come back within"
                    f" {self.reconnect_timeout_s:.0f} s (unplugged?)"
                )
            log.warning("camera %d delivers no frames (unplugged?); retrying in %.2f s", self.index, wait)
            if not self._sleep(wait):
                return False
            cap = self._try_open()
            if cap is not None:
                ok, _ = cap.read()
                if ok:
                    self._cap = cap
                    self.stats.reconnects += 1
                    log.warning("camera %d is back", self.index)
                    return True
                cap.release()
        return False

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSource(FrameSource):
    """One image, or every image in a folder (sorted by name). Timestamp: 0 for one image, else the index."""

    kind = "image"

    def __init__(self, path: str | Path, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__(str(path), latest_only=False, queue_size=queue_size)
        self.path = Path(path)
        self.files: list[Path] = []

    def _open(self) -> None:
        if not self.path.exists():
            raise BadInputError(f"image not found: {self.path}")
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self.files:
                raise BadInputError(
                    f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {self.path}"
                )
        else:
            self.files = [self.path]
        self.stats.expected = len(self.files)
        first = _read_image(self.files[0])
        if first is None and len(self.files) == 1:
            raise BadInputError(f"cannot read image {self.path} (not an image or corrupt)")
        if first is not None:
            self.height, self.width = first.shape[:2]

    def _produce(self) -> None:
        single = len(self.files) == 1
        for i, p in enumerate(self.files):
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            image = _read_image(p)
            if image is None:
                self.stats.decode_errors += 1
                log.warning("cannot read image %s; skipped", p)
                continue
            self.decode_ms.append((time.perf_counter() - t0) * 1000.0)
            if not self._emit(image, 0.0 if single else float(i)):
                return
        if self.stats.decode_errors:
            raise BadInputError(
                f"{self.stats.decode_errors} of {len(self.files)} images in {self.path} could not be read"
            )

    def _release(self) -> None:
        pass


def load_rgb(path: str | Path) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB; ``BadInputError`` when it is missing or unreadable.

    Every command reads stills through here so that ``run --image``, ``reconstruct`` and ``refine`` see the
    same pixels (OpenCV decoding, EXIF orientation applied)."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"image not found: {p}")
    image = _read_image(p)
    if image is None:
        raise BadInputError(f"cannot read image {p} (not an image or corrupt)")
    return image


def _read_image(path: Path) -> np.ndarray | None:
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode: non-ASCII paths work too
    except OSError:
        return None
    if data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ArraySource(FrameSource):
    """Frames already in memory (benchmarks, tests). Timestamps: index / fps."""

    kind = "array"

    def __init__(self, images: Sequence[np.ndarray], fps: float = 30.0, description: str = "memory") -> None:
        super().__init__(description, latest_only=False)
        self.images = images
        self.fps = fps

    def _open(self) -> None:
        if not len(self.images):
            raise BadInputError("no frames given")
        self.height, self.width = self.images[0].shape[:2]
        self.stats.expected = len(self.images)

    def _produce(self) -> None:
        assert self.fps is not None
        for i, image in enumerate(self.images):
            if not self._emit(image, i / self.fps):
                return

    def _release(self) -> None:
        pass


def open_source(
    *,
    camera: int | None = None,
    video: str | None = None,
    image: str | None = None,
    realtime: bool = False,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> FrameSource:
    """Build (not yet open) the source the command line asked for; exactly one input must be given."""
    given = [x is not None for x in (camera, video, image)]
    if sum(given) != 1:
        raise BadInputError("give exactly one input: --camera N, --video PATH|URL or --image PATH")
    if camera is not None:
        if camera < 0:
            raise BadInputError(f"camera index must be >= 0, got {camera}")
        return CameraSource(camera, width=width, height=height, fps=fps)
    if video is not None:
        return VideoSource(video, realtime=realtime)
    assert image is not None
    return ImageSource(image)
