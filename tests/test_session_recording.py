"""Session recording on real frames (MediaPipe on the talking-head video): folder contents, labels, video,
audio through an injected input stream, and write failures (disk full, folder gone) mid-recording."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.capture import ArraySource
from realtime.landmarks import LandmarkStage
from realtime.pipeline import Pipeline
from realtime.results import FrameResult
from realtime.session import load_session
from realtime.session.controller import RecordingController, free_recording_sink
from realtime.session.protocol import load_protocol
from realtime.session.recorder import RecorderConfig, SessionRecorder
from realtime.session.repair import check_video, fix_wav_header, repair_session
from realtime.session.storage import list_chunks

N_FRAMES = 45


@pytest.fixture(scope="module")
def frames(talking_video: Path) -> list[np.ndarray]:
    with av.open(str(talking_video)) as c:
        decoded = zip(range(N_FRAMES), c.decode(video=0), strict=False)
        return [f.to_ndarray(format="rgb24") for _, f in decoded]


@pytest.fixture(scope="module")
def landmark_stage() -> Iterator[LandmarkStage]:
    stage = LandmarkStage()
    yield stage
    stage.close()


class _KeepOpen:
    """Wraps the shared stage so the pipeline's close() does not close it."""

    def __init__(self, stage: LandmarkStage) -> None:
        self.stage = stage
        self.name = stage.name

    def process(self, result: FrameResult) -> None:
        self.stage.process(result)

    def close(self) -> None:
        pass


