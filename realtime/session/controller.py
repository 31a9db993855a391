"""Start/stop recording on a running pipeline: the ``r`` key (``"record"`` event) and ``record`` command.

``RecordingController`` is one pipeline ``Sink`` that stays attached for the whole run and forwards
frames to the current ``SessionRecorder`` (so starting/stopping never has to change the pipeline's sink
list from inside a sink call). A recorder that stops (protocol complete, ``r`` again, write failure) is
finalised on a background thread so the live view never waits for the encoder's last fragment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from realtime.camera import Intrinsics
from realtime.errors import UserError
from realtime.results import FrameResult
from realtime.session.protocol import PromptState
from realtime.session.recorder import STATE_FAILED, RecorderConfig, RecorderStatus, SessionRecorder

log = logging.getLogger(__name__)

RECORD_EVENT = "record"
"""UI -> pipeline: start/stop recording (the window's r key)."""
EVENT_STARTED = "record-started"
EVENT_STOPPED = "record-stopped"
EVENT_FAILED = "record-failed"
"""Added to the frame's events by the controller (a UI or later sink can react; the HUD text comes from
``hud_lines``)."""


class RecordingController:
    """A pipeline sink that owns the recording state for the UI (``hud_lines``, ``status``)."""

    def __init__(self, make_config: Callable[[], RecorderConfig], *, start: bool = False) -> None:
        self._make_config = make_config
        self._recorder: SessionRecorder | None = None
        self._last: RecorderStatus | None = None
        self._message = ""
        self._finalisers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.sessions: list[SessionRecorder] = []
        """Every recorder started, in order (their folders are the outputs)."""
        self._start_requested = start

    # -- Sink -------------------------------------------------------------------------------------------

    def consume(self, result: FrameResult) -> None:
        toggle = RECORD_EVENT in result.events
        if self._start_requested:
            self._start_requested = False
            toggle = self._recorder is None
        if toggle:
            if self._recorder is None:
                result.events.append(EVENT_STARTED if self._start() else EVENT_FAILED)
            else:
                self._stop("stopped by the user")
                result.events.append(EVENT_STOPPED)
        rec = self._recorder
        if rec is None:
            return
        rec.consume(result)
        if rec.failed:
            self._stop("")
            result.events.append(EVENT_FAILED)
        elif rec.finished:
            self._stop("protocol complete")
            result.events.append(EVENT_STOPPED)

    def close(self) -> None:
        if self._recorder is not None:
            self._stop("pipeline closed")
        for t in self._finalisers:
            t.join()
        self._finalisers.clear()

    # -- control ----------------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self._recorder is not None

    @property
    def idle(self) -> bool:
        """Nothing recording and every stopped recording is finalised."""
        return self._recorder is None and not any(t.is_alive() for t in self._finalisers)

    def start_now(self) -> None:
        """Start recording before the first frame (the encoder process starts while models load); a
        ``UserError`` (unwritable folder) propagates to the caller instead of becoming a HUD message."""
        if self._recorder is None:
            rec = SessionRecorder(self._make_config())
            self._recorder = rec
            self.sessions.append(rec)
            self._start_requested = False

    def _start(self) -> bool:
        try:
            rec = SessionRecorder(self._make_config())
        except UserError as exc:  # unwritable output folder: say so, keep the live view
            self._message = f"cannot record: {exc}"
            log.error("%s", self._message)
            return False
        except Exception as exc:  # the encoder process could not start, ...
            self._message = f"cannot record: {exc}"
            log.error("%s", self._message, exc_info=log.isEnabledFor(logging.DEBUG))
            return False
        self._message = ""
        self._recorder = rec
        self.sessions.append(rec)
        return True

    def _stop(self, why: str) -> None:
        rec = self._recorder
        if rec is None:
            return
        self._recorder = None
        self._last = rec.status()
        if rec.failed:
            self._message = self._last.message
        elif why:
            log.info("recording %s: %s", why, rec.folder)

        def finalise() -> None:
            st = rec.close()
            with self._lock:
                self._last = st
                if st.state == STATE_FAILED:
                    self._message = st.message

        t = threading.Thread(target=finalise, name="session-finalise", daemon=False)
        self._finalisers.append(t)
        t.start()

    # -- UI ---------------------------------------------------------------------------------------------

    def status(self) -> RecorderStatus | None:
        """The current recording's status, else the last one's (None before any)."""
        if self._recorder is not None:
            return self._recorder.status()
        with self._lock:
            return self._last

    @property
    def message(self) -> str:
        """The last error to show (empty when none)."""
        return self._message

    def prompt(self) -> PromptState | None:
        return self._recorder.prompt() if self._recorder is not None else None

    def hud_lines(self) -> list[str]:
        """Text for the window's overlay: the recording indicator, the prompt, an error."""
        lines: list[str] = []
        rec = self._recorder
        if rec is not None:
            st = rec.status()
            m, s = divmod(int(st.elapsed_s), 60)
            lines.append(f"● REC {m:02d}:{s:02d}  (r: stop)")
            if st.prompt is not None:
                lines.append(st.prompt.text())
        if self._message:
            lines.append(self._message)
        return lines


DEFAULT_SESSIONS_DIR = "sessions"


def free_recording_sink(source: Any, stages: Sequence[Any], columns: Sequence[Any] | None = None,
                        out_dir: str | Path = DEFAULT_SESSIONS_DIR) -> RecordingController:
    """The ``r`` key of ``realtime-face run``: free recordings (no protocol) into ``out_dir``."""
    def make_config() -> RecorderConfig:
        return RecorderConfig(Path(out_dir), intrinsics=intrinsics_from_stages(stages, source.width,
                                                                                source.height),
                              source=str(getattr(source, "description", "")), columns=columns,
                              video_backpressure=not (source.live or source.latest_only))

    return RecordingController(make_config)


def intrinsics_from_stages(stages: Sequence[Any], width: int, height: int) -> Intrinsics:
    """The fit stage's camera model for this frame size (``--fov``/``--calibration``), else the default."""
    for stage in stages:
        resolver = getattr(stage, "intrinsics", None)
        if resolver is not None and hasattr(resolver, "for_size"):
            return resolver.for_size(width, height)  # type: ignore[no-any-return]
    return Intrinsics.from_fov(width, height)
