"""The session recorder: a pipeline ``Sink`` that writes a crash-safe session folder.

``consume`` (processing thread) only labels the frame with the protocol and hands it to two worker
threads through bounded queues: the video encoder (``video.py``) and the table writer below, which
writes a new Parquet chunk at least every ``chunk_interval_s`` (default 0.5 s) and keeps the manifest
current. Audio has its own callback and writer thread (``audio.py``). Any write error (disk full, folder
gone or read-only) stops the whole recording with one message (``status()``, log) while the caller's
pipeline keeps running; what was written before stays intact because every file is either atomically
renamed into place or a stream of self-contained pieces.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from realtime import __version__, export
from realtime.camera import Intrinsics
from realtime.errors import BadInputError, OutputError
from realtime.results import FrameResult
from realtime.session import storage
from realtime.session.audio import AudioRecorder, AudioStats, AudioUnavailableError, StreamFactory
from realtime.session.protocol import PromptState, Protocol, ProtocolRunner
from realtime.session.table import SESSION_SCHEMA_VERSION, FrameRecord, QualityThresholds, build_chunk
from realtime.session.video import ENCODER_NICE, FragmentedVideoWriter

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VIDEO = "video.mp4"
AUDIO = "audio.wav"
PROTOCOL_COPY = "protocol.toml"
FRAMES = "frames.parquet"
SESSION_FORMAT = "realtime-face-session"
MANIFEST_VERSION = 1

STATE_RECORDING = "recording"
STATE_STOPPING = "stopping"
STATE_COMPLETE = "complete"
STATE_FAILED = "failed"
STATE_REPAIRED = "repaired"

_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


def check_subject_id(subject: str | None) -> str:
    """A pseudonymous id (letters, digits, '_' '-', up to 32); a random one when none is given."""
    if subject is None or subject == "":
        return "anon-" + secrets.token_hex(3)
    if not _SUBJECT_RE.match(subject):
        raise BadInputError(f"subject id {subject!r} must be 1-32 letters, digits, '_' or '-' "
                            "(a pseudonym, never a name)")
    return subject


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class RecorderConfig:
    out_dir: Path
    """Parent folder; the session folder ``<subject>_<UTC time>`` is created inside it."""
    subject_id: str | None = None
    protocol: Protocol | None = None
    audio: bool = True
    audio_stream_factory: StreamFactory | None = None
    audio_samplerate: int = 48_000
    intrinsics: Intrinsics | None = None
    source: str = ""
    """Where the frames come from (``camera:0``, a file name): for the manifest."""
    video_codec: str | None = None
    video_queue_frames: int = 15
    video_backpressure: bool = False
    """Wait for the encoder instead of dropping frames (files processed as fast as possible: nothing is
    live, so the encoder may set the pace). Keep False for cameras and ``--realtime``."""
    video_threads: int = 1
    video_preset: str = "ultrafast"
    """libx264 preset: ultrafast costs ~5 ms of one core per 720p frame (superfast ~6.5 ms, 35 % smaller)."""
    video_nice: int = ENCODER_NICE
    """Niceness increment of the encoder process: below the live pipeline, so that on a loaded machine the
    encoder waits (its shared-memory slots hold ~1.6 s of frames) rather than the live view."""
    chunk_interval_s: float = 0.5
    manifest_interval_s: float = 2.0
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    columns: Sequence[export.Column] | None = None
    """Tracking/fit columns of the frame table (default ``export.frame_columns`` of the frame's stages);
    the recorder appends its session columns."""
    folder_name: str | None = None
    """Exact session folder name (default ``<subject>_<YYYYmmddTHHMMSS>Z``)."""


@dataclass(frozen=True, slots=True)
class RecorderStatus:
    state: str
    folder: Path
    frames: int
    elapsed_s: float
    message: str
    """Why the recording stopped (empty while it runs and after a clean stop)."""
    prompt: PromptState | None


class SessionRecorder:
    """Records one session into a new folder from the frames it consumes (a pipeline ``Sink``)."""

    def __init__(self, config: RecorderConfig) -> None:
        self.config = config
        self.subject_id = check_subject_id(config.subject_id)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        base = config.folder_name or f"{self.subject_id}_{stamp}"
        self.folder = Path(config.out_dir) / base
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            for n in range(2, 100):
                try:
                    self.folder.mkdir(exist_ok=False)
                    break
                except FileExistsError:
                    if config.folder_name:  # an explicit name is never replaced by another
                        raise OutputError(f"session folder already exists: {self.folder}") from None
                    self.folder = Path(config.out_dir) / f"{base}-{n}"  # two starts within a second
            (self.folder / storage.CHUNK_DIR).mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create session folder {self.folder}: {exc.strerror or exc}") from None
        self.runner = ProtocolRunner(config.protocol) if config.protocol else None
        self._lock = threading.Lock()
        self._state = STATE_RECORDING
        self._message = ""
        self._frames = 0
        self._t0_media: float | None = None
        self._clock_origin = time.perf_counter()
        self._last_prompt: PromptState | None = None
        self._last_phase_key: tuple[int, int, str] | None = None
        self._closed = False
        self._finished = False
        self._first_shape: tuple[int, int] | None = None
        self._first_capture = 0.0
        self._last_t = 0.0
        self._stage_names: tuple[str, ...] = ()
        self._manifest: dict[str, Any] = self._initial_manifest()
        try:
            if config.protocol is not None:
                with storage.atomic_path(self.folder / PROTOCOL_COPY) as tmp:
                    tmp.write_text(config.protocol.source_text, encoding="utf-8")
            storage.write_json_atomic(self.folder / MANIFEST, self._manifest)
        except OSError as exc:
            raise OutputError(f"cannot write to session folder {self.folder}: {exc.strerror or exc}"
                              ) from None
        self._video = FragmentedVideoWriter(self.folder / VIDEO, self._fail, codec=config.video_codec,
                                            queue_frames=config.video_queue_frames,
                                            threads=config.video_threads, preset=config.video_preset,
                                            nice=config.video_nice)
        self._audio: AudioRecorder | None = None
        if config.audio:
            self._audio = AudioRecorder(self.folder / AUDIO, self._fail, samplerate=config.audio_samplerate,
                                        stream_factory=config.audio_stream_factory)
            try:
                self._audio.start()
            except AudioUnavailableError as exc:
                log.warning("recording without audio: %s", exc)
                self._manifest["audio"] = {"recorded": False, "reason": str(exc)}
                self._audio = None
                with contextlib.suppress(OSError):
                    (self.folder / AUDIO).unlink(missing_ok=True)
        self._rows: queue.Queue[FrameRecord | None] = queue.Queue(maxsize=600)
        self._table_thread = threading.Thread(target=self._table_loop, name="session-table", daemon=True)
        self._table_thread.start()
        log.info("recording session %s", self.folder)

    # -- manifest ---------------------------------------------------------------------------------

    def _initial_manifest(self) -> dict[str, Any]:
        cfg = self.config
        proto = cfg.protocol
        return {
            "format": SESSION_FORMAT,
            "manifest_version": MANIFEST_VERSION,
            "session_schema_version": SESSION_SCHEMA_VERSION,
            "software": {"name": "realtime-face", "version": __version__, "python": platform.python_version(),
                         "platform": platform.platform()},
            "subject_id": self.subject_id,
            "status": STATE_RECORDING,
            "error": None,
            "started_utc": utc_now(),
            "stopped_utc": None,
            "duration_s": 0.0,
            "camera": {"source": cfg.source, "width": None, "height": None,
                       "intrinsics": cfg.intrinsics.to_dict() if cfg.intrinsics else None},
            "protocol": None if proto is None else {
                "name": proto.name, "title": proto.title, "file": PROTOCOL_COPY, "sha256": proto.sha256,
                "duration_s": proto.duration_s, "exercises": [e.id for e in proto.exercises],
                "completed": False},
            "clock": {"name": "time.perf_counter",
                      "video": "session_time_s = frame timestamp - first frame timestamp (video pts)",
                      "capture_origin_s": self._clock_origin},
            "video": {"file": VIDEO, "container": "mp4 (fragmented)", "codec": None, "frames_written": 0,
                      "frames_dropped": 0},
            "audio": {"recorded": False, "reason": None if cfg.audio else "disabled"},
            "frames": {"file": FRAMES, "chunks": storage.CHUNK_DIR, "count": 0, "finalized": False},
            "quality_thresholds": cfg.thresholds.to_dict(),
            "host": {"cpu_count": os.cpu_count()},
        }

    def _write_manifest(self) -> None:
        with self._lock:
            snapshot = _deep_copy(self._manifest)
        storage.write_json_atomic(self.folder / MANIFEST, snapshot)

    # -- Sink ---------------------------------------------------------------------------------------

    def consume(self, result: FrameResult) -> None:
        if self._state != STATE_RECORDING or self._finished:
            return
        frame = result.frame
        if self._t0_media is None:
            self._t0_media = frame.timestamp_s
            self._first_shape = (frame.width, frame.height)
            self._first_capture = frame.capture_time_s
            self._stage_names = tuple(result.timings_ms)
        t = frame.timestamp_s - self._t0_media
        prompt = self.runner.prompt_at(t) if self.runner else None
        if prompt is not None:
            self._log_prompt(prompt)
            if prompt.done:
                self._finished = True
                return
        written = self._video.put(frame.image, t, block=self.config.video_backpressure)
        record = FrameRecord(result, t, frame.capture_time_s - self._clock_origin, prompt, written)
        try:
            self._rows.put_nowait(record)
        except queue.Full:  # the table writer is hundreds of frames behind: the disk is stalled
            self._fail("table writer stalled (disk not keeping up)")
            return
        self._frames += 1
        self._last_t = t
        self._last_prompt = prompt

    def _log_prompt(self, prompt: PromptState) -> None:
        key = (prompt.exercise_index, prompt.repetition, prompt.phase)
        if key != self._last_phase_key:
            self._last_phase_key = key
            log.info("[%5.1f s] %s", prompt.t_s, prompt.text())

    @property
    def finished(self) -> bool:
        """True once the protocol is complete (the recorder then ignores further frames)."""
        return self._finished

    @property
    def failed(self) -> bool:
        return self._state == STATE_FAILED

    def status(self) -> RecorderStatus:
        return RecorderStatus(self._state, self.folder, self._frames, self._last_t, self._message,
                              self._last_prompt)

    def prompt(self) -> PromptState | None:
        """The prompt for the newest recorded frame (for the window HUD)."""
        return self._last_prompt

    # -- failure ------------------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._state == STATE_FAILED:
                return
            self._state = STATE_FAILED
            self._message = f"recording stopped: {message}"
            self._manifest["status"] = STATE_FAILED
            self._manifest["error"] = message
        log.error("%s (live view continues; data so far is kept in %s)", self._message, self.folder)

    # -- table writer -------------------------------------------------------------------------------

    def _table_loop(self) -> None:
        pending: list[FrameRecord] = []
        chunk_index = 0
        last_chunk = time.perf_counter()
        last_manifest = last_chunk
        stop = False
        while not stop:
            timeout = max(0.01, self.config.chunk_interval_s - (time.perf_counter() - last_chunk))
            try:
                item = self._rows.get(timeout=timeout)
                if item is None:
                    stop = True
                elif self._state != STATE_FAILED:
                    pending.append(item)
            except queue.Empty:
                pass
            now = time.perf_counter()
            if self._state == STATE_FAILED:
                pending.clear()
                continue
            if pending and (stop or now - last_chunk >= self.config.chunk_interval_s):
                try:
                    table = build_chunk(pending, self.config.thresholds, self._columns())
                    storage.write_parquet_atomic(storage.chunk_path(self.folder, chunk_index), table)
                except OSError as exc:
                    self._fail(f"frame table: {exc.strerror or exc}")
                    continue
                chunk_index += 1
                with self._lock:
                    self._manifest["frames"]["count"] += len(pending)
                    self._manifest["frames"]["chunk_count"] = chunk_index
                    self._manifest["duration_s"] = round(pending[-1].session_time_s, 3)
                pending = []
                last_chunk = now
            elif not pending:
                last_chunk = now
            if now - last_manifest >= self.config.manifest_interval_s:
                last_manifest = now
                self._refresh_manifest_stats()
                try:
                    self._write_manifest()
                except OSError as exc:
                    self._fail(f"manifest: {exc.strerror or exc}")

    def _columns(self) -> Sequence[export.Column]:
        if self.config.columns is None:
            self.config.columns = export.frame_columns(self._stage_names)
        return self.config.columns

    def _refresh_manifest_stats(self) -> None:
        with self._lock:
            m = self._manifest
            if self._first_shape is not None:
                m["camera"]["width"], m["camera"]["height"] = self._first_shape
            m["video"]["codec"] = self._video.codec
            m["video"]["frames_dropped"] = self._video.frames_dropped
            if self._audio is not None:
                m["audio"] = self._audio_manifest(self._audio.stats())
            if self.runner is not None and self._last_prompt is not None:
                m["protocol"]["completed"] = self._finished
                m["protocol"]["last_exercise"] = self._last_prompt.exercise_id or None

    def _audio_manifest(self, audio: AudioStats) -> dict[str, Any]:
        offset = None
        if audio.first_sample_clock_s is not None and self._t0_media is not None:
            offset = round(audio.first_sample_clock_s - self._first_capture, 6)
        return {"recorded": True, "file": AUDIO, "samplerate": audio.samplerate, "channels": audio.channels,
                "sample_format": "s16le", "samples": audio.samples_written,
                "blocks_dropped": audio.blocks_dropped, "measured_rate_hz": audio.measured_rate_hz,
                "offset_s": offset,
                "offset_definition": "audio sample n is at session_time_s = offset_s + n / samplerate "
                                     "(audio blocks and video frames stamped with time.perf_counter)"}

    # -- shutdown -----------------------------------------------------------------------------------

    def close(self) -> RecorderStatus:
        """Stop, flush everything, merge the chunks into ``frames.parquet`` and mark the manifest."""
        if self._closed:
            return self.status()
        self._closed = True
        was_failed = self._state == STATE_FAILED
        with self._lock:
            if self._state == STATE_RECORDING:
                self._state = STATE_STOPPING  # consume() ignores frames from now on
        video = self._video.close()
        audio = self._audio.close() if self._audio is not None else None
        self._rows.put(None)
        self._table_thread.join()
        self._refresh_manifest_stats()
        with self._lock:
            m = self._manifest
            m["stopped_utc"] = utc_now()
            m["video"].update(codec=video.codec, width=video.width, height=video.height,
                              frames_written=video.frames_written, frames_dropped=video.frames_dropped,
                              last_pts_s=video.last_pts_s)
            if audio is not None:
                m["audio"] = self._audio_manifest(audio)
        if self._state != STATE_FAILED:
            try:
                merged = merge_chunks(self.folder)
                with self._lock:
                    self._manifest["frames"].update(finalized=True, count=merged)
                    self._manifest["status"] = STATE_COMPLETE
                    self._state = STATE_COMPLETE
            except OSError as exc:
                self._fail(f"finalising the frame table: {exc.strerror or exc}")
        try:
            self._write_manifest()
        except OSError as exc:
            if not was_failed:
                self._fail(f"manifest: {exc.strerror or exc}")
        st = self.status()
        if st.state == STATE_COMPLETE:
            log.info("session complete: %s (%d frames)", self.folder, st.frames)
        return st

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_chunks(folder: Path) -> int:
    """Write ``frames.parquet`` from the chunks (atomically), then remove the chunks. Returns the rows."""
    chunks = storage.list_chunks(folder)
    final = folder / FRAMES
    if final.is_file():
        # frames.parquet is only ever renamed into place complete, after all chunks were written:
        # leftover chunks are from a stop interrupted between the rename and their removal.
        shutil.rmtree(folder / storage.CHUNK_DIR, ignore_errors=True)
        return int(pq.ParquetFile(final).metadata.num_rows)
    table, problems = storage.read_chunks(chunks)
    if problems:
        # Never delete data we could not read: leave the chunks for inspection and report.
        raise OSError(f"unreadable frame chunk(s): {'; '.join(problems)}")
    if table is None:
        return 0
    storage.write_parquet_atomic(final, table)
    shutil.rmtree(folder / storage.CHUNK_DIR, ignore_errors=True)
    return table.num_rows


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(d)
