"""The r key in the live window (under Xvfb) starts/stops a session; the HUD shows REC and the prompt."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest

pytestmark = [pytest.mark.window, pytest.mark.slow]


def _step_until(window: Any, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the window"
        window.step()
        time.sleep(0.01)


def test_r_key_records_a_session_with_the_prompt_on_the_hud(xvfb_display: str, talking_video: Path,
                                                            tmp_path: Path) -> None:
    import pyglet

    from realtime.capture import ArraySource
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline
    from realtime.session import load_session
    from realtime.session.controller import RecordingController
    from realtime.session.protocol import load_protocol
    from realtime.session.recorder import RecorderConfig
    from realtime.window import LiveWindow

    with av.open(str(talking_video)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(150), c.decode(video=0), strict=False)]
    protocol = load_protocol("palsy-basic")
    controller = RecordingController(lambda: RecorderConfig(tmp_path, subject_id="W1", protocol=protocol,
                                                            audio=False))
    pipeline = Pipeline(ArraySource(frames), [LandmarkStage()], [controller])
    with pipeline:
        pipeline.start()
        window = LiveWindow(pipeline, visible=True)
        try:
            _step_until(window, lambda: window.displayed is not None)
            assert "REC" not in window.hud_text()
            window.on_key_press(pyglet.window.key.R, 0)
            _step_until(window, lambda: controller.recording)
            _step_until(window, lambda: "get ready" in window.hud_text())
            hud = window.hud_text()
            assert "● REC 00:0" in hud and "Rest: get ready" in hud and "Relax your face" in hud
            _step_until(window, lambda: controller.status() is not None and controller.status().frames >= 20)
            window.on_key_press(pyglet.window.key.R, 0)
            _step_until(window, lambda: controller.idle)
            assert "REC" not in window.hud_text()
        finally:
            window.close()
            pipeline.stop()
    assert len(controller.sessions) == 1
    s = load_session(controller.sessions[0].folder)
    assert s.complete and s.num_frames >= 20 and s.subject_id == "W1"
    assert set(s.frames["exercise"].to_pylist()) == {"rest"}
