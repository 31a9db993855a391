"""Session video: H.264 in a fragmented MP4 written by an encoder process (``encoder.py``).

The MP4 starts with an empty ``moov`` and every ~0.25 s of video goes out as a self-contained ``moof``
fragment that is flushed to the file at once (``flush_packets``), so a process killed at any instant
leaves a file that plays up to the last complete fragment. ``repair`` remuxes such a file into a regular
MP4. Timestamps are the session clock in milliseconds (variable frame rate: a camera's real timing).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from realtime.session.encoder import HDR_F, HDR_S, MSG_A, MSG_D, MSG_E

log = logging.getLogger(__name__)

FRAGMENT_US = 250_000
"""Fragment length: bounds what a kill can lose (plus the frames still queued for the encoder)."""
SLOT_BUDGET_BYTES = 280_000_000
"""Shared memory for frames handed to the encoder process (the backlog a kill of the app cannot lose):
~3.2 s of 720p (96 slots), ~1.5 s of 1080p. The encoder runs niced, so on a loaded machine it falls
behind for a while instead of slowing the live view; these slots are what it catches up from."""
ENCODER_NICE = 10
"""Default niceness increment of the encoder process (``tools/bench_recording.py --encoder-nice``)."""
_CODEC_PREFERENCE = ("libx264", "libopenh264", "h264", "mpeg4")


def pick_codec(preferred: str | None = None) -> str:
    """H.264 when this PyAV build can encode it, else MPEG-4 part 2."""
    names = (preferred,) if preferred else _CODEC_PREFERENCE
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises UnknownCodecError (not a stable public class across versions)
            continue
    if preferred:
        from realtime.errors import BadInputError

        raise BadInputError(f"video codec {preferred!r} is not available in this PyAV build")
    raise RuntimeError("no usable video encoder in this PyAV build")


@dataclass(slots=True)
class VideoStats:
    codec: str
    width: int
    height: int
    frames_written: int
    frames_dropped: int
    last_pts_s: float | None


class FragmentedVideoWriter:
    """Encodes RGB frames in a separate process (``realtime.session.encoder``); ``put`` never blocks.

    A feeder thread copies queued frames into shared-memory slots and sends their numbers to the encoder
    process; a reader thread collects the returned slots. ``on_error`` is called once (from a worker
    thread) with a one-line message when encoding or writing fails; the writer then stops and the file
    keeps every complete fragment.
    """

    def __init__(self, path: Path, on_error: Callable[[str], None], codec: str | None = None,
                 queue_frames: int = 15, crf: int = 23, preset: str = "ultrafast", threads: int = 1,
                 gop_s: float = 1.0, fps_hint: float = 30.0, slots: int = 96, nice: int = ENCODER_NICE) -> None:
        self.path = path
        self.codec = pick_codec(codec)
        self._on_error = on_error
        self._n_slots = slots
        # Bounded: when the encoder cannot keep up, frames are dropped (and counted) rather than stalling
        # the live view; the benchmark checks that this does not happen at 30 FPS 720p.
        self._queue: queue.Queue[tuple[np.ndarray, float] | None] = queue.Queue(maxsize=queue_frames)
        self._free: queue.Queue[int] = queue.Queue()
        self._dropped = 0
        self._written = 0
        self._sent = 0
        self._last_pts_ms = -1
        self._done_stats: tuple[int, int] | None = None
        self._size: tuple[int, int] | None = None
        self._failed = False
        self._shm_path: Path | None = None
        self._shm: mmap.mmap | None = None
        cmd = [sys.executable, "-m", "realtime.session.encoder", str(path), "--codec", self.codec,
               "--preset", preset, "--crf", str(crf), "--threads", str(threads),
               "--gop", str(max(1, round(gop_s * fps_hint))), "--fps", str(fps_hint),
               "--fragment-us", str(FRAGMENT_US), "--nice", str(nice)]
        # A file, not a pipe: nobody reads the encoder's stderr while it runs, and a full pipe would block it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, env=_child_env())
        except OSError as exc:
            raise RuntimeError(f"cannot start the video encoder process: {exc}") from None
        self._reader = threading.Thread(target=self._read_loop, name="session-video-acks", daemon=True)
        self._reader.start()
        self._feeder = threading.Thread(target=self._feed_loop, name="session-video", daemon=True)
        self._feeder.start()

    def put(self, image: np.ndarray, t_s: float, block: bool = False) -> bool:
        """Queue one frame (H x W x 3 uint8 RGB, not modified afterwards) at session time ``t_s``.

        ``block``: wait for room instead of dropping the frame (for files processed as fast as possible,
        where nothing is live and the encoder may set the pace)."""
        while not self._failed:
            try:
                self._queue.put((image, t_s), timeout=0.2) if block else self._queue.put_nowait((image, t_s))
                return True
            except queue.Full:
                if not block:
                    self._dropped += 1
                    return False
        return False

    @property
    def frames_dropped(self) -> int:
        return self._dropped

    def close(self, timeout_s: float = 30.0) -> VideoStats:
        """Encode what is queued, let the encoder write the last fragment, and wait for it."""
        while self._feeder.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._feeder.join(timeout_s)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("video encoder did not finish within %.0f s; stopping it", timeout_s)
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5.0)
        self._release_shm()
        self._stderr.close()
        if self._done_stats is not None:
            self._written, self._last_pts_ms = self._done_stats
        w, h = self._size or (0, 0)
        return VideoStats(self.codec, w, h, self._written, self._dropped,
                          self._last_pts_ms / 1000.0 if self._last_pts_ms >= 0 else None)

    # -- feeder thread: queue -> shared memory -> encoder's stdin ----------------------------------------

    def _setup(self, w: int, h: int) -> None:
        # Frames copied into the slots survive a kill of this process: the encoder maps them and the
        # pipe still holds their numbers. So most of the backlog lives there, not in our queue.
        need = w * h * 3 * self._n_slots
        fd, name = tempfile.mkstemp(prefix="realtime-face-video-", dir=_slot_dir(need))
        self._shm_path = Path(name)
        try:
            os.ftruncate(fd, w * h * 3 * self._n_slots)
            self._shm = mmap.mmap(fd, w * h * 3 * self._n_slots)
        finally:
            os.close(fd)
        self._slots = np.frombuffer(self._shm, np.uint8).reshape(self._n_slots, h, w, 3)
        for i in range(self._n_slots):
            self._free.put(i)
        path = str(self._shm_path).encode()
        self._write(b"S" + HDR_S.pack(w, h, self._n_slots, len(path)) + path)

    def _write(self, data: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        stdin.write(data)
        stdin.flush()

    def _feed_loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                if self._failed:
                    continue
                image, t_s = item
                if self._size is None:
                    # yuv420p needs even dimensions; an odd last row/column is cropped.
                    self._size = (image.shape[1] & ~1, image.shape[0] & ~1)
                    frame_bytes = self._size[0] * self._size[1] * 3
                    # ~3.2 s at 30 FPS for 720p; fewer slots for big frames (SLOT_BUDGET_BYTES at most)
                    self._n_slots = max(8, min(self._n_slots, SLOT_BUDGET_BYTES // frame_bytes))
                    self._setup(*self._size)
                w, h = self._size
                slot = self._take_slot()
                if slot is None:
                    continue
                dst = self._slots[slot]
                if image.shape[0] >= h and image.shape[1] >= w:
                    np.copyto(dst, image[:h, :w])  # numpy releases the GIL for this copy
                else:  # a smaller frame (resolution change): pad with black
                    dst[:] = 0
                    dst[: image.shape[0], : image.shape[1]] = image[:h, :w]
                pts = max(round(t_s * 1000.0), self._last_pts_ms + 1)  # strictly increasing
                self._write(b"F" + HDR_F.pack(slot, pts))
                self._last_pts_ms = pts
                self._sent += 1
        except (OSError, ValueError) as exc:  # BrokenPipe: the encoder died (its reason comes via stderr)
            self._fail(self._child_reason() or f"video encoder: {exc}")
        finally:
            # Closing stdin tells the encoder to flush and finish the file.
            try:
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            except OSError:
                pass
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _take_slot(self) -> int | None:
        while not self._failed:
            try:
                return self._free.get(timeout=0.2)
            except queue.Empty:
                if self._proc.poll() is not None:
                    self._fail(self._child_reason() or "video encoder process ended unexpectedly")
        return None

    # -- reader thread: encoder's stdout -> free slots / result / error ---------------------------------

    def _read_loop(self) -> None:
        out = self._proc.stdout
        assert out is not None
        while True:
            kind = out.read(1)
            if not kind:
                break
            if kind == b"A":
                (slot,) = MSG_A.unpack(out.read(MSG_A.size))
                self._written += 1
                self._free.put(slot)
            elif kind == b"D":
                self._done_stats = MSG_D.unpack(out.read(MSG_D.size))
            elif kind == b"E":
                (n,) = MSG_E.unpack(out.read(MSG_E.size))
                self._fail(f"video: {out.read(n).decode(errors='replace')}")
        if self._done_stats is None and not self._failed:
            rc = self._proc.wait()
            self._fail(self._child_reason() or f"video encoder process exited with code {rc}")

    def _child_reason(self) -> str:
        """The last line the encoder wrote to stderr (a Python error), once it has exited."""
        if self._proc.poll() is None:
            return ""
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"video encoder: {text.splitlines()[-1]}" if text else ""

    def _release_shm(self) -> None:
        if self._shm_path is not None:
            with contextlib.suppress(OSError):
                self._shm_path.unlink(missing_ok=True)
        self._slots = np.empty((0, 0, 0, 3), np.uint8)
        if self._shm is not None:
            with contextlib.suppress(BufferError):  # a view still exists; the mapping goes with the process
                self._shm.close()
            self._shm = None

    def _fail(self, message: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._on_error(message)


def _slot_dir(need_bytes: int) -> Path:
    """RAM-backed /dev/shm when it has room (a container's may be 64 MB: writing past its size would
    raise SIGBUS), else the temporary folder (a disk file: the page cache keeps it in memory)."""
    for d in (Path("/dev/shm"), Path(tempfile.gettempdir())):
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize >= 2 * need_bytes:
            return d
    raise OSError(f"no room for {need_bytes / 1e6:.0f} MB of video frame buffers in /dev/shm or "
                  f"{tempfile.gettempdir()}")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The encoder process must import this very package (a source checkout may not be installed).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
