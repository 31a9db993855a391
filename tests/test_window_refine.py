"""The live window shows the refined snapshot (f key): real video, real MediaPipe + fit, a real spawned
refinement worker, under Xvfb."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = [pytest.mark.window, pytest.mark.slow]


def _step_until(window, condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the window"
        window.step()
        time.sleep(0.02)


def test_f_key_shows_the_latest_refined_snapshot(xvfb_display, talking_video, tmp_path) -> None:
    from pyglet.window import key

    from realtime.capture import VideoSource
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline
    from realtime.refine.worker import build_refine_sink
    from realtime.window import LiveWindow

    stages = [LandmarkStage(), FitStage()]
    # manual snapshots only; idle_policy=False: an idle-class worker may never run on a busy CI box
    sink = build_refine_sink(stages, tmp_path / "refined", automatic=False, idle_policy=False)
    with Pipeline(VideoSource(str(talking_video), realtime=True), stages, [sink]) as pipe:
        pipe.start()
        window = LiveWindow(pipe, width=960, height=540)
        try:
            _step_until(window, lambda: window.displayed is not None and bool(window.displayed.faces)
                        and window.displayed.faces[0].fit is not None, 120.0)
            window.on_key_press(key.F, 0)         # nothing refined yet: the live mesh stays
            assert window.refined_outcome() is None
            assert "no refined snapshot yet" in window.hud_text()
            window.on_key_press(key.F, 0)
            window.on_key_press(key.S, 0)         # snapshot -> worker
            _step_until(window, lambda: window.refined is not None, 240.0)
            window.on_key_press(key.SPACE, 0)     # freeze the live frame so both views can be compared
            _, panel = window._layout()
            px, _, pw, _ = panel

            def panel_shot() -> np.ndarray:
                window.step()
                return window.screenshot()[:, px:px + pw].astype(np.int32)

            live = panel_shot()
            window.on_key_press(key.F, 0)
            outcome = window.refined_outcome()
            assert outcome is not None and outcome is window.refined.outcome
            assert window.refined.reason == "snapshot"
            # the refined mesh is the worker's detailed mesh, different from the coarse one it started from
            assert np.abs(outcome.detailed_vertices_mm - outcome.coarse_vertices_mm).max() > 0.1
            refined = panel_shot()
            assert f"refined frame {outcome.frame_index}" in window.hud_text()
            changed = (np.abs(refined - live).max(axis=2) > 20).mean()
            assert changed > 0.01, changed        # another mesh (another frame's head) is on the panel
            window.on_key_press(key.F, 0)         # back to the live mesh, same frozen frame
            back = panel_shot()
            assert (np.abs(back - live).max(axis=2) > 20).mean() < 0.1 * changed
            assert (tmp_path / "refined").is_dir() and any((tmp_path / "refined").iterdir())
        finally:
            window.close()
