"""Microphone capture for a session (optional): sounddevice in, crash-safe 16-bit WAV out.

The PortAudio callback stamps every block with the time its first sample hit the converter, on the
session's clock (``time.perf_counter``, the clock frames are stamped with in ``Frame.capture_time_s``),
and hands it to a writer thread through a bounded queue. The writer appends to ``audio.wav`` and patches
the RIFF sizes at every flush (at least every ``flush_s``), so a killed process leaves a WAV that plays up
to the last flush; ``repair`` fixes the header to the bytes actually on disk.

The input stream is injectable (``stream_factory``) so the path is tested without a sound card.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

Callback = Callable[[np.ndarray, int, Any, Any], None]


class InputStream(Protocol):
    """The part of ``sounddevice.InputStream`` the recorder uses."""

    samplerate: float

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


StreamFactory = Callable[[int, int, Callback], InputStream]
"""(samplerate, channels, callback) -> an unstarted input stream calling ``callback(indata, frames,
time_info, status)`` with int16 ``indata`` of shape (frames, channels)."""


class AudioUnavailableError(RuntimeError):
    """No usable input device (the session records without audio)."""


def sounddevice_stream(samplerate: int, channels: int, callback: Callback) -> InputStream:
    try:
        import sounddevice as sd
    except OSError as exc:  # PortAudio library missing
        raise AudioUnavailableError(f"PortAudio not available: {exc}") from None
    rates = [samplerate]
    try:  # a device that cannot do the asked rate is opened at its own default rate
        default = int(sd.query_devices(kind="input")["default_samplerate"])
        if default != samplerate:
            rates.append(default)
    except Exception as exc:  # no input device at all
        raise AudioUnavailableError(f"no audio input: {exc}") from None
    error: Exception | None = None
    for rate in rates:
        try:
            stream: InputStream = sd.InputStream(samplerate=rate, channels=channels, dtype="int16",
                                                 callback=callback, latency="low")
            return stream
        except Exception as exc:  # sd.PortAudioError (unsupported rate), ValueError
            error = exc
    raise AudioUnavailableError(f"no audio input: {error}")


@dataclass(slots=True)
class AudioStats:
    samplerate: int
    channels: int
    samples_written: int
    first_sample_clock_s: float | None
    """``time.perf_counter()`` value of the first recorded sample (its ADC time)."""
    last_block_clock_s: float | None
    blocks_dropped: int
    measured_rate_hz: float | None
    """Samples per second of the session clock (drift check against ``samplerate``)."""


class AudioRecorder:
    def __init__(self, path: Path, on_error: Callable[[str], None], samplerate: int = 48_000,
                 channels: int = 1, stream_factory: StreamFactory | None = None, flush_s: float = 0.5,
                 queue_blocks: int = 256) -> None:
        self.path = path
        self.samplerate = samplerate
        self.channels = channels
        self._on_error = on_error
        self._flush_s = flush_s
        self._queue: queue.Queue[tuple[float, np.ndarray] | None] = queue.Queue(maxsize=queue_blocks)
        self._factory = stream_factory or sounddevice_stream
        self._stream: InputStream | None = None
        self._thread: threading.Thread | None = None
        self._dropped = 0
        self._written = 0
        self._first: float | None = None
        self._last: float | None = None
        self._failed = False
        self._stopping = False
        self._received = 0
        self._before_last = 0

    def start(self) -> None:
        """Open the device and the file; raises ``AudioUnavailableError`` when there is no input."""
        self._stream = self._factory(self.samplerate, self.channels, self._callback)
        rate = round(float(getattr(self._stream, "samplerate", self.samplerate)))
        self.samplerate = rate
        self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 (closed by the writer thread)
        self._wav.setnchannels(self.channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._thread = threading.Thread(target=self._run, name="session-audio", daemon=True)
        self._thread.start()
        try:
            self._stream.start()
        except Exception as exc:
            self.close()
            raise AudioUnavailableError(f"cannot start audio input: {exc}") from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: stamp and hand off, nothing else.
        now = time.perf_counter()
        adc = now
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            # Both times are on PortAudio's stream clock: their difference is the input latency.
            adc = now - max(0.0, float(time_info.currentTime) - float(time_info.inputBufferAdcTime))
        try:
            self._queue.put_nowait((adc, np.array(indata, dtype=np.int16, copy=True)))
        except queue.Full:
            self._dropped += 1

    def _run(self) -> None:
        pending: list[np.ndarray] = []
        last_flush = time.perf_counter()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._flush_s / 2)
                except queue.Empty:
                    item = None if self._stopping else (0.0, np.empty((0, self.channels), np.int16))
                if item is None:
                    break
                t, block = item
                if len(block):
                    if self._first is None:
                        self._first = t
                    self._last = t
                    self._before_last = self._received
                    self._received += len(block)
                    pending.append(block)
                if pending and time.perf_counter() - last_flush >= self._flush_s:
                    self._write(pending)
                    pending = []
                    last_flush = time.perf_counter()
            if pending:
                self._write(pending)
        except Exception as exc:  # OSError: disk full / unwritable
            self._failed = True
            self._on_error(f"audio: {exc}")
        finally:
            try:
                self._wav.close()
            except Exception as exc:
                log.debug("closing audio.wav failed: %s", exc)

    def _write(self, blocks: list[np.ndarray]) -> None:
        data = np.concatenate(blocks).astype("<i2", copy=False)
        # writeframes patches the RIFF/data sizes in the header, then we push it to the OS.
        self._wav.writeframes(data.tobytes())
        fp = self._wav._file  # type: ignore[attr-defined]
        fp.flush()
        self._written += len(data)

    def close(self) -> AudioStats:
        if self._stream is not None:
            for op in (self._stream.stop, self._stream.close):
                try:
                    op()
                except Exception as exc:
                    log.debug("audio stream %s failed: %s", op.__name__, exc)
            self._stream = None
        if self._thread is not None:
            self._stopping = True
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            self._thread.join(10.0)
            self._thread = None
        return self.stats()

    def stats(self) -> AudioStats:
        rate = None
        first, last = self._first, self._last
        if first is not None and last is not None and last - first > 1.0:
            # samples received before the last block span exactly first -> last on the session clock
            rate = self._before_last / (last - first)
        return AudioStats(self.samplerate, self.channels, self._written, first, last, self._dropped, rate)
