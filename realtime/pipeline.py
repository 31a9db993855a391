"""Stage orchestration: a source (own decode thread) feeding stages and sinks on one processing thread.

Threads exist only at stage boundaries: the source decodes on its producer thread and hands frames over
through a bounded hand-off (see ``realtime.capture``); all stages and sinks run on the processing thread
(the caller's thread for ``run()``, a background thread for ``start()``); slow sinks own their own worker
with a bounded queue. A UI reads ``latest()`` at its own cadence and sends ``post_event()``s back.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from realtime.capture import FrameSource
from realtime.errors import UserError
from realtime.results import FrameResult

log = logging.getLogger(__name__)

TIMING_WINDOW = 20_000
"""Per-stage timings kept for the percentiles (a long camera session keeps the most recent ones)."""
POLL_S = 0.05
"""How often a waiting processing thread checks for ``stop()``."""


@contextlib.contextmanager
def interrupt_on_termination() -> Iterator[None]:
    """Within this block SIGTERM and SIGHUP act like Ctrl+C (``KeyboardInterrupt`` in the main thread).

    A run stopped by ``kill`` or a closed terminal then unwinds like an interrupted one: the pipeline
    closes its sinks, so the table and the video written so far are complete files. Does nothing when
    called off the main thread (only the main thread may set signal handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        for s in wanted:  # once: a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, interrupt) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@runtime_checkable
class Stage(Protocol):
    """A per-frame processing step; runs on the processing thread."""

    name: str

    def process(self, result: FrameResult) -> None:
        """Fill this stage's own fields of ``result`` and ``result.timings_ms[self.name]``."""

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """A consumer of finished results, called on the processing thread; must return quickly."""

    def consume(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


@dataclass
class TimingSummary:
    count: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float


class _Timings:
    """Bounded per-key timing history (milliseconds)."""

    def __init__(self) -> None:
        self._data: dict[str, deque[float]] = {}

    def add(self, key: str, ms: float) -> None:
        d = self._data.get(key)
        if d is None:
            d = self._data[key] = deque(maxlen=TIMING_WINDOW)
        d.append(ms)

    def summary(self) -> dict[str, TimingSummary]:
        out = {}
        for key, values in list(self._data.items()):
            s = summarize(values.copy())  # deque.copy() runs under the GIL: safe while others append
            if s is not None:
                out[key] = s
        return out


def summarize(values_ms: Sequence[float]) -> TimingSummary | None:
    a = np.asarray(values_ms, dtype=np.float64)
    if not a.size:
        return None
    return TimingSummary(
        count=int(a.size),
        median_ms=float(np.median(a)),
        p95_ms=float(np.percentile(a, 95)),
        mean_ms=float(a.mean()),
        max_ms=float(a.max()),
    )


@dataclass
class PipelineStats:
    frames: int = 0
    """Frames processed by every stage and handed to the sinks."""
    dropped: int = 0
    """Frames the latest-frame hand-off dropped because processing was busy."""
    decoded: int = 0
    """Frames the source delivered (processed + dropped + not taken when stopped)."""
    frames_with_face: int = 0
    wall_s: float = 0.0
    """From the first frame received to the last one finished."""
    stages: dict[str, TimingSummary] = field(default_factory=dict)
    """Per-stage timings (``timings_ms`` keys) plus ``decode`` (on the decode thread), ``frame`` (all
    stages + sinks on the processing thread), ``cycle`` (one frame finished to the next, i.e. everything
    the processing thread does per frame including the hand-off and any wait for the source) and
    ``latency`` (capture to finished, including waits)."""
    stopped: bool = False
    """True when ``stop()`` or ``max_frames`` ended the run before the source ended."""
    source_error: UserError | None = None
    """Why the source ended early (truncated file, lost camera); the frames before it were processed."""

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "decoded": self.decoded,
            "frames_with_face": self.frames_with_face,
            "wall_s": self.wall_s,
            "fps": self.fps,
            "stopped": self.stopped,
            "source_error": str(self.source_error) if self.source_error else None,
            "stages": {k: vars(v) for k, v in self.stages.items()},
        }


class Pipeline:
    """Runs ``stages`` then ``sinks`` on each frame of ``source``. A context manager that closes them all.

    ``run()`` blocks on the calling thread until the source ends, ``max_frames`` are done or ``stop()``
    is called; ``start()`` does the same on a background thread (for a window on the main thread). A
    stage or sink exception stops the run and is re-raised by ``run()`` / ``wait()`` / ``stop()``.
    """

    def __init__(
        self,
        source: FrameSource,
        stages: Sequence[Stage],
        sinks: Sequence[Sink] = (),
        *,
        max_frames: int | None = None,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._sink_lock = threading.Lock()
        self.max_frames = max_frames
        self._events: deque[str] = deque()
        self._latest: FrameResult | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._timings = _Timings()
        self._stats = PipelineStats()
        self._closed = False

    # ------------------------------------------------------------------ control
    def run(self) -> PipelineStats:
        """Process until the source ends / ``max_frames`` / ``stop()``; returns the statistics.

        The frames are processed on the processing thread while the caller waits: a ``KeyboardInterrupt``
        (Ctrl+C, or SIGTERM under :func:`interrupt_on_termination`) then stops the pipeline *between*
        frames, so every sink has either consumed a frame or not seen it, and ``stats.frames`` counts
        exactly what the sinks wrote. The interrupt is re-raised once the frame in flight is done."""
        self.start()
        try:
            while not self.wait(POLL_S):
                pass
        except KeyboardInterrupt:
            self.stop()
            raise
        return self.stats

    def start(self) -> None:
        """Process on a background thread; poll ``latest()``; end with ``stop()`` (or the context manager).

        Calling it again while started does nothing (one processing thread per pipeline)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="pipeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop processing (the current frame finishes) and wait for the processing thread."""
        self._stop.set()
        self.source.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a started pipeline to finish; True when it has. Re-raises a stage error."""
        finished = self._done.wait(timeout)
        if finished and self._error is not None:
            err, self._error = self._error, None
            raise err
        return finished

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    @property
    def finished(self) -> bool:
        """The source ended, ``max_frames`` were processed, ``stop()`` was called, or a stage failed."""
        return self._done.is_set()

    def latest(self) -> FrameResult | None:
        """The newest fully processed result (shared, read-only for the caller)."""
        return self._latest

    def post_event(self, name: str) -> None:
        """Queue an event name; it appears in the next processed ``FrameResult.events``."""
        self._events.append(name)

    def add_sink(self, sink: Sink) -> None:
        with self._sink_lock:
            self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: Sink) -> None:
        """Detach a sink; once this returns, it is not called again. The caller closes it."""
        with self._sink_lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    @property
    def stats(self) -> PipelineStats:
        s = self._stats
        s.stages = self._timings.summary()
        decode = summarize(self.source.decode_ms.copy())  # measured on the decode thread
        if decode is not None:
            s.stages["decode"] = decode
        s.dropped = self.source.handoff.dropped
        s.decoded = self.source.stats.delivered
        s.source_error = self.source.error
        return s

    # ------------------------------------------------------------------ processing thread
    def _loop(self) -> None:
        stats = self._stats
        try:
            if not self.source.opened:
                self.source.open()
            t_first: float | None = None
            t_prev_end: float | None = None
            while not self._stop.is_set():
                if self.max_frames is not None and stats.frames >= self.max_frames:
                    stats.stopped = True
                    break
                item = self.source.get(POLL_S)
                if item is None:
                    if self.source.ended:
                        break
                    continue
                frame, dropped = item
                t0 = time.perf_counter()
                if t_first is None:
                    t_first = t0
                result = FrameResult(frame=frame, dropped_before=dropped)
                while self._events:
                    result.events.append(self._events.popleft())
                for stage in self.stages:
                    stage.process(result)
                with self._sink_lock:  # remove_sink waits for the frame in flight, then it is never called
                    for sink in self._sinks:
                        sink.consume(result)
                t1 = time.perf_counter()
                for key, ms in result.timings_ms.items():
                    self._timings.add(key, ms)
                self._timings.add("frame", (t1 - t0) * 1000.0)
                self._timings.add("latency", (t1 - frame.capture_time_s) * 1000.0)
                stats.frames += 1
                if result.faces:
                    stats.frames_with_face += 1
                stats.wall_s = t1 - t_first
                self._latest = result
                t_end = time.perf_counter()
                if t_prev_end is not None:
                    self._timings.add("cycle", (t_end - t_prev_end) * 1000.0)
                t_prev_end = t_end
            if self._stop.is_set():
                stats.stopped = True
        except BaseException as exc:  # re-raised on the caller's thread by run()/wait()/stop()
            if not isinstance(exc, UserError | KeyboardInterrupt):
                log.debug("pipeline failed", exc_info=True)
            self._error = exc
        finally:
            # Stop decoding now (a max-frames run must not leave the decoder filling the hand-off).
            self.source.stop()
            self._done.set()

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Stop, then close the source, the sinks (they flush their outputs) and the stages. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.source.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        errors: list[BaseException] = []
        for closer in (self.source.close, *(s.close for s in self._sinks), *(s.close for s in self.stages)):
            try:
                closer()
            except BaseException as exc:  # close everything even when one fails; report the first
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
