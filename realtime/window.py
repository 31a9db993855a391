"""The live window (pyglet, main thread): the camera frame with the fitted face in place, a 3D orbit view
and a HUD.

The window never waits for processing: it polls ``pipeline.latest()`` at its own cadence and re-renders
only when a new result arrived (or the view changed), so a slow frame in processing leaves the window
responsive, and the window's work (a few milliseconds per new result) runs beside the processing thread.
Both views are drawn by :class:`~realtime.render.OffscreenRenderer` in the window's GL context with the
same style as the headless pictures (:mod:`realtime.overlay`).

Keys: q / Esc quit, space pause, m cycle render mode, w wireframe, s snapshot, r record, o reset the orbit,
f show the latest refined snapshot (from a ``--refine`` sink) in the 3D view instead of the live mesh.
Mouse: drag in the 3D view to orbit, scroll to zoom.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import moderngl
import numpy as np

from realtime.camera import Intrinsics
from realtime.errors import UserError
from realtime.facemodel import MorphableModel
from realtime.overlay import (
    ASYMMETRY_RANGE_MM,
    PANEL_COLOR,
    MeshDisplay,
    ViewStyle,
    asymmetry_mm,
    draw_dots,
    orbit_view_params,
)
from realtime.render import RENDER_MODES, OffscreenRenderer, Rect, load_shader_source
from realtime.results import FrameResult

log = logging.getLogger(__name__)

HUD_KEYS = ("q quit  space pause  m mode  w wire  s snapshot  r record  o reset view  f refined  "
            "drag/scroll: orbit/zoom")
_WINDOW_BG = (0.06, 0.065, 0.075)


class LiveWindow:
    """A pyglet window showing ``pipeline`` (already started) until the user quits.

    ``model`` and ``intrinsics_for_size`` (the fitter's camera for a frame size) are taken from the
    pipeline's "fit" stage when not given; without them only the landmarks are shown.
    """

    def __init__(self, pipeline: Any, *, model: MorphableModel | None = None,
                 intrinsics_for_size: Callable[[int, int], Intrinsics] | None = None,
                 style: ViewStyle | None = None, width: int = 1280, height: int = 720,
                 title: str = "realtime-face", visible: bool = True, fps: float = 60.0) -> None:
        import pyglet

        self.pipeline = pipeline
        stages = getattr(pipeline, "stages", ())
        fit_stage = next((s for s in stages if getattr(s, "name", "") == "fit"), None)
        if model is None and fit_stage is not None:
            model = getattr(fit_stage, "model", None)
        if intrinsics_for_size is None and fit_stage is not None:
            resolver = getattr(fit_stage, "intrinsics", None)
            intrinsics_for_size = getattr(resolver, "for_size", None)
        self.model = model
        self.intrinsics_for_size = intrinsics_for_size or (lambda w, h: Intrinsics.from_fov(w, h))
        self.display = MeshDisplay.from_model(model) if model is not None else None
        self.style = style or ViewStyle()
        self.fps = fps
        self.paused = False
        self.recording_requested = False
        self.orbit_yaw = self.style.orbit_yaw_deg
        self.orbit_pitch = self.style.orbit_pitch_deg
        self.zoom = 1.0
        self.closed = False
        self.displayed: FrameResult | None = None
        """The result on screen."""
        self.messages: deque[tuple[float, str]] = deque(maxlen=3)
        self.show_refined = False
        """f key: the 3D view shows the newest refined snapshot instead of the live mesh."""
        self.refined: Any = None
        """Newest finished refinement (a ``realtime.refine.worker.JobResult``) from the pipeline's refine
        sink, None before the first one."""
        self._refine_sink = next((s for s in getattr(pipeline, "sinks", ())
                                  if getattr(s, "name", "") == "refine" and callable(getattr(s, "latest", None))),
                                 None)

        config = pyglet.gl.Config(major_version=3, minor_version=3, forward_compatible=True,  # type: ignore[abstract]
                                  double_buffer=True, depth_size=24)
        try:
            self.window = pyglet.window.Window(width, height, title, resizable=True, config=config,
                                               visible=visible, vsync=False)
        except Exception as exc:  # no display / no GL 3.3: one line for the user
            raise UserError(f"cannot open the window ({exc}); use --headless") from None
        self.ctx = moderngl.create_context()
        self._blit_prog = self.ctx.program(vertex_shader=load_shader_source("fullscreen.vert"),
                                           fragment_shader=load_shader_source("blit.frag"))
        self._blit_vao = self.ctx.vertex_array(self._blit_prog, [])
        self._frame_tex: moderngl.Texture | None = None
        self._cam: OffscreenRenderer | None = None
        self._orbit: OffscreenRenderer | None = None
        self._overlay_box: Rect | None = None
        self._dirty = True
        self._draw_times: deque[float] = deque(maxlen=120)
        self._result_times: deque[float] = deque(maxlen=120)
        self._latency_ms = 0.0
        self._render_ms = 0.0
        self._hud = pyglet.text.Label("", x=10, y=height - 10, anchor_y="top", multiline=True,
                                      width=width - 20, font_size=10, color=(235, 240, 245, 255))
        self.window.push_handlers(self)
        self.ctx.error  # noqa: B018  (reading clears a GL error flag pyglet would otherwise report later)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Show the window until the user quits (pyglet's event loop on this thread)."""
        import pyglet

        pyglet.clock.schedule_interval(self._tick, 1.0 / self.fps)
        try:
            pyglet.app.run(interval=1.0 / self.fps)
        finally:
            pyglet.clock.unschedule(self._tick)
            self.close()

    def step(self) -> None:
        """One poll + redraw + buffer swap (for tests and custom loops)."""
        self.window.switch_to()
        self.window.dispatch_events()
        self._tick(0.0)
        self.on_draw()
        self.window.flip()

    def screenshot(self) -> np.ndarray:
        """The window's picture as (H, W, 3) uint8 RGB, top row first (drawn afresh)."""
        import pyglet

        self.window.switch_to()
        self.on_draw()
        # pyglet reads the back buffer (moderngl's screen.read selects a colour attachment the default
        # framebuffer does not have: a GL error).
        image = pyglet.image.get_buffer_manager().get_color_buffer().get_image_data()
        data = image.get_data("RGB", image.width * 3)
        return np.frombuffer(data, np.uint8).reshape(image.height, image.width, 3)[::-1].copy()

    def close(self) -> None:
        if self.closed and self._cam is None and self._orbit is None:
            return
        self.closed = True
        for r in (self._cam, self._orbit):
            if r is not None:
                r.release()
        self._cam = self._orbit = None
        self.ctx.error  # noqa: B018
        try:
            self.window.close()
        except Exception:  # pyglet reports GL errors of a context being torn down; nothing to save
            log.debug("closing the window", exc_info=True)

    # ------------------------------------------------------------------ polling
    def _tick(self, dt: float) -> None:
        if self.closed:
            return
        if self._refine_sink is not None:
            refined = self._refine_sink.latest()
            if refined is not None and refined is not self.refined:
                self.refined = refined
                self._say(f"refined frame {refined.frame_index} ({refined.reason})")
                self._dirty = self._dirty or self.show_refined
        result = self.pipeline.latest()
        if result is None or result is self.displayed or self.paused:
            return
        now = time.perf_counter()
        self.displayed = result
        self._result_times.append(now)
        self._latency_ms = (now - result.frame.capture_time_s) * 1000.0
        self._dirty = True

    # ------------------------------------------------------------------ event handlers (pyglet)
    def on_draw(self) -> None:
        t0 = time.perf_counter()
        if self._dirty:
            self._render_views()
            self._dirty = False
            self._render_ms = (time.perf_counter() - t0) * 1000.0
        self._present()
        self._draw_times.append(time.perf_counter())

    def on_key_press(self, symbol: int, modifiers: int) -> bool:
        from pyglet.window import key

        if symbol in (key.Q, key.ESCAPE):
            self._request_close()
        elif symbol == key.SPACE:
            self.paused = not self.paused
            self._say("paused" if self.paused else "resumed")
        elif symbol == key.M:
            i = RENDER_MODES.index(self.style.mode)
            self.style = replace(self.style, mode=RENDER_MODES[(i + 1) % len(RENDER_MODES)])
            self._dirty = True
        elif symbol == key.W:
            self.style = replace(self.style, wireframe=not self.style.wireframe)
            self._dirty = True
        elif symbol == key.S:
            self.pipeline.post_event("snapshot")
            self._say("snapshot requested")
        elif symbol == key.R:
            self.pipeline.post_event("record")
            self.recording_requested = not self.recording_requested
            self._say("recording toggled")
        elif symbol == key.F:
            self.show_refined = not self.show_refined
            if self.show_refined and self.refined is None:
                self._say("no refined snapshot yet" if self._refine_sink is not None
                          else "refinement is off (run with --refine DIR)")
            self._dirty = True
        elif symbol == key.O:
            self.orbit_yaw, self.orbit_pitch = self.style.orbit_yaw_deg, self.style.orbit_pitch_deg
            self.zoom = 1.0
            self._dirty = True
        else:
            return False
        return True  # handled: Esc must not close the window through pyglet's default handler

    def on_mouse_drag(self, x: int, y: int, dx: int, dy: int, buttons: int, modifiers: int) -> None:
        _, panel = self._layout()
        px, py, pw, ph = panel
        if px <= x < px + pw and py <= y < py + ph:
            self.orbit_yaw += 0.4 * dx
            self.orbit_pitch = float(np.clip(self.orbit_pitch - 0.4 * dy, -85.0, 85.0))
            self._dirty = True

    def on_mouse_scroll(self, x: int, y: int, scroll_x: float, scroll_y: float) -> None:
        self.zoom = float(np.clip(self.zoom * 1.1 ** scroll_y, 0.3, 6.0))
        self._dirty = True

    def on_resize(self, width: int, height: int) -> None:
        self._dirty = True

    def on_close(self) -> None:
        self._request_close()

    def _request_close(self) -> None:
        import pyglet

        self.closed = True
        pyglet.app.exit()

    def _say(self, text: str) -> None:
        self.messages.append((time.perf_counter(), text))

    # ------------------------------------------------------------------ drawing
    def _layout(self) -> tuple[Rect, Rect]:
        """Screen rectangles (x, y from the bottom-left, w, h) of the camera view and the 3D view."""
        w, h = self.window.get_framebuffer_size()
        panel_w = max(64, round(0.34 * w))
        area_w = max(1, w - panel_w)
        frame = self.displayed.frame if self.displayed is not None else None
        fw, fh = (frame.width, frame.height) if frame is not None else (16, 9)
        scale = min(area_w / fw, h / fh)
        cw, ch = max(1, round(fw * scale)), max(1, round(fh * scale))
        camera = ((area_w - cw) // 2, (h - ch) // 2, cw, ch)
        return camera, (area_w, 0, panel_w, h)

    def _render_views(self) -> None:
        """Draw the camera overlay and the 3D view into the renderers' textures (once per new result)."""
        result = self.displayed
        if result is None:
            return
        image = result.frame.image
        fh, fw = image.shape[:2]
        fit = next((f.fit for f in result.faces if f.fit is not None), None)
        landmarks = [f.track.landmarks_px[:, :2] for f in result.faces]
        dots = np.concatenate(landmarks) if landmarks and self.style.landmarks else None
        shown = image
        if (fit is None or self.display is None) and dots is not None:
            shown = image.copy()  # the frame is shared with other consumers: never draw on it
            draw_dots(shown, dots)
        self._upload_frame(shown)
        self._overlay_box = None
        if fit is None or self.display is None:
            return
        intr = self.intrinsics_for_size(fw, fh)
        if self._cam is None or (self._cam.width, self._cam.height) != (fw, fh):
            if self._cam is not None:
                self._cam.release()
            self._cam = OffscreenRenderer(fw, fh, ctx=self.ctx, samples=None)
        scalars = self._asymmetry(fit) if self.style.mode == "heatmap" else None
        mode = self.style.mode if (self.style.mode != "heatmap" or scalars is not None) else "lit"
        # As in the headless video (compose_views): the simplified mask unless the wireframe shows the
        # triangulation, shaded with the face area's full normals, drawn alone (premultiplied RGBA) and
        # blended over the frame texture in _present.
        small = self.display.overlay_simplified
        overlay_tris = small if small is not None and not self.style.wireframe and mode != "wireframe" \
            else self.display.overlay_triangles
        self._overlay_box = self._cam.draw(
            fit.vertices_mm, overlay_tris, intr, mode, crop=True, transparent=True,
            normal_triangles=self.display.view_triangles,
            texture_image=image if mode == "textured" else None, scalars=scalars,
            scalar_range=ASYMMETRY_RANGE_MM, opacity=self.style.overlay_opacity,
            wireframe_overlay=self.style.wireframe, specular=self.style.specular,
            hidden_edges=self.display.overlay_hidden_edges, points_px=dots,
            point_size=3.0, point_color=(0.3, 1.0, 0.55, 1.0))
        _, panel = self._layout()
        pw, ph = panel[2], panel[3]
        if self._orbit is None or (self._orbit.width, self._orbit.height) != (pw, ph):
            if self._orbit is not None:
                self._orbit.release()
            self._orbit = OffscreenRenderer(pw, ph, ctx=self.ctx, samples=None)
        outcome = self.refined_outcome()
        if outcome is not None:
            # the refined snapshot's detailed mesh (model topology, camera space of its own frame); its
            # texture frame is not kept, so "textured" falls back to "lit", which shows the detail best
            verts, pose = outcome.detailed_vertices_mm, outcome.pose
            tex, tex_intr, view_scalars = None, None, None
        else:
            verts, pose = fit.vertices_mm, fit.pose
            tex, tex_intr = image, intr
            view_scalars = self._asymmetry(fit) if self.style.mode == "heatmap" else None
        self._orbit.draw(verts, self.display.view_triangles, **orbit_view_params(
            verts, (0, 0, pw, ph), self.style, yaw_deg=self.orbit_yaw, pitch_deg=self.orbit_pitch,
            zoom=self.zoom, texture_image=tex, texture_intrinsics=tex_intr, scalars=view_scalars,
            scalar_range=ASYMMETRY_RANGE_MM, hidden_edges=self.display.view_hidden_edges,
            face_pose=None if self.style.orbit_follows_head else pose))

    def refined_outcome(self) -> Any:
        """The refined snapshot the 3D view shows (``RefineOutcome``), or None when it shows the live mesh."""
        if not self.show_refined or self.refined is None:
            return None
        return getattr(self.refined, "outcome", None)

    def _asymmetry(self, fit: Any) -> np.ndarray | None:
        return asymmetry_mm(self.model, fit) if self.model is not None else None

    def _upload_frame(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._frame_tex is None or self._frame_tex.size != (w, h):
            if self._frame_tex is not None:
                self._frame_tex.release()
            self._frame_tex = self.ctx.texture((w, h), 3, alignment=1)
            self._frame_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self._frame_tex.write(np.ascontiguousarray(image), alignment=1)

    def _present(self) -> None:
        ctx = self.ctx
        w, h = self.window.get_framebuffer_size()
        ctx.screen.use()
        ctx.viewport = (0, 0, w, h)
        ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE | moderngl.BLEND)
        ctx.clear(*_WINDOW_BG)
        camera, panel = self._layout()
        if self._frame_tex is not None:
            self._blit(self._frame_tex, camera, (0.0, 0.0, 1.0, 1.0))
            if self._overlay_box is not None and self._cam is not None:
                # The overlay patch: the renderer's texture holds the mesh alone (premultiplied RGBA) inside
                # this box only, blended over the frame. The texture coordinates stay half a texel inside
                # the box: its outermost texels are transparent padding, those outside it are stale.
                bx, by, bw, bh = self._overlay_box
                fw, fh = self._cam.width, self._cam.height
                sx, sy = camera[2] / fw, camera[3] / fh
                screen = (camera[0] + round(bx * sx), camera[1] + round((fh - by - bh) * sy),
                          max(1, round(bw * sx)), max(1, round(bh * sy)))
                uv = ((bx + 0.5) / fw, (by + 0.5) / fh, (bx + bw - 0.5) / fw, (by + bh - 0.5) / fh)
                ctx.enable(moderngl.BLEND)
                ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
                self._blit(self._cam.color_texture, screen, uv)
                ctx.disable(moderngl.BLEND)
        if self._orbit is not None and self.displayed is not None:
            self._blit(self._orbit.color_texture, panel, (0.0, 0.0, 1.0, 1.0))
        else:
            ctx.scissor = panel
            ctx.clear(*PANEL_COLOR)
            ctx.scissor = None
        ctx.viewport = (0, 0, w, h)
        err = ctx.error
        if err != "GL_NO_ERROR":
            log.warning("GL error before the HUD: %s", err)
        self._draw_hud(w, h)

    def _blit(self, texture: moderngl.Texture, rect: Rect, uv: tuple[float, float, float, float]) -> None:
        self.ctx.viewport = rect
        texture.use(location=0)
        self._blit_prog["u_image"] = 0
        self._blit_prog["u_uv_rect"] = uv
        self._blit_vao.render(moderngl.TRIANGLES, vertices=3)

    def hud_text(self) -> str:
        now = time.perf_counter()
        draw_fps = _rate(self._draw_times, now)
        proc_fps = _rate(self._result_times, now)
        r = self.displayed
        if r is None:
            tracking = "waiting for frames"
            engine = "-"
        elif not r.faces:
            tracking = "no face"
            engine = "-"
        else:
            face = r.faces[0]
            tracking = f"{len(r.faces)} face(s), presence {face.track.presence:.2f}"
            if face.fit is not None:
                tracking += f", fit {face.fit.residual_px:.1f} px"
                tracking += ", identity locked" if face.fit.identity_locked else ", learning identity"
            engine = face.engine.engine if face.engine is not None else (
                "landmark fit" if face.fit is not None else "landmarks only")
        stages = " > ".join(getattr(s, "name", "?") for s in getattr(self.pipeline, "stages", ()))
        # Sinks with a ``hud_lines()`` (the session recorder's controller: REC, exercise prompt and
        # countdown, a recording error) add their lines; they know the real recording state.
        sink_lines: list[str] = []
        for sink in getattr(self.pipeline, "sinks", ()):
            hud = getattr(sink, "hud_lines", None)
            if callable(hud):
                sink_lines += hud()
        state = []
        if self.paused:
            state.append("PAUSED")
        if self.recording_requested and not any(callable(getattr(s, "hud_lines", None))
                                                for s in getattr(self.pipeline, "sinks", ())):
            state.append("REC")
        if getattr(self.pipeline, "finished", False):
            state.append("source ended")
        mode = self.style.mode + (" + wireframe" if self.style.wireframe else "")
        shown = self.refined_outcome()
        if shown is not None:
            c, f = shown.photometric_error
            sink_lines.append(f"3D view: refined frame {shown.frame_index} ({shown.reason}), "
                              f"photometric error {c:.1f} -> {f:.1f} grey, {shown.views} view(s)")
        elif self.show_refined:
            sink_lines.append("3D view: live mesh (no refined snapshot yet)")
        lines = [
            f"display {draw_fps:5.1f} fps   processing {proc_fps:5.1f} fps   "
            f"latency {self._latency_ms:5.0f} ms   render {self._render_ms:4.1f} ms",
            f"tracking: {tracking}",
            f"engine: {engine}   stages: {stages}   view: {mode}   {'  '.join(state)}",
        ]
        lines += sink_lines
        lines += [text for t, text in self.messages if now - t < 3.0]
        lines.append(HUD_KEYS)
        return "\n".join(lines)

    def _draw_hud(self, w: int, h: int) -> None:
        ww, wh = self.window.get_size()
        label = self._hud
        label.text = self.hud_text()
        label.y = wh - 10
        label.width = max(100, ww - 20)
        label.draw()


def _rate(times: deque[float], now: float, window_s: float = 2.0) -> float:
    recent = [t for t in times if now - t <= window_s]
    if len(recent) < 2:
        return 0.0
    return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)