class FakeInputStream:
    """Stands in for ``sounddevice.InputStream``: a 440 Hz tone in 10 ms blocks from its own thread, with
    PortAudio-style time info (20 ms input latency)."""

    def __init__(self, samplerate: int, channels: int, callback: Any) -> None:
        self.samplerate = float(samplerate)
        self.channels = channels
        self.callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latency_s = 0.02
        self.first_block_time: float | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        block = int(self.samplerate) // 100
        n = 0
        t0 = time.perf_counter()
        while not self._stop.is_set():
            idx = np.arange(n, n + block)
            tone = (8000 * np.sin(2 * np.pi * 440.0 * idx / self.samplerate)).astype(np.int16)
            now = time.perf_counter()
            info = SimpleNamespace(currentTime=now, inputBufferAdcTime=now - self.latency_s)
            if self.first_block_time is None:
                self.first_block_time = now
            self.callback(np.repeat(tone[:, None], self.channels, 1), block, info, None)
            n += block
            # real-time pacing: the next block is due when its samples have been "captured"
            time.sleep(max(0.0, t0 + n / self.samplerate - time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def close(self) -> None:
        self.stop()


def _record(frames: list[np.ndarray], stage: LandmarkStage, config: RecorderConfig,
            extra_sinks: tuple[Any, ...] = (), fps: float = 30.0) -> tuple[SessionRecorder, Any]:
    recorder = SessionRecorder(config)
    with Pipeline(ArraySource(frames, fps=fps), [_KeepOpen(stage)], [recorder, *extra_sinks]) as pipe:
        stats = pipe.run()
    return recorder, stats


def test_recording_writes_a_complete_session(tmp_path: Path, frames: list[np.ndarray],
                                              landmark_stage: LandmarkStage) -> None:
    protocol = load_protocol("palsy-basic")
    # frames come as fast as MediaPipe goes: let the encoder set the pace (as `record` does for files)
    config = RecorderConfig(tmp_path, subject_id="P-007", protocol=protocol, audio=False,
                            source="talking_720p.mp4", video_backpressure=True)
    rec, stats = _record(frames, landmark_stage, config)
    assert stats.frames == N_FRAMES
    st = rec.status()
    assert st.state == "complete" and st.frames == N_FRAMES and not st.message
    folder = rec.folder
    assert folder.parent == tmp_path and folder.name.startswith("P-007_")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["frames.parquet", "manifest.json", "protocol.toml", "video.mp4"], files

    s = load_session(folder)
    assert s.complete and s.finalized and s.subject_id == "P-007"
    assert s.num_frames == N_FRAMES
    t = s.frames["session_time_s"].to_numpy()
    assert t[0] == 0.0 and np.allclose(np.diff(t), 1 / 30.0)
    # labels: 45 frames at 30 fps = 1.5 s, all inside "rest"/prepare of palsy-basic
    assert set(s.frames["exercise"].to_pylist()) == {"rest"}
    assert set(s.frames["phase"].to_pylist()) == {"prepare"}
    assert s.frames["face_found"].to_pylist() == [True] * N_FRAMES  # real MediaPipe on a frontal face
    lm = s.frames["landmarks_px"].to_numpy(zero_copy_only=False)
    assert np.isfinite(np.stack(lm)).all()
    # no fit stage here: the quality flags say so
    assert s.frames["q_no_fit"].to_pylist() == [True] * N_FRAMES
    assert not any(s.frames["quality_ok"].to_pylist())
    m = s.manifest
    assert m["status"] == "complete" and m["stopped_utc"] and m["frames"]["count"] == N_FRAMES
    assert m["camera"]["width"] == 1280 and m["camera"]["height"] == 720
    assert m["protocol"]["name"] == "palsy-basic" and m["protocol"]["sha256"] == protocol.sha256
    assert (m["video"]["frames_written"], m["video"]["frames_dropped"]) == (N_FRAMES, 0), m["video"]
    assert s.protocol is not None
    assert [e.id for e in s.protocol.exercises] == [e.id for e in protocol.exercises]
    # the video decodes with its frames at the session times
    v = check_video(folder / "video.mp4")
    assert v.error is None and v.frames == N_FRAMES, v
    with av.open(str(folder / "video.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 6.0  # same picture (lossy)


def test_protocol_labels_follow_the_timeline(tmp_path: Path, frames: list[np.ndarray],
                                             landmark_stage: LandmarkStage) -> None:
    short = ("schema_version = 1\nname = 'short'\n[defaults]\nprepare_s = 0.2\nhold_s = 0.3\nrest_s = 0.2\n"
             "[[exercise]]\nid = 'rest'\nprompt = 'Relax'\nrepetitions = 1\nrest_s = 0\n"
             "[[exercise]]\nid = 'brow_raise'\nprompt = 'Raise'\nrepetitions = 2\n")
    from realtime.session.protocol import parse_protocol

    protocol = parse_protocol(short, "short")
    # 45 frames at 30 fps = 1.5 s; the protocol lasts 0.5 + 0.2 + 2 * 0.5 = 1.7 s
    rec, _ = _record(frames, landmark_stage, RecorderConfig(tmp_path, subject_id="s", protocol=protocol,
                                                            audio=False))
    s = load_session(rec.folder)
    t = s.frames["session_time_s"].to_numpy()
    ex = s.frames["exercise"].to_pylist()
    ph = s.frames["phase"].to_pylist()
    rep = s.frames["repetition"].to_numpy()
    for i in range(len(t)):
        want = ProtocolRunnerCheck.expected(protocol, t[i])
        assert (ex[i], ph[i], rep[i]) == want, (i, t[i])
    hold2 = s.select(exercise="brow_raise", repetition=2, phase="hold")
    # rest 0-0.5 s; brow_raise: prepare 0.5-0.7, hold 0.7-1.0, rest 1.0-1.2, hold 1.2-1.5, rest 1.5-1.7
    assert hold2.num_rows == 9
    assert np.allclose(hold2["session_time_s"].to_numpy(), np.arange(36, 45) / 30.0)


class ProtocolRunnerCheck:
    @staticmethod
    def expected(protocol: Any, t: float) -> tuple[str, str, int]:
        # Independent of the runner: walk the exercises by hand.
        acc = 0.0
        for e in protocol.exercises:
            parts = [("prepare", 0, e.prepare_s)] + [p for r in range(1, e.repetitions + 1)
                                                     for p in (("hold", r, e.hold_s), ("rest", r, e.rest_s))]
            for phase, r, d in parts:
                if d > 0 and acc <= t < acc + d - 1e-12:
                    return e.id, phase, r
                acc += d
        raise AssertionError(f"t={t} outside the protocol")


def test_protocol_end_stops_the_recording(tmp_path: Path, frames: list[np.ndarray],
                                          landmark_stage: LandmarkStage) -> None:
    from realtime.session.protocol import parse_protocol

    protocol = parse_protocol("[[exercise]]\nid = 'rest'\nprompt = 'Relax'\nprepare_s = 0.2\nhold_s = 0.5\n"
                              "rest_s = 0\n", "tiny")
    controller = RecordingController(lambda: RecorderConfig(tmp_path, protocol=protocol, audio=False),
                                     start=True)
    with Pipeline(ArraySource(frames[:40]), [_KeepOpen(landmark_stage)], [controller]) as pipe:
        stats = pipe.run()
    assert stats.frames == 40
    assert len(controller.sessions) == 1
    s = load_session(controller.sessions[0].folder)
    assert s.complete
    assert s.num_frames == 21  # t = 0 .. 0.6667 s; the frame at 0.7 s is "done"
    assert s.manifest["protocol"]["completed"] is True
    assert s.manifest["subject_id"].startswith("anon-")


def test_record_event_toggles_recording(tmp_path: Path, frames: list[np.ndarray],
                                        landmark_stage: LandmarkStage) -> None:
    source = ArraySource(frames[:40])
    stages = [_KeepOpen(landmark_stage)]
    controller = free_recording_sink(source, stages, out_dir=tmp_path)  # what `run` adds for its r key

    class Keys:
        """Posts "record" at frames 5 and 20 like the window's r key (through the pipeline)."""

        def __init__(self) -> None:
            self.n = 0
            self.pipe: Pipeline | None = None

        def consume(self, result: FrameResult) -> None:
            self.n += 1
            if self.n in (5, 20, 30) and self.pipe is not None:
                self.pipe.post_event("record")

        def close(self) -> None:
            pass

    keys = Keys()
    events: list[tuple[int, str]] = []

    class Events:
        def consume(self, result: FrameResult) -> None:
            events.extend((result.frame.index, e) for e in result.events)

        def close(self) -> None:
            pass

    pipe = Pipeline(source, stages, [controller, keys, Events()])
    keys.pipe = pipe
    with pipe:
        pipe.run()
    # started at frame 6 (index 5), stopped at 21, started again at 31 until the end
    assert events == [(5, "record"), (5, "record-started"), (20, "record"), (20, "record-stopped"),
                      (30, "record"), (30, "record-started")]
    assert len(controller.sessions) == 2
    a, b = (load_session(r.folder) for r in controller.sessions)
    assert a.complete and b.complete
    assert a.frames["frame_index"].to_pylist() == list(range(5, 20))
    assert b.frames["frame_index"].to_pylist() == list(range(30, 40))
    assert a.manifest["protocol"] is None and a.frames["exercise"].null_count == a.num_frames
    assert a.intrinsics == Intrinsics.from_fov(1280, 720)
    assert controller.sessions[0].status().elapsed_s == pytest.approx(14 / 30.0)  # frames 5..19


def test_audio_through_an_injected_stream(tmp_path: Path, frames: list[np.ndarray],
                                          landmark_stage: LandmarkStage) -> None:
    streams: list[FakeInputStream] = []

    def factory(rate: int, channels: int, callback: Any) -> FakeInputStream:
        streams.append(FakeInputStream(rate, channels, callback))
        return streams[-1]

    # paced like a camera so audio and video cover the same wall-clock time
    source = ArraySource(frames, fps=30.0)
    recorder = SessionRecorder(RecorderConfig(tmp_path, subject_id="a1", audio=True,
                                              audio_stream_factory=factory, audio_samplerate=16000))
    captured: list[float] = []

    class FirstCapture:
        def consume(self, result: FrameResult) -> None:
            captured.append(result.frame.capture_time_s)

        def close(self) -> None:
            pass

    with Pipeline(source, [_KeepOpen(landmark_stage), _Paced(30.0)], [recorder, FirstCapture()]) as pipe:
        pipe.run()
    s = load_session(recorder.folder)
    a = s.manifest["audio"]
    assert a["recorded"] is True and a["samplerate"] == 16000 and a["channels"] == 1
    assert s.audio_path is not None
    with wave.open(str(s.audio_path)) as w:
        n = w.getnframes()
        data = np.frombuffer(w.readframes(n), np.int16)
    assert n == a["samples"]
    spectrum = np.abs(np.fft.rfft(data[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440.0) <= 1.0
    # One clock: the offset is the first sample's ADC time (callback time minus the reported 20 ms input
    # latency) minus the first frame's capture time, both time.perf_counter().
    first_block = streams[0].first_block_time
    assert first_block is not None
    assert a["offset_s"] == pytest.approx(first_block - 0.02 - captured[0], abs=1e-3)
    # the microphone runs from the recorder's start to its close: it covers every video frame
    t_last = s.frames["session_time_s"].to_numpy()[-1]
    assert a["offset_s"] < 0 and a["offset_s"] + n / 16000 > t_last
    assert a["measured_rate_hz"] is not None and abs(a["measured_rate_hz"] - 16000) < 800


class _Paced:
    """A stage that holds each frame until its time (an ArraySource delivers as fast as possible)."""

    name = "pace"

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.t0: float | None = None

    def process(self, result: FrameResult) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        due = self.t0 + result.frame.timestamp_s
        if due > now:
            time.sleep(due - now)

    def close(self) -> None:
        pass


def test_wav_is_playable_after_a_kill_and_repair_fixes_its_header(tmp_path: Path) -> None:
    from realtime.session.audio import AudioRecorder

    errors: list[str] = []
    path = tmp_path / "audio.wav"
    rec = AudioRecorder(path, errors.append, samplerate=8000,
                        stream_factory=lambda r, c, cb: FakeInputStream(r, c, cb), flush_s=0.2)
    rec.start()
    time.sleep(1.0)
    snapshot = path.read_bytes()  # what a kill -9 leaves on disk at this instant
    rec.close()
    assert not errors
    crashed = tmp_path / "crashed.wav"
    crashed.write_bytes(snapshot + b"\x01\x02\x03")  # plus a partial block the header does not cover
    with wave.open(str(crashed)) as w:
        assert w.getnframes() >= 0.5 * 8000  # everything up to the last flush (<= 0.2 s + a block ago)
    samples, changed = fix_wav_header(crashed)
    assert changed and samples == (len(snapshot) + 3 - 44) // 2
    with wave.open(str(crashed)) as w:
        assert w.getnframes() == samples


# ----------------------------------------------------------------------------- write failures

def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs (real ENOSPC when full); needs root (tests here run as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class _WhenWritten:
    """Once the recorder has written at least two chunks and a decodable piece of video, notes what is on
    disk (rows, video frames) and runs ``action`` (fill the disk / detach the folder)."""

    def __init__(self, recorder: SessionRecorder, action: Any) -> None:
        self.recorder, self.action = recorder, action
        self.before: tuple[int, int] | None = None

    def consume(self, result: FrameResult) -> None:
        if self.before is not None:
            return
        folder = self.recorder.folder
        if len(list_chunks(folder)) < 2:
            return
        # The encoder process may still be starting on a loaded machine: hold the pipeline until it wrote.
        deadline = time.monotonic() + 60.0
        while check_video(folder / "video.mp4").frames < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.before = (load_session(folder).num_frames, check_video(folder / "video.mp4").frames)
        self.action()

    def close(self) -> None:
        pass


def _fill(mnt: Path) -> None:
    """Fill the file system to the last byte (unbuffered writes, so nothing is left to flush at close)."""
    with (mnt / "filler").open("wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def _check_failed_session(folder: Path, recorder: SessionRecorder, stats: Any, trigger: _WhenWritten,
                          n_frames: int, needle: str) -> None:
    assert trigger.before is not None, "the recorder never wrote two chunks"
    rows_before, video_before = trigger.before
    st = recorder.status()
    assert st.state == "failed", st
    assert needle in st.message and st.message.startswith("recording stopped:")
    assert "\n" not in st.message
    assert stats.frames == n_frames  # the live pipeline kept going to the end
    s = load_session(folder)  # still loads: manifest intact, chunks written before the failure intact
    assert s.status in ("failed", "recording")
    assert not s.problems
    assert rows_before <= s.num_frames < n_frames
    assert s.frames["frame_index"].to_pylist() == list(range(s.num_frames))
    assert check_video(folder / "video.mp4").frames >= video_before


def test_disk_full_stops_recording_and_keeps_what_was_written(small_fs: Path, frames: list[np.ndarray],
                                                               landmark_stage: LandmarkStage) -> None:
    many = frames * 3  # 4.5 s at 30 fps: room for the encoder process to start on a busy machine
    recorder = SessionRecorder(RecorderConfig(small_fs, subject_id="full", audio=False))
    trigger = _WhenWritten(recorder, lambda: _fill(small_fs))
    with Pipeline(ArraySource(many), [_KeepOpen(landmark_stage), _Paced(30.0)], [recorder, trigger]) as pipe:
        stats = pipe.run()
    (small_fs / "filler").unlink()  # free space again: the folder must still be readable as it was
    _check_failed_session(recorder.folder, recorder, stats, trigger, len(many), "No space left on device")
    rows = load_session(recorder.folder).num_frames
    assert json.loads((recorder.folder / "manifest.json").read_text())["format"] == "realtime-face-session"
    # repair finalises it afterwards
    report = repair_session(recorder.folder)
    assert report.rows == rows and (recorder.folder / "frames.parquet").is_file()
    assert load_session(recorder.folder).status == "repaired"


def test_folder_gone_stops_recording_and_keeps_what_was_written(tmp_path: Path, frames: list[np.ndarray],
                                                                 landmark_stage: LandmarkStage) -> None:
    # The session folder lives on a bind mount that is detached mid-recording (like a drive unplugged):
    # the path stops existing for new files; what was written stays in the underlying folder.
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    store.mkdir()
    mnt.mkdir()
    try:
        _mount("--bind", str(store), str(mnt))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here: {exc}")
    many = frames * 3
    try:
        recorder = SessionRecorder(RecorderConfig(mnt, subject_id="gone", audio=False))
        trigger = _WhenWritten(recorder, lambda: subprocess.run(["umount", "-l", str(mnt)], check=True))
        stages = [_KeepOpen(landmark_stage), _Paced(30.0)]
        with Pipeline(ArraySource(many), stages, [recorder, trigger]) as pipe:
            stats = pipe.run()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
    folder = store / recorder.folder.name
    _check_failed_session(folder, recorder, stats, trigger, len(many), "No such file or directory")


def test_unwritable_output_folder_is_one_line_error(tmp_path: Path) -> None:
    from realtime.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create session folder"):
        SessionRecorder(RecorderConfig(blocker / "sessions", audio=False))


def test_subject_id_must_be_a_pseudonym() -> None:
    from realtime.errors import BadInputError
    from realtime.session.recorder import check_subject_id

    assert check_subject_id("P-001") == "P-001"
    assert check_subject_id(None).startswith("anon-")
    for bad in ("Jane Doe", "../x", "a" * 40, "é"):
        with pytest.raises(BadInputError):
            check_subject_id(bad)



def test_encoder_process_ends_the_file_cleanly_on_sigterm(tmp_path: Path, frames: list[np.ndarray]) -> None:
    import signal

    from realtime.session.video import FragmentedVideoWriter

    errors: list[str] = []
    writer = FragmentedVideoWriter(tmp_path / "v.mp4", errors.append)
    for i, image in enumerate(frames[:30]):
        assert writer.put(image, i / 30.0, block=True)
    deadline = time.monotonic() + 60
    while writer._written < 30 and time.monotonic() < deadline:  # acknowledged = copied by the encoder
        time.sleep(0.05)
    writer._proc.send_signal(signal.SIGTERM)
    writer._proc.wait(30)
    stats = writer.close()
    assert writer._proc.returncode == 0
    v = check_video(tmp_path / "v.mp4")
    assert v.error is None and v.frames == 30 and stats.frames_dropped == 0


def test_encoder_killed_stops_the_recording_with_a_message(tmp_path: Path, frames: list[np.ndarray],
                                                           landmark_stage: LandmarkStage) -> None:
    controller = RecordingController(lambda: RecorderConfig(tmp_path, subject_id="k", audio=False),
                                     start=True)
    events: list[str] = []
    hud: list[list[str]] = []

    class KillEncoder:
        n = 0

        def consume(self, result: FrameResult) -> None:
            self.n += 1
            events.extend(result.events)
            if self.n == 10:
                controller.sessions[0]._video._proc.kill()
            hud.append(controller.hud_lines())

        def close(self) -> None:
            pass

    with Pipeline(ArraySource(frames), [_KeepOpen(landmark_stage), _Paced(30.0)],
                  [controller, KillEncoder()]) as pipe:
        stats = pipe.run()
    assert stats.frames == N_FRAMES  # the live view went on
    assert events == ["record-started", "record-failed"]
    assert hud[0][0].startswith("● REC")
    assert any("recording stopped: video encoder" in line for line in hud[-1])
    recorder = controller.sessions[0]
    st = recorder.status()
    assert st.state == "failed" and "video encoder" in st.message, st.message
    s = load_session(recorder.folder)
    assert s.status == "failed" and s.manifest["error"] and "video encoder" in s.manifest["error"]


def test_two_sessions_in_the_same_second_get_distinct_folders(tmp_path: Path) -> None:
    from realtime.errors import OutputError

    a = SessionRecorder(RecorderConfig(tmp_path, subject_id="same", audio=False, folder_name=None))
    b = SessionRecorder(RecorderConfig(tmp_path, subject_id="same", audio=False))
    try:
        assert a.folder != b.folder
        if a.folder.name.split("_")[1] == b.folder.name.split("_")[1].split("-")[0]:
            assert b.folder.name == a.folder.name + "-2"
        with pytest.raises(OutputError, match="already exists"):
            SessionRecorder(RecorderConfig(tmp_path, audio=False, folder_name=a.folder.name))
    finally:
        a.close()
        b.close()
    assert load_session(a.folder).complete and load_session(b.folder).num_frames == 0


def test_default_microphone_is_optional(tmp_path: Path, frames: list[np.ndarray],
                                        landmark_stage: LandmarkStage) -> None:
    """With sounddevice's real input: this machine has no audio device, so the session records without
    audio and says why; where a microphone exists, it is recorded."""
    rec, _ = _record(frames[:10], landmark_stage, RecorderConfig(tmp_path, subject_id="mic", audio=True))
    s = load_session(rec.folder)
    assert s.complete and s.num_frames == 10
    a = s.manifest["audio"]
    if a["recorded"]:
        assert s.audio_path is not None and a["samples"] > 0
    else:
        assert a["reason"] and s.audio_path is None
        assert "audio" in a["reason"] or "PortAudio" in a["reason"]


def test_a_slow_encoder_drops_and_counts_frames_instead_of_blocking(tmp_path: Path,
                                                                   frames: list[np.ndarray]) -> None:
    from realtime.session.video import FragmentedVideoWriter

    writer = FragmentedVideoWriter(tmp_path / "v.mp4", pytest.fail, queue_frames=2, slots=8)
    t0 = time.perf_counter()
    accepted = [writer.put(frames[i % N_FRAMES], i / 30.0) for i in range(60)]  # a burst, no waiting
    put_s = time.perf_counter() - t0
    stats = writer.close()
    assert put_s < 0.5  # never waited for the encoder
    assert stats.frames_dropped == accepted.count(False) > 0
    assert stats.frames_written == accepted.count(True) == 60 - stats.frames_dropped
    assert check_video(tmp_path / "v.mp4").frames == stats.frames_written
