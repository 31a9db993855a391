"""The live window under Xvfb: real video through the real pipeline (MediaPipe + fit), screenshot, keys."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = [pytest.mark.window, pytest.mark.slow]


class _EventLog:
    """Sink recording the events that reached the pipeline's results."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def consume(self, result) -> None:
        self.events.extend(result.events)

    def close(self) -> None:
        pass


def _step_until(window, condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the window"
        window.step()
        time.sleep(0.01)


def test_live_window_shows_the_fitted_mesh_and_handles_keys(xvfb_display, talking_video, tmp_path) -> None:
    from pyglet.window import key

    from realtime.capture import VideoSource
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.overlay import PANEL_COLOR
    from realtime.pipeline import Pipeline
    from realtime.window import LiveWindow

    log = _EventLog()
    with Pipeline(VideoSource(str(talking_video)), [LandmarkStage(), FitStage()], [log]) as pipe:
        pipe.start()
        window = LiveWindow(pipe, width=1280, height=720)
        try:
            def fitted() -> bool:
                r = window.displayed
                return r is not None and bool(r.faces) and r.faces[0].fit is not None

            _step_until(window, fitted, 120.0)
            shot = window.screenshot()
            assert shot.shape == (720, 1280, 3)
            from PIL import Image

            Image.fromarray(shot).save(tmp_path / "window.png")

            # Camera view: the frame is shown letterboxed in the left part; over the face the mesh changes
            # the picture, away from it the frame is shown as it is.
            result = window.displayed
            camera, panel = window._layout()
            cx, cy, cw, ch = camera
            frame = result.frame.image
            sx = cw / frame.shape[1]
            screen_top = 720 - (cy + ch)
            x0, y0, x1, y1 = result.faces[0].track.box_px

            def crop(img: np.ndarray, box: tuple[float, float, float, float], scale: float, top: int,
                     left: int) -> np.ndarray:
                bx0, by0, bx1, by1 = (round(v * scale) for v in box)
                return img[top + by0:top + by1, left + bx0:left + bx1].astype(np.float32)

            shown = np.asarray(Image.fromarray(frame).resize((cw, ch), Image.Resampling.BILINEAR))
            face_in_shot = crop(shot, (x0, y0, x1, y1), sx, screen_top, cx)
            face_in_frame = crop(shown, (x0, y0, x1, y1), sx, 0, 0)
            corner_in_shot = crop(shot, (20, 500, 200, 700), sx, screen_top, cx)
            corner_in_frame = crop(shown, (20, 500, 200, 700), sx, 0, 0)
            assert np.abs(face_in_shot - face_in_frame).mean() > 8.0      # the mesh is drawn over the face
            assert np.abs(corner_in_shot - corner_in_frame).mean() < 3.0  # the frame itself is intact
            # 3D view: a lit head on the panel colour.
            px, _, pw, _ = panel
            panel_px = shot[:, px:px + pw].reshape(-1, 3).astype(np.int32)
            bg = np.round(np.array(PANEL_COLOR) * 255).astype(np.int32)
            assert (np.abs(panel_px - bg).max(axis=1) > 30).mean() > 0.05
            assert "tracking: 1 face(s)" in window.hud_text()

            # Keys.
            modes = [window.style.mode]
            window.on_key_press(key.M, 0)
            modes.append(window.style.mode)
            assert modes == ["lit", "wireframe"]
            window.on_key_press(key.W, 0)
            assert window.style.wireframe
            window.on_key_press(key.SPACE, 0)
            assert window.paused
            frozen = window.displayed
            window.on_key_press(key.S, 0)
            window.on_key_press(key.R, 0)
            _step_until(window, lambda: "snapshot" in log.events and "record" in log.events, 60.0)
            assert window.displayed is frozen      # paused: the view stays while processing goes on
            window.on_key_press(key.SPACE, 0)
            assert not window.paused
            window.step()
            assert window.screenshot().shape == (720, 1280, 3)
            window.on_key_press(key.Q, 0)
            assert window.closed
        finally:
            window.close()


class _SlowStage:
    """A processing stage that takes 0.6 s per frame (a stand-in for a slow engine)."""

    name = "slow"

    def process(self, result) -> None:
        time.sleep(0.6)
        result.timings_ms[self.name] = 600.0

    def close(self) -> None:
        pass


def test_slow_processing_never_freezes_the_window(xvfb_display, talking_video) -> None:
    import av

    from realtime.capture import ArraySource
    from realtime.pipeline import Pipeline
    from realtime.window import LiveWindow

    with av.open(str(talking_video)) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(6), c.decode(video=0), strict=False)]
    with Pipeline(ArraySource(frames), [_SlowStage()]) as pipe:
        pipe.start()
        window = LiveWindow(pipe, width=640, height=360)
        try:
            durations = []
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                window.step()
                durations.append(time.monotonic() - t0)
            # Processing delivers fewer than 2 results per second; the window keeps drawing many frames a
            # second and no redraw waits for the processing thread.
            assert len(durations) > 15
            assert max(durations[1:]) < 0.45, max(durations[1:])   # a wait for processing: >= 0.6 s
            assert window.displayed is not None
        finally:
            window.close()
