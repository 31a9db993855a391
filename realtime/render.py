"""ModernGL mesh renderer: the same code draws the headless (EGL) pictures and the live window's views.

Conventions
-----------
* Vertices are in OpenCV camera space (x right, y down, z forward), millimetres, as produced by the fitter.
* The projection is built from the fitter's :class:`~realtime.camera.Intrinsics`, so a vertex ``v`` is drawn
  at pixel ``intrinsics.project(v)`` with pixel centres at integer coordinates (OpenCV). Window row ``y`` of
  the framebuffer is image row ``y`` (image top row first), so read-backs need no flip; a consequence is that
  front faces are clockwise in window coordinates.
* Lighting ("lit", "heatmap"): ``radiance = albedo * max(0, sum_k sh[k] * Y_k(n))`` with the real spherical
  harmonics of bands 0..2 (``Y = 0.282095, 0.488603 (y, z, x), 1.092548 xy, 1.092548 yz,
  0.315392 (3z^2 - 1), 1.092548 xz, 0.546274 (x^2 - y^2)``) evaluated on the unit normal in view space with
  OpenCV axes: a light from the camera has a negative ``z`` coefficient, a light from above a negative ``y``
  one. :func:`sh_basis` evaluates the same basis in numpy.
* OpenGL 3.3 core. Per frame the CPU uploads N positions and smooth normals (buffer orphaning: the buffers
  are allocated once per mesh topology) and the mesh is drawn indexed. The wireframe and the triangle-id
  pictures need a barycentric coordinate per triangle corner (done in the fragment shader, no geometry
  shader): they draw an "expanded" copy with three vertices per triangle, gathered on demand.
* :meth:`OffscreenRenderer.render` only draws, resolves and reads the pixels inside the bounding box of the
  drawn triangles (the rest of the picture is the background or clear colour, copied on the CPU), so the
  cost follows the face's size on screen, not the frame's. Over a background the mesh is drawn alone, as
  premultiplied RGBA (coverage x opacity), read back and composited into the caller's picture with OpenCV:
  the background is never uploaded nor copied through GL.
* The calls that cost milliseconds in a software rasteriser (the draw calls, where llvmpipe shades the
  vertices and bins the triangles, and the read-back, which waits for its raster threads) go through
  ctypes, which releases the GIL for their duration (moderngl keeps it): a render on the video writer's
  thread then no longer stalls the pipeline's Python stages.

A renderer and its context belong to the thread that created them.
"""

from __future__ import annotations

import ctypes
import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import cv2
import moderngl
import numpy as np
import scipy.sparse

from realtime.camera import Intrinsics
from realtime.errors import BadInputError, MissingResourceError
from realtime.paths import shaders_dir

log = logging.getLogger(__name__)

RENDER_MODES: tuple[str, ...] = ("lit", "wireframe", "textured", "normals", "depth", "heatmap")
_MODE_INDEX = {name: i for i, name in enumerate(RENDER_MODES)}

DEFAULT_ALBEDO = (0.80, 0.72, 0.66)
"""Clay-like skin tone used when no per-vertex albedo is given."""

KEY_LIGHT_DIRECTION = (-0.3464, -0.4619, -0.8165)
"""Unit vector toward the key light in view space (OpenCV axes): from the camera, above and to the left."""

DEFAULT_CLEAR_COLOR = (0.0, 0.0, 0.0)
DEFAULT_WIRE_COLOR = (0.55, 0.95, 0.75, 0.85)

_SH_CONSTANTS = np.array([0.282095, 0.488603, 0.488603, 0.488603, 1.092548, 1.092548, 0.315392, 1.092548,
                          0.546274])


def default_sh() -> np.ndarray:
    """Soft studio light: ambient plus a key light from the camera, above and to the viewer's left
    (:data:`KEY_LIGHT_DIRECTION`).

    A face looking into the camera gets about 0.95 of its albedo; surfaces seen edge-on about 0.35-0.6.
    """
    sh = np.zeros((9, 3), dtype=np.float32)
    key = np.asarray(KEY_LIGHT_DIRECTION)
    sh[0] = 0.42 / _SH_CONSTANTS[0]                 # ambient
    sh[1:4] = (0.55 * key[[1, 2, 0]] / _SH_CONSTANTS[1])[:, None]   # band 1: y, z, x order
    sh[6] = -0.03 / _SH_CONSTANTS[6]                # a little less light at the poles: softer rim
    return sh


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) basis values, the same functions the shaders use."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    one = np.ones_like(x)
    return np.stack([one * _SH_CONSTANTS[0], _SH_CONSTANTS[1] * y, _SH_CONSTANTS[2] * z, _SH_CONSTANTS[3] * x,
                     _SH_CONSTANTS[4] * x * y, _SH_CONSTANTS[5] * y * z, _SH_CONSTANTS[6] * (3 * z * z - 1),
                     _SH_CONSTANTS[7] * x * z, _SH_CONSTANTS[8] * (x * x - y * y)], axis=-1)


_COLORMAPS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    # Moreland's diverging "cool to warm" (signed quantities such as left-right differences).
    "coolwarm": ((0.0, (59, 76, 192)), (0.25, (144, 178, 254)), (0.5, (221, 221, 221)),
                 (0.75, (245, 156, 125)), (1.0, (180, 4, 38))),
    # Perceptually uniform sequential map (magnitudes).
    "viridis": ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
                (1.0, (253, 231, 37))),
}


def colormap_lut(name: str, size: int = 256) -> np.ndarray:
    """(size, 3) uint8 lookup table for a colour map name ("coolwarm", "viridis")."""
    if name not in _COLORMAPS:
        raise BadInputError(f"unknown colour map '{name}' (available: {', '.join(_COLORMAPS)})")
    stops = _COLORMAPS[name]
    pos = np.array([s[0] for s in stops])
    rgb = np.array([s[1] for s in stops], dtype=np.float64)
    t = np.linspace(0.0, 1.0, size)
    lut = np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], axis=-1)
    return np.round(lut).astype(np.uint8)


def projection_matrix(intrinsics: Intrinsics, near_mm: float, far_mm: float) -> np.ndarray:
    """4x4 matrix from OpenCV view space (mm) to GL clip space for a target of the intrinsics' size.

    Window x = u + 0.5 and window y = v + 0.5 for the pixel (u, v) = ``intrinsics.project(p)``: GL pixel
    centres sit at half-integers, OpenCV's at integers. Depth maps [near, far] to [-1, 1].
    """
    w, h = float(intrinsics.width), float(intrinsics.height)
    m = np.zeros((4, 4), dtype=np.float64)
    m[0, 0] = 2.0 * intrinsics.fx / w
    m[0, 2] = (2.0 * intrinsics.cx + 1.0) / w - 1.0
    m[1, 1] = 2.0 * intrinsics.fy / h
    m[1, 2] = (2.0 * intrinsics.cy + 1.0) / h - 1.0
    m[2, 2] = (far_mm + near_mm) / (far_mm - near_mm)
    m[2, 3] = -2.0 * far_mm * near_mm / (far_mm - near_mm)
    m[3, 2] = 1.0
    return m


def orbit_view_matrix(center_mm: np.ndarray, yaw_deg: float, pitch_deg: float,
                      distance_mm: float) -> np.ndarray:
    """Camera -> view transform of an orbit camera looking at ``center_mm`` from ``distance_mm``.

    At yaw = pitch = 0 the orbit camera looks along the real camera's axis (the face is seen as in the
    camera image); yaw turns the view about its vertical axis, pitch about its horizontal one.
    """
    c = np.asarray(center_mm, dtype=np.float64)
    ya, pa = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(ya), 0.0, np.sin(ya)], [0.0, 1.0, 0.0], [-np.sin(ya), 0.0, np.cos(ya)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(pa), -np.sin(pa)], [0.0, np.sin(pa), np.cos(pa)]])
    r = rx @ ry
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.array([0.0, 0.0, distance_mm]) - r @ c
    return m



def load_shader_source(name: str) -> str:
    path = shaders_dir() / name
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        raise MissingResourceError(f"shader file not found: {path}") from None


def create_headless_context() -> moderngl.Context:
    """An OpenGL 3.3+ standalone context through EGL (Mesa llvmpipe without a GPU)."""
    try:
        return moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
    except Exception as exc:  # the platform layer raises plain Exceptions
        raise MissingResourceError(f"headless OpenGL (EGL) is not available: {exc}") from None


def is_software_renderer(ctx: moderngl.Context) -> bool:
    """True for Mesa's CPU rasterisers (llvmpipe, softpipe, swrast)."""
    name = str(ctx.info.get("GL_RENDERER", "")).lower()
    return any(k in name for k in ("llvmpipe", "softpipe", "swrast", "software"))


Rect = tuple[int, int, int, int]
"""x, y, width, height in pixels; y counts image rows from the top (= window y of the framebuffer)."""

_GL_TRIANGLES = 0x0004
_GL_UNSIGNED_INT = 0x1405
_GL_UNSIGNED_BYTE = 0x1401
_GL_RGBA = 0x1908
_GL_PACK_ALIGNMENT = 0x0D05
_GL_COLOR_ATTACHMENT0 = 0x8CE0


class _DirectGL:
    """A few GL entry points called through ctypes, which releases the GIL around each foreign call.

    Only calls that cost real time go through here (draws: llvmpipe shades vertices and bins triangles on the
    calling thread; read-backs: they wait for the raster threads). They act on the context current on the
    calling thread, the one moderngl made current, and leave the bindings moderngl knows about as they were
    (the program and vertex array are bound again by moderngl before each of its own draws).
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        c_uint, c_int = ctypes.c_uint, ctypes.c_int
        self._use_program = lib.glUseProgram
        self._use_program.argtypes, self._use_program.restype = [c_uint], None
        self._bind_vao = lib.glBindVertexArray
        self._bind_vao.argtypes, self._bind_vao.restype = [c_uint], None
        self._draw_elements = lib.glDrawElements
        self._draw_elements.argtypes = [c_uint, c_int, c_uint, ctypes.c_void_p]
        self._draw_elements.restype = None
        self._draw_arrays = lib.glDrawArrays
        self._draw_arrays.argtypes, self._draw_arrays.restype = [c_uint, c_int, c_int], None
        self._read_buffer = lib.glReadBuffer
        self._read_buffer.argtypes, self._read_buffer.restype = [c_uint], None
        self._pixel_store = lib.glPixelStorei
        self._pixel_store.argtypes, self._pixel_store.restype = [c_uint, c_int], None
        self._read_pixels = lib.glReadPixels
        self._read_pixels.argtypes = [c_int, c_int, c_int, c_int, c_uint, c_uint, ctypes.c_void_p]
        self._read_pixels.restype = None
        self._flush = lib.glFlush
        self._flush.argtypes, self._flush.restype = [], None

    @classmethod
    def load(cls) -> _DirectGL | None:
        """None when no GL library can be loaded this way (moderngl's own calls are used then)."""
        for name in ("libGL.so.1", "libOpenGL.so.0", "libGL.so", "opengl32"):
            try:
                return cls(ctypes.CDLL(name))
            except (OSError, AttributeError):
                continue
        log.debug("no GL library for GIL-free draws and read-backs; using moderngl's calls")
        return None

    def draw(self, program: int, vao: int, count: int, indexed: bool) -> None:
        self._use_program(program)
        self._bind_vao(vao)
        if indexed:
            self._draw_elements(_GL_TRIANGLES, count, _GL_UNSIGNED_INT, None)
        else:
            self._draw_arrays(_GL_TRIANGLES, 0, count)
        self._bind_vao(0)

    def flush(self) -> None:
        self._flush()

    def read_rgba(self, box: Rect, out: np.ndarray) -> None:
        """RGBA bytes of ``box`` of the bound framebuffer's first colour attachment into ``out`` (contiguous,
        at least w * h * 4 bytes), lowest window y (= the box's top image row) first."""
        x, y, w, h = box
        self._read_buffer(_GL_COLOR_ATTACHMENT0)
        self._pixel_store(_GL_PACK_ALIGNMENT, 1)
        self._read_pixels(x, y, w, h, _GL_RGBA, _GL_UNSIGNED_BYTE, out.ctypes.data)


def composite_premultiplied(dst: np.ndarray, rgba: np.ndarray, scratch: np.ndarray | None = None) -> None:
    """``dst = dst * (1 - a) + rgb`` in place, for an (h, w, 3) uint8 picture (a view into a bigger one is
    fine) and an (h, w, 4) uint8 premultiplied RGBA layer; pixels with alpha 0 are left exactly as they were.

    ``scratch``: contiguous uint8 memory of at least 7 * h * w bytes (no allocation per call).
    """
    h, w = dst.shape[:2]
    n = h * w
    buf = np.empty(7 * n, np.uint8) if scratch is None else scratch
    rgb = buf[:3 * n].reshape(h, w, 3)
    inv_alpha = buf[3 * n:6 * n].reshape(h, w, 3)
    alpha = buf[6 * n:7 * n].reshape(h, w)
    cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=rgb)
    cv2.extractChannel(rgba, 3, dst=alpha)
    cv2.cvtColor(alpha, cv2.COLOR_GRAY2RGB, dst=inv_alpha)
    cv2.bitwise_not(inv_alpha, dst=inv_alpha)
    # OpenCV rounds and saturates: 255 - a = 255 keeps dst exactly; the sum never exceeds 255 by more
    # than rounding (premultiplied rgb <= a).
    cv2.multiply(dst, inv_alpha, dst=dst, scale=1.0 / 255.0)
    cv2.add(dst, rgb, dst=dst)


class _Topology:
    """Per-triangle-list data, built once: index buffer contents and the vertex-normal accumulation matrix."""

    def __init__(self, triangles: np.ndarray, n_vertices: int, ctx: moderngl.Context) -> None:
        self.triangles = triangles
        """A private copy (the caller may change theirs)."""
        self.n_vertices = n_vertices
        self.flat = triangles.reshape(-1)
        # (intp indices: numpy converts any other index type on every call)
        self.corners = [triangles[:, k].astype(np.intp) for k in range(3)]
        n_tri = triangles.shape[0]
        # normals = A @ face_normals (area-weighted sum over each vertex's triangles), a sparse product.
        self.accumulate = scipy.sparse.csr_matrix(
            (np.ones(self.flat.size, dtype=np.float32), (self.flat, np.repeat(np.arange(n_tri), 3))),
            shape=(n_vertices, n_tri))
        # Scratch for vertex_normals, which works on (3, N) component rows: numpy's gathers, products and
        # reductions on contiguous rows are several times faster than on the columns of an (N, 3) array.
        self._rows = np.empty((3, n_vertices), dtype=np.float32)
        self._corner_rows = np.empty((3, 3, n_tri), dtype=np.float32)
        self._face_rows = np.empty((3, n_tri), dtype=np.float32)
        self._tmp = np.empty(n_tri, dtype=np.float32)
        self._normal_rows = np.empty((3, n_vertices), dtype=np.float32)
        self._length = np.empty(n_vertices, dtype=np.float32)
        self._normals = np.empty((n_vertices, 3), dtype=np.float32)
        # The indexed draw takes the triangles in the order of their highest vertex index: llvmpipe shades
        # vertices through a small cache over the index stream, and this order (of a model whose vertex
        # indices follow its surface) re-shades about a third fewer vertices than the model's own order.
        # (The expanded draw keeps the caller's order: its primitive ids are triangle indices.)
        order = np.argsort(triangles.max(axis=1), kind="stable")
        self.index_buf = ctx.buffer(np.ascontiguousarray(triangles[order]).reshape(-1))
        self.used = np.unique(self.flat).astype(np.intp)
        """The vertices the triangles use (their screen box is the picture's)."""
        self.used_rows = np.empty((3, self.used.size), dtype=np.float32)
        self.used_view_rows = np.empty((3, self.used.size), dtype=np.float32)
        self.covers: dict[int, bool] = {}
        """id(other topology) -> whether all the vertices it uses are among these (see ``_covers``)."""
        self.hidden: np.ndarray | None = None
        self.hidden_buf = ctx.buffer(np.zeros((self.flat.size, 3), dtype=np.float32))

    def vertex_normals(self, v: np.ndarray) -> np.ndarray:
        """(N, 3) unit area-weighted vertex normals of the (N, 3) float32 positions ``v``: a buffer of this
        topology, overwritten by the next call."""
        rows, p, f, tmp = self._rows, self._corner_rows, self._face_rows, self._tmp
        np.copyto(rows, v.T)
        for k in range(3):
            for c in range(3):
                np.take(rows[c], self.corners[k], out=p[k, c])
        p[1] -= p[0]
        p[2] -= p[0]
        (ax, ay, az), (bx, by, bz) = p[1], p[2]
        # face normal = edge1 x edge2 (length = twice the area: the sum below is area-weighted)
        np.multiply(ay, bz, out=f[0])
        f[0] -= np.multiply(az, by, out=tmp)
        np.multiply(az, bx, out=f[1])
        f[1] -= np.multiply(ax, bz, out=tmp)
        np.multiply(ax, by, out=f[2])
        f[2] -= np.multiply(ay, bx, out=tmp)
        n, length = self._normal_rows, self._length
        for c in range(3):
            n[c] = self.accumulate @ f[c]
        np.multiply(n[0], n[0], out=length)
        length += n[1] * n[1]
        length += n[2] * n[2]
        np.sqrt(length, out=length)
        np.maximum(length, 1e-12, out=length)
        n /= length
        np.copyto(self._normals, n.T)
        return self._normals


def _as_f32(a: np.ndarray, shape_tail: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        raise BadInputError(f"{what} must have shape (N, {', '.join(map(str, shape_tail))}), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class OffscreenRenderer:
    """Renders a triangle mesh into an offscreen framebuffer of ``width`` x ``height`` pixels.

    Owns an EGL standalone context unless ``ctx`` is given (e.g. the live window's context). ``samples``:
    MSAA samples (0 = off; None = 4 on a GPU, off on a software rasteriser such as llvmpipe). :meth:`draw`
    leaves a full picture in :attr:`color_texture` (image row 0 at texture row 0) for the window to show
    without a read-back; :meth:`render` returns a numpy image.
    """

    def __init__(self, width: int, height: int, ctx: moderngl.Context | None = None,
                 samples: int | None = 4) -> None:
        if width <= 0 or height <= 0:
            raise BadInputError(f"render size must be positive, got {width}x{height}")
        self.width = int(width)
        self.height = int(height)
        self._own_ctx = ctx is None
        self.ctx: moderngl.Context = create_headless_context() if ctx is None else ctx
        c = self.ctx
        if c.version_code < 330:
            raise MissingResourceError(f"OpenGL 3.3 is needed for rendering, got {c.version_code}")
        max_samples = int(c.info.get("GL_MAX_SAMPLES", 0) or 0)
        if samples is None:
            # "Auto": anti-aliasing on a GPU; on a software rasteriser 4x MSAA costs about 2.5x the time.
            samples = 0 if is_software_renderer(c) else 4
        self.samples = min(int(samples), max_samples) if samples > 1 else 0
        self._released = False
        size = (self.width, self.height)

        self._mesh_vert = load_shader_source("mesh.vert")
        self._mesh_frag = load_shader_source("mesh.frag")
        self._mesh_progs: dict[tuple[int, bool, int], moderngl.Program] = {}
        self._ids_prog = c.program(vertex_shader=self._mesh_vert,
                                   fragment_shader=load_shader_source("mesh_ids.frag"))
        self._bg_prog = c.program(vertex_shader=load_shader_source("fullscreen.vert"),
                                  fragment_shader=load_shader_source("background.frag"))
        self._points_prog = c.program(vertex_shader=load_shader_source("points.vert"),
                                      fragment_shader=load_shader_source("points.frag"))
        self._bg_vao = c.vertex_array(self._bg_prog, [])
        self._points_buf = c.buffer(reserve=478 * 8, dynamic=True)
        self._points_vao = c.vertex_array(self._points_prog, [(self._points_buf, "2f", "in_px")])

        # Colour target (resolved, readable) and, with MSAA, the multisampled target drawn into.
        self.color_texture = c.texture(size, 4)
        self.color_texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self._resolve_fbo = c.framebuffer([self.color_texture], c.depth_renderbuffer(size))
        if self.samples:
            self._draw_fbo = c.framebuffer([c.renderbuffer(size, 4, samples=self.samples)],
                                           c.depth_renderbuffer(size, samples=self.samples))
        else:
            self._draw_fbo = self._resolve_fbo
        self._ids_fbo: moderngl.Framebuffer | None = None   # created by the first render_ids/render_depth
        self._scratch = np.empty(self.width * self.height * 4, dtype=np.uint8)          # RGBA read-back
        self._blend_scratch = np.empty(self.width * self.height * 7, dtype=np.uint8)    # compositing
        self._gl = _DirectGL.load()
        self._upload_scratch = np.empty(self.width * self.height * 3, dtype=np.uint8)   # texture boxes

        # Vertex buffers: allocated per topology, orphaned and rewritten every frame.
        self._buffers = {name: c.buffer(reserve=16, dynamic=True) for name in (
            "pos", "normal", "color", "scalar", "xpos", "xnormal", "xcolor", "xscalar")}
        self._vaos: dict[tuple[int, bool, int], moderngl.VertexArray] = {}
        self._topologies: list[_Topology] = []   # most recent first; a few (face-only and whole-head views)
        self._topology: _Topology | None = None
        self._expanded: tuple[int, set[str]] = (0, set())   # (topology id, per-vertex arrays expanded)
        self._mesh: dict[str, np.ndarray] = {}
        self._normals_topology: _Topology | None = None

        self._textures: dict[str, moderngl.Texture] = {}
        self._bg_fbo: moderngl.Framebuffer | None = None
        self._clear_cache: np.ndarray | None = None
        self._colormaps: dict[str, moderngl.Texture] = {}
        self._default_sh = default_sh()
        self._identity = np.eye(4)

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def _current(self) -> AbstractContextManager[object]:
        """Make the own EGL context current for a call (several renderers may live in one thread); a
        context given by the caller (the window's) is the caller's to make current."""
        return self.ctx if self._own_ctx else nullcontext()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._own_ctx:
            self.ctx.release()  # and with it every object of the context
            return
        objs: list[moderngl.Buffer | moderngl.Texture | moderngl.VertexArray | moderngl.Framebuffer
                   | moderngl.Program] = [*self._buffers.values(), self._points_buf,
                                          *(t.index_buf for t in self._topologies),
                                          *(t.hidden_buf for t in self._topologies),
                                          *self._vaos.values(), self._bg_vao, self._points_vao,
                                          *self._textures.values(), *self._colormaps.values()]
        if self._bg_fbo is not None:
            objs.append(self._bg_fbo)
        for fbo in {f for f in (self._draw_fbo, self._resolve_fbo, self._ids_fbo) if f is not None}:
            objs += [*fbo.color_attachments, fbo]  # type: ignore[list-item]
            if fbo.depth_attachment is not None:
                objs.append(fbo.depth_attachment)  # type: ignore[arg-type]
        objs += [*self._mesh_progs.values(), self._ids_prog, self._bg_prog, self._points_prog]
        for obj in objs:
            obj.release()

    # ------------------------------------------------------------------ public API
    def render(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
               mode: str = "lit", *, vertex_colors: np.ndarray | None = None,
               sh_coeffs: np.ndarray | None = None, scalars: np.ndarray | None = None,
               scalar_range: tuple[float, float] | None = None, texture_image: np.ndarray | None = None,
               background: np.ndarray | None = None, wireframe_overlay: bool = False,
               view: np.ndarray | None = None, texture_intrinsics: Intrinsics | None = None,
               points_px: np.ndarray | None = None, opacity: float = 1.0,
               clear_color: tuple[float, float, float] = DEFAULT_CLEAR_COLOR,
               wire_color: tuple[float, float, float, float] = DEFAULT_WIRE_COLOR, wire_width: float = 0.6,
               colormap: str = "auto", point_color: tuple[float, float, float, float] = (1.0, 0.3, 0.2, 1.0),
               point_size: float = 3.0, specular: float = 0.0, hidden_edges: np.ndarray | None = None,
               viewport: Rect | None = None, reuse_mesh: bool = False,
               normal_triangles: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Draw the mesh and return the (H, W, 3) uint8 RGB picture.

        Keyword extras beyond the shared contract:

        * ``view``: 4x4 camera -> view transform for another viewpoint (e.g. :func:`orbit_view_matrix`);
        * ``texture_intrinsics``: the camera that saw ``texture_image`` when it is not ``intrinsics``;
        * ``points_px``: (K, 2) dots drawn on top (landmarks), with ``point_color`` and ``point_size``;
        * ``opacity`` of the mesh over the background; ``clear_color`` where nothing is drawn;
        * ``specular``: a soft highlight from the key light in "lit" (display; 0 = the pure SH model);
        * ``hidden_edges``: (T, 3) bool, edges the wireframe leaves out, edge k opposite corner k
          (e.g. :func:`quad_diagonals`); ``wire_color`` (RGBA) and ``wire_width`` (pixels);
        * ``colormap``: "auto" = "coolwarm" when the scalar range straddles 0, else "viridis";
        * ``viewport``: draw into this rectangle of the picture only; ``intrinsics`` then describe a camera
          of the rectangle's size, and the rest of ``out`` is left as it is;
        * ``reuse_mesh``: the vertices, colours and scalars are those of the previous call (skip the upload);
        * ``normal_triangles``: triangles whose faces give the vertex normals (default: the drawn ones), over
          at least the vertices ``triangles`` use: a larger surface (the border of a partial mesh is shaded
          as the surface it was cut from) or the full mesh of a simplified one (smooth shading); a later
          ``reuse_mesh`` call drawing triangles over these vertices reuses the normals;
        * ``out``: a preallocated (H, W, 3) uint8 array, filled and returned.
        """
        with self._current():
            return self._render(vertices_mm, triangles, intrinsics, mode, vertex_colors=vertex_colors,
                                sh_coeffs=sh_coeffs, scalars=scalars, scalar_range=scalar_range,
                                texture_image=texture_image, background=background,
                                wireframe_overlay=wireframe_overlay, view=view,
                                texture_intrinsics=texture_intrinsics, points_px=points_px, opacity=opacity,
                                clear_color=clear_color, wire_color=wire_color, wire_width=wire_width,
                                colormap=colormap, point_color=point_color, point_size=point_size,
                                specular=specular, hidden_edges=hidden_edges,
                                viewport=viewport, reuse_mesh=reuse_mesh,
                                normal_triangles=normal_triangles, out=out)

    def _render(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics, mode: str, *,
                background: np.ndarray | None, clear_color: tuple[float, float, float],
                viewport: Rect | None, out: np.ndarray | None, **options: Any) -> np.ndarray:
        rect = self._viewport(viewport)
        if out is None:
            out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        elif out.shape != (self.height, self.width, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise BadInputError(f"out must be a contiguous ({self.height}, {self.width}, 3) uint8 array")
        x, y, w, h = rect
        if background is not None:
            if background.shape != (self.height, self.width, 3):
                raise BadInputError(f"background must be ({self.height}, {self.width}, 3), "
                                    f"got {background.shape}")
            if background is not out:
                np.copyto(out[y:y + h, x:x + w], background[y:y + h, x:x + w])
        else:
            self.fill(out, rect, clear_color)
        # Over a background: the mesh alone (premultiplied RGBA), composited here into ``out``, which already
        # holds the background.
        box = self._draw(vertices_mm, triangles, intrinsics, mode, rect, crop=True,
                         transparent=background is not None, clear_color=clear_color, **options)
        if box is not None:
            self._copy_box(out, box, over=background is not None)
        return out

    def flush(self) -> None:
        """Start rasterising what was drawn: a software rasteriser then works on its own threads while the
        caller prepares the next view (see :meth:`read_box_into`)."""
        if self._gl is not None:
            with self._current():
                self._gl.flush()

    def read_box_into(self, out: np.ndarray, box: Rect, *, over: bool) -> None:
        """Put ``box`` (as returned by :meth:`draw` with ``crop``) of the drawn picture into ``out``, an
        (H, W, 3) uint8 picture of the renderer's size: ``over`` composites a ``transparent=True`` draw over
        what ``out`` shows there, else the pixels replace it.

        With :meth:`draw`, :meth:`flush` and this, a caller draws several views before reading any back, so
        the rasteriser's work on one overlaps the CPU's on the next. The views share one picture: where a
        later view's box overlaps an earlier one, the earlier read-back shows the later view there (the
        caller paints that area afterwards, as ``compose_views`` does, or keeps the boxes apart).
        """
        if out.shape != (self.height, self.width, 3) or out.dtype != np.uint8:
            raise BadInputError(f"out must be a ({self.height}, {self.width}, 3) uint8 array")
        with self._current():
            self._copy_box(out, box, over=over)

    def fill(self, out: np.ndarray, rect: Rect, color: tuple[float, float, float]) -> None:
        """Fill ``rect`` of ``out`` (H, W, 3) with an RGB colour in [0, 1] (a copy from a cached picture)."""
        x, y, w, h = rect
        np.copyto(out[y:y + h, x:x + w], self._clear_picture(color)[y:y + h, x:x + w])

    def _copy_box(self, out: np.ndarray, box: Rect, *, over: bool) -> None:
        bx, by, bw, bh = box
        patch = self._read_box(box)
        target = out[by:by + bh, bx:bx + bw]
        if over:
            composite_premultiplied(target, patch, self._blend_scratch)
        else:
            cv2.cvtColor(patch, cv2.COLOR_RGBA2RGB, dst=target)

    def _read_box(self, box: Rect) -> np.ndarray:
        """(h, w, 4) uint8 RGBA of ``box`` of the resolved picture (a view of a reused buffer)."""
        _, _, bw, bh = box
        patch = self._scratch[:bw * bh * 4].reshape(bh, bw, 4)
        self._resolve_fbo.use()
        if self._gl is not None:
            self._gl.read_rgba(box, patch)   # waits for the raster threads without holding the GIL
        else:
            self._resolve_fbo.read_into(patch, viewport=box, components=4, alignment=1)
        return patch

    def draw(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
             mode: str = "lit", *, crop: bool = False, **options: Any) -> Rect | None:
        """Like :meth:`render` (same keywords except ``out``) but leaves the picture in
        :attr:`color_texture` instead of reading it back (the live window shows it directly).

        With ``crop`` only the mesh's bounding box is drawn (and returned; None when the mesh is out of
        view): the rest of the texture is stale, for a caller that shows the background itself.
        ``transparent=True``: the mesh alone as premultiplied RGBA (``background`` is not used), for
        :meth:`read_box_into` with ``over``.
        """
        viewport = cast("Rect | None", options.pop("viewport", None))
        with self._current():
            return self._draw(vertices_mm, triangles, intrinsics, mode, self._viewport(viewport), crop=crop,
                              **options)

    def read(self, out: np.ndarray | None = None) -> np.ndarray:
        """The picture of the last :meth:`draw` as (H, W, 3) uint8 RGB (image row 0 first)."""
        if out is None:
            out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        with self._current():
            self._resolve_fbo.read_into(out, components=3, alignment=1)
        return out

    def render_depth(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
                     *, view: np.ndarray | None = None) -> np.ndarray:
        """(H, W) float32 view-space z in mm of the visible surface, 0 where nothing is drawn."""
        with self._current():
            ids = self._draw_ids(vertices_mm, triangles, intrinsics, view, expanded=False)
        return np.ascontiguousarray(ids[..., 2])

    def render_ids(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
                   *, view: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) int32 triangle index (-1 = empty) and (H, W, 3) float32 barycentric coordinates."""
        with self._current():
            ids = self._draw_ids(vertices_mm, triangles, intrinsics, view, expanded=True)
        tri = ids[..., 3].astype(np.int32) - 1
        bary = np.empty((self.height, self.width, 3), dtype=np.float32)
        bary[..., :2] = ids[..., :2]
        bary[..., 2] = 1.0 - ids[..., 0] - ids[..., 1]
        bary[tri < 0] = 0.0
        return tri, bary

    # ------------------------------------------------------------------ drawing
    def _draw(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics, mode: str,
              rect: Rect, *, crop: bool, vertex_colors: np.ndarray | None = None,
              sh_coeffs: np.ndarray | None = None, scalars: np.ndarray | None = None,
              scalar_range: tuple[float, float] | None = None, texture_image: np.ndarray | None = None,
              background: np.ndarray | None = None, wireframe_overlay: bool = False,
              view: np.ndarray | None = None, texture_intrinsics: Intrinsics | None = None,
              points_px: np.ndarray | None = None, opacity: float = 1.0,
              clear_color: tuple[float, float, float] = DEFAULT_CLEAR_COLOR,
              wire_color: tuple[float, float, float, float] = DEFAULT_WIRE_COLOR, wire_width: float = 0.6,
              colormap: str = "auto", point_color: tuple[float, float, float, float] = (1.0, 0.3, 0.2, 1.0),
              point_size: float = 3.0, specular: float = 0.0, hidden_edges: np.ndarray | None = None,
              reuse_mesh: bool = False, normal_triangles: np.ndarray | None = None,
              transparent: bool = False) -> Rect | None:
        """Draw into the framebuffer; with ``crop`` only the mesh's bounding box inside ``rect`` is drawn
        (returned; None when the mesh is not in view), else all of ``rect``. ``transparent``: the mesh alone
        as premultiplied RGBA over (0, 0, 0, 0), for the caller to composite (``background`` is ignored)."""
        if mode not in _MODE_INDEX:
            raise BadInputError(f"unknown render mode '{mode}' (available: {', '.join(RENDER_MODES)})")
        intr = self._fit_intrinsics(intrinsics, rect)
        if transparent:
            background = None
        if not reuse_mesh or not self._mesh:
            self._upload_mesh(vertices_mm, triangles, vertex_colors if mode == "lit" else None,
                              scalars if mode == "heatmap" else None, normal_triangles)
        else:
            topo = self._set_topology(triangles, self._mesh["pos"].shape[0])
            if self._normals_topology is not topo and not self._normals_cover(topo):
                # Normals depend on the triangles (a vertex outside this triangle set has none there).
                self._mesh["normal"] = topo.vertex_normals(self._mesh["pos"])
                _write(self._buffers["normal"], self._mesh["normal"])
                self._normals_topology = topo
                self._expanded = (0, set())
        verts = self._mesh["pos"]
        view_m = self._identity if view is None else np.asarray(view, dtype=np.float64)
        z = self._view_z(verts, view_m)
        zmin, zmax = float(z.min()), float(z.max())
        box: Rect | None = rect
        if crop:
            assert self._topology is not None
            box = self._mesh_box(verts, view_m, self._topology, intr, rect, points_px, point_size)
            if box is None:
                return None
        expanded = wireframe_overlay or mode == "wireframe"
        if expanded:
            self._set_hidden_edges(hidden_edges)
        prog = self._mesh_program(_MODE_INDEX[mode], expanded, 2 if transparent else int(background is not None))
        _mat4(prog, "u_view", view_m)
        _mat4(prog, "u_proj", projection_matrix(intr, *_clip_planes(zmin, zmax)))
        # The visible (front) half of a head spans about the first half of its depth range.
        _uniform(prog, "u_depth_range").value = (zmin, zmin + 0.55 * (zmax - zmin))
        _uniform(prog, "u_has_colors").value = mode == "lit" and "color" in self._mesh
        _uniform(prog, "u_albedo").value = DEFAULT_ALBEDO
        sh = self._default_sh if sh_coeffs is None else np.asarray(sh_coeffs, dtype=np.float32)
        if sh.shape != (9, 3):
            raise BadInputError(f"sh_coeffs must have shape (9, 3), got {sh.shape}")
        _uniform(prog, "u_sh").write(np.ascontiguousarray(sh, dtype=np.float32).tobytes())
        _uniform(prog, "u_texture").value = 0
        _uniform(prog, "u_background").value = 1
        _uniform(prog, "u_colormap").value = 2

        if mode == "heatmap":
            if "scalar" not in self._mesh:
                raise BadInputError("the heatmap mode needs per-vertex scalars")
            s = self._mesh["scalar"]
            lo, hi = (float(s.min()), float(s.max())) if scalar_range is None else map(float, scalar_range)
            hi = max(hi, lo + 1e-6)
            _uniform(prog, "u_scalar_range").value = (lo, hi)
            self._colormap(colormap if colormap != "auto" else
                           ("coolwarm" if lo < 0.0 < hi else "viridis")).use(location=2)
        if mode == "textured":
            if texture_image is None:
                raise BadInputError("the textured mode needs a texture_image")
            tex_intr = texture_intrinsics if texture_intrinsics is not None else intrinsics
            # Only the part of the image the mesh projects to can be looked up: upload just that.
            tex_box = _bounding_box(tex_intr.project(verts), (0, 0, texture_image.shape[1],
                                                              texture_image.shape[0]), pad=2)
            self._image_texture("texture", texture_image, tex_box).use(location=0)
            _uniform(prog, "u_tex_k").value = (tex_intr.fx, tex_intr.fy, tex_intr.cx, tex_intr.cy)
            _uniform(prog, "u_tex_size").value = (float(tex_intr.width), float(tex_intr.height))
        if background is not None:
            if background.shape != (self.height, self.width, 3):
                raise BadInputError(f"background must be ({self.height}, {self.width}, 3), "
                                    f"got {background.shape}")
            assert box is not None
            self._image_texture("background", background, box).use(location=1)
        _uniform(prog, "u_clear_color").value = tuple(float(v) for v in clear_color)
        _uniform(prog, "u_opacity").value = float(opacity)
        _uniform(prog, "u_wire_color").value = tuple(float(v) for v in wire_color)
        _uniform(prog, "u_wire_width").value = float(wire_width)
        _uniform(prog, "u_specular").value = float(specular)
        _uniform(prog, "u_key_light").value = KEY_LIGHT_DIRECTION

        ctx = self.ctx
        fbo = self._draw_fbo
        fbo.use()
        assert box is not None
        # The GL viewport is always the whole target (``intr`` already places a sub-rectangle's camera in
        # it); the scissor box keeps the drawing inside.
        fbo.viewport = (0, 0, self.width, self.height)
        fbo.scissor = box
        ctx.front_face = "cw"  # window y grows with image rows, which mirrors the winding
        ctx.disable(moderngl.BLEND | moderngl.CULL_FACE)
        if transparent:
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        elif background is not None and not self.samples:
            # Copy the background straight into the colour target (a blit honours the scissor box) and
            # clear only the depth: cheaper than a clear plus a full-box textured quad.
            ctx.copy_framebuffer(fbo, self._background_fbo())
            fbo.color_mask = (False, False, False, False)
            fbo.clear(depth=1.0)
            fbo.color_mask = (True, True, True, True)
            fbo.use()  # moderngl applies a framebuffer's colour mask when it is bound
        else:
            fbo.clear(*clear_color, 1.0, depth=1.0)
            if background is not None:
                ctx.disable(moderngl.DEPTH_TEST)
                _uniform(self._bg_prog, "u_background").value = 1
                self._bg_vao.render(moderngl.TRIANGLES, vertices=3)
        ctx.enable(moderngl.DEPTH_TEST)
        # Back faces are hidden behind front faces of the same head (about half the triangles, never seen):
        # culling them halves the rasteriser's work.
        ctx.enable(moderngl.CULL_FACE)
        ctx.cull_face = "back"
        self._draw_mesh(prog, expanded)
        ctx.disable(moderngl.CULL_FACE)
        if points_px is not None and len(points_px):
            self._draw_points(np.asarray(points_px)[:, :2] + (rect[0], rect[1]), point_color, point_size,
                              premultiplied_target=transparent)
        if self.samples:
            # The blit honours the scissor box: only the drawn pixels are resolved.
            self._resolve_fbo.scissor = box
            self._resolve_fbo.use()
            ctx.copy_framebuffer(self._resolve_fbo, self._draw_fbo)
        fbo.scissor = None  # type: ignore[assignment]
        self._resolve_fbo.scissor = None  # type: ignore[assignment]
        return box

    def _draw_points(self, points_px: np.ndarray, color: tuple[float, float, float, float],
                     size: float, premultiplied_target: bool = False) -> None:
        pts = np.ascontiguousarray(np.asarray(points_px)[:, :2], dtype=np.float32)
        _write(self._points_buf, pts)
        prog = self._points_prog
        _uniform(prog, "u_size").value = (float(self.width), float(self.height))
        _uniform(prog, "u_point_size").value = float(size)
        _uniform(prog, "u_point_color").value = tuple(float(c) for c in color)
        ctx = self.ctx
        ctx.disable(moderngl.DEPTH_TEST)
        ctx.enable(moderngl.BLEND | moderngl.PROGRAM_POINT_SIZE)
        if premultiplied_target:
            # Straight-alpha dots over a premultiplied layer: "over" for the colour and for the alpha.
            ctx.blend_func = (moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA,  # type: ignore[assignment]
                              moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA)
        else:
            ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        self._points_vao.render(moderngl.POINTS, vertices=pts.shape[0])
        ctx.disable(moderngl.BLEND)

    def _draw_ids(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
                  view: np.ndarray | None, expanded: bool) -> np.ndarray:
        rect = (0, 0, self.width, self.height)
        intr = self._fit_intrinsics(intrinsics, rect)
        self._upload_mesh(vertices_mm, triangles, None, None)
        verts = self._mesh["pos"]
        view_m = self._identity if view is None else np.asarray(view, dtype=np.float64)
        z = self._view_z(verts, view_m)
        zmin, zmax = float(z.min()), float(z.max())
        prog = self._ids_prog
        if self._ids_fbo is None:
            # Barycentric / depth / triangle-index target: float32, never multisampled.
            size = (self.width, self.height)
            self._ids_fbo = self.ctx.framebuffer([self.ctx.texture(size, 4, dtype="f4")],
                                                 self.ctx.depth_renderbuffer(size))
        _mat4(prog, "u_view", view_m)
        _mat4(prog, "u_proj", projection_matrix(intr, *_clip_planes(zmin, zmax)))
        ctx = self.ctx
        self._ids_fbo.use()
        self._ids_fbo.viewport = rect
        ctx.front_face = "cw"
        self._ids_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.disable(moderngl.BLEND | moderngl.CULL_FACE)
        ctx.enable(moderngl.DEPTH_TEST)
        self._draw_mesh(prog, expanded)
        out = np.empty((self.height, self.width, 4), dtype=np.float32)
        self._ids_fbo.read_into(out, components=4, dtype="f4", alignment=1)
        return out

    # ------------------------------------------------------------------ geometry
    def _viewport(self, viewport: Rect | None) -> Rect:
        if viewport is None:
            return (0, 0, self.width, self.height)
        x, y, w, h = (int(v) for v in viewport)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > self.width or y + h > self.height:
            raise BadInputError(f"viewport {viewport} does not fit the {self.width}x{self.height} picture")
        return (x, y, w, h)

    def _fit_intrinsics(self, intrinsics: Intrinsics, rect: Rect) -> Intrinsics:
        """Intrinsics of the whole target for a camera of ``intrinsics`` drawn into ``rect``."""
        x, y, w, h = rect
        intr = intrinsics if (intrinsics.width, intrinsics.height) == (w, h) else intrinsics.scaled(w, h)
        if rect == (0, 0, self.width, self.height):
            return intr
        # A viewport is an offset principal point in the full target.
        return Intrinsics(intr.fx, intr.fy, intr.cx + x, intr.cy + y, self.width, self.height)

    def _mesh_box(self, verts: np.ndarray, view: np.ndarray, topo: _Topology, intr: Intrinsics, rect: Rect,
                  points_px: np.ndarray | None, point_size: float) -> Rect | None:
        """Screen box of the vertices ``topo``'s triangles use (seen through ``view``) and of the dots,
        clipped to ``rect``."""
        rows = topo.used_rows
        for c in range(3):
            np.take(verts[:, c], topo.used, out=rows[c])
        if view is not self._identity:
            x, y, z = rows
            rows = topo.used_view_rows
            for i in range(3):
                np.multiply(x, view[i, 0], out=rows[i])
                rows[i] += y * view[i, 1]
                rows[i] += z * view[i, 2]
                rows[i] += view[i, 3]
        x, y, z = rows
        if not z.min() > 1.0:
            # Geometry behind the camera is clipped; be safe and draw the whole rectangle.
            return rect if z.max() > 1.0 else None
        # Only the extremes of x/z and y/z matter: no (N, 2) array of projections.
        xz = np.divide(x, z, out=x)
        yz = np.divide(y, z, out=y)
        uv = np.array([[intr.fx * xz.min() + intr.cx, intr.fy * yz.min() + intr.cy],
                       [intr.fx * xz.max() + intr.cx, intr.fy * yz.max() + intr.cy]])
        if points_px is not None and len(points_px):
            uv = np.concatenate([uv, np.asarray(points_px, dtype=np.float64)[:, :2] + (rect[0], rect[1])])
        return _bounding_box(uv, rect, pad=int(np.ceil(point_size)) + 2)

    def _view_z(self, verts: np.ndarray, view: np.ndarray) -> np.ndarray:
        """(N,) view-space depth of every vertex (the clip planes hug the whole mesh)."""
        if view is self._identity:
            return verts[:, 2]
        z = verts[:, 0] * view[2, 0]
        z += verts[:, 1] * view[2, 1]
        z += verts[:, 2] * view[2, 2]
        z += view[2, 3]
        return z

    # ------------------------------------------------------------------ resources
    def _mesh_program(self, mode: int, wireframe: bool, background: int) -> moderngl.Program:
        """``background``: 0 = the clear colour, 1 = the background texture, 2 = transparent (premultiplied)."""
        key = (mode, wireframe, background)
        prog = self._mesh_progs.get(key)
        if prog is None:
            version, rest = self._mesh_frag.split("\n", 1)
            defines = (f"#define MODE {mode}\n#define WIREFRAME {int(wireframe)}\n"
                       f"#define BACKGROUND {int(background)}\n")
            prog = self.ctx.program(vertex_shader=self._mesh_vert,
                                    fragment_shader=f"{version}\n{defines}{rest}")
            self._mesh_progs[key] = prog
        return prog

    def _draw_mesh(self, prog: moderngl.Program, expanded: bool) -> None:
        topo = self._topology
        assert topo is not None
        if expanded:
            self._expand(topo)
        key = (prog.glo, expanded, id(topo))
        vao = self._vaos.get(key)
        if vao is None:
            b = self._buffers
            x = "x" if expanded else ""
            # Only the attributes this program variant uses (binding an optimised-away one is a GL error).
            content = [(b[x + name], fmt, f"in_{name}") for name, fmt in (
                ("pos", "3f"), ("normal", "3f"), ("color", "3f"), ("scalar", "f")) if f"in_{name}" in prog]
            if expanded and "in_hidden_edges" in prog:
                content.append((topo.hidden_buf, "3f", "in_hidden_edges"))
            if expanded:
                vao = self.ctx.vertex_array(prog, content)
            else:
                vao = self.ctx.vertex_array(prog, content, index_buffer=topo.index_buf, index_element_size=4)
            self._vaos[key] = vao
        if self._gl is not None:
            self._gl.draw(prog.glo, vao.glo, topo.flat.size, indexed=not expanded)
        else:
            vao.render(moderngl.TRIANGLES, vertices=topo.flat.size)

    def _upload_mesh(self, vertices_mm: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None,
                     scalars: np.ndarray | None, normal_triangles: np.ndarray | None = None) -> None:
        verts = _as_f32(vertices_mm, (3,), "vertices_mm")
        n = verts.shape[0]
        normals_topo = None if normal_triangles is None else self._set_topology(normal_triangles, n)
        topo = self._set_topology(triangles, n)
        if normals_topo is None or not self._covers(normals_topo, topo):
            normals_topo = topo
        self._mesh = {"pos": verts, "normal": normals_topo.vertex_normals(verts)}
        self._normals_topology = normals_topo
        if colors is not None:
            col = _as_f32(colors, (3,), "vertex_colors")
            if col.shape[0] != n:
                raise BadInputError(f"vertex_colors has {col.shape[0]} rows for {n} vertices")
            self._mesh["color"] = col
        if scalars is not None:
            s = np.ascontiguousarray(scalars, dtype=np.float32).reshape(-1)
            if s.shape[0] != n:
                raise BadInputError(f"scalars has {s.shape[0]} values for {n} vertices")
            self._mesh["scalar"] = s
        for name, data in self._mesh.items():
            _write(self._buffers[name], data)
        self._expanded = (0, set())

    def _normals_cover(self, topo: _Topology) -> bool:
        """Whether the current normals (of another triangle set) serve ``topo`` too."""
        return self._normals_topology is not None and self._covers(self._normals_topology, topo)

    @staticmethod
    def _covers(outer: _Topology, inner: _Topology) -> bool:
        """True when every vertex ``inner``'s triangles use is one of ``outer``'s (computed once per pair).

        Then ``outer``'s vertex normals serve ``inner``: every vertex ``inner`` draws has its normal, on
        ``inner``'s border it is the surface's, not the border's (e.g. the camera overlay's face mask drawn
        with the normals of the whole face area), and a simplified mesh over the same vertices is shaded
        with the full mesh's smooth normals.
        """
        if outer is inner:
            return True
        known = outer.covers.get(id(inner))
        if known is None:
            known = bool(np.isin(inner.used, outer.used).all())
            outer.covers[id(inner)] = known
        return known

    def _expand(self, topo: _Topology) -> None:
        """Per-corner copies of the per-vertex data for the non-indexed (barycentric) draw."""
        if self._expanded[0] != id(topo):
            self._expanded = (id(topo), set())
        done = self._expanded[1]
        for name, data in self._mesh.items():
            if name not in done:
                _write(self._buffers["x" + name], np.take(data, topo.flat, axis=0))
                done.add(name)

    def _set_topology(self, triangles: np.ndarray, n_vertices: int) -> _Topology:
        for topo in self._topologies:
            # A full comparison (tens of microseconds), not identity: callers may edit their array in place.
            if topo.n_vertices == n_vertices and triangles.shape == topo.triangles.shape and np.array_equal(
                    triangles, topo.triangles):
                self._topology = topo
                return topo
        tris = np.asarray(triangles)
        if tris.ndim != 2 or tris.shape[1] != 3 or tris.shape[0] == 0:
            raise BadInputError(f"triangles must have shape (T, 3) with T > 0, got {tris.shape}")
        if tris.min() < 0 or tris.max() >= n_vertices:
            raise BadInputError(f"triangle indices must lie in [0, {n_vertices}), "
                                f"got [{tris.min()}, {tris.max()}]")
        topo = _Topology(np.array(tris, dtype=np.int32, order="C"), n_vertices, self.ctx)
        if self._topologies and self._topologies[0].n_vertices != n_vertices:
            self._forget_topologies()
        if len(self._topologies) >= 4:
            self._forget_topologies(self._topologies[-1])
        self._topologies.insert(0, topo)
        self._topology = topo
        log.debug("mesh topology: %d vertices, %d triangles", n_vertices, tris.shape[0])
        return topo

    def _set_hidden_edges(self, hidden_edges: np.ndarray | None) -> None:
        topo = self._topology
        assert topo is not None
        n_tri = topo.triangles.shape[0]
        if hidden_edges is None:
            if topo.hidden is None:
                return
            mask = np.zeros((n_tri, 3), dtype=bool)
        else:
            mask = np.asarray(hidden_edges, dtype=bool)
            if mask.shape != (n_tri, 3):
                raise BadInputError(f"hidden_edges must have shape ({n_tri}, 3), got {mask.shape}")
        if topo.hidden is not None and np.array_equal(topo.hidden, mask):
            return
        topo.hidden = mask.copy()
        # One value per corner of the expanded draw; the three corners of a triangle carry the same mask.
        _write(topo.hidden_buf, np.repeat(mask.astype(np.float32), 3, axis=0))

    def _forget_topologies(self, only: _Topology | None = None) -> None:
        for topo in [t for t in self._topologies if only is None or t is only]:
            for key in [k for k in self._vaos if k[2] == id(topo)]:
                self._vaos.pop(key).release()
            topo.index_buf.release()
            topo.hidden_buf.release()
            self._topologies.remove(topo)
            for other in self._topologies:
                other.covers.pop(id(topo), None)   # (a new topology may get the same id)
            if self._normals_topology is topo:
                self._normals_topology = None

    def _image_texture(self, slot: str, image: np.ndarray, box: Rect | None) -> moderngl.Texture:
        """Upload ``image`` (or only its ``box``) into a texture of the image's size, reused across frames."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise BadInputError(f"images must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        tex = self._textures.get(slot)
        if tex is None or tex.size != (w, h):
            if tex is not None:
                tex.release()
            tex = self.ctx.texture((w, h), 3, alignment=1)
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
            self._textures[slot] = tex
        if box is None or box == (0, 0, w, h):
            tex.write(np.ascontiguousarray(img), alignment=1)
        else:
            x, y, bw, bh = box
            if img.shape[:2] == (self.height, self.width):
                # Through a preallocated buffer: no per-frame allocation for the box copy.
                patch = self._upload_scratch[:bw * bh * 3].reshape(bh, bw, 3)
                np.copyto(patch, img[y:y + bh, x:x + bw])
            else:
                patch = np.ascontiguousarray(img[y:y + bh, x:x + bw])
            tex.write(patch, viewport=box, alignment=1)
        return tex

    def _clear_picture(self, color: tuple[float, float, float]) -> np.ndarray:
        """A picture of the clear colour, kept for the next frame (copying it is a memcpy, while filling an
        (H, W, 3) array with an RGB triple through numpy broadcasting takes milliseconds)."""
        rgb = np.round(np.clip(np.asarray(color, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
        cached = self._clear_cache
        if cached is None or not np.array_equal(cached[0, 0], rgb):
            cached = np.empty((self.height, self.width, 3), dtype=np.uint8)
            cached[0] = rgb
            cached[1:] = cached[0]
            self._clear_cache = cached
        return cached

    def _background_fbo(self) -> moderngl.Framebuffer:
        """A framebuffer reading the background texture (for the blit into the colour target)."""
        tex = self._textures["background"]
        if self._bg_fbo is None or self._bg_fbo.color_attachments[0] is not tex:
            if self._bg_fbo is not None:
                self._bg_fbo.release()
            self._bg_fbo = self.ctx.framebuffer([tex])
        return self._bg_fbo

    def _colormap(self, name: str) -> moderngl.Texture:
        tex = self._colormaps.get(name)
        if tex is None:
            lut = colormap_lut(name)
            tex = self.ctx.texture((lut.shape[0], 1), 3, lut.tobytes(), alignment=1)
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
            self._colormaps[name] = tex
        return tex


def quad_diagonals(triangles: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """(T, 3) bool: which triangle edges (edge k opposite corner k) are diagonals of ``quads`` (Q, 4),
    i.e. the ``hidden_edges`` that make the wireframe of a triangulated quad mesh show its quads."""
    q = np.asarray(quads, dtype=np.int64)
    diagonals = np.concatenate([q[:, [0, 2]], q[:, [1, 3]]])
    n = int(max(q.max(), np.max(triangles))) + 1

    def key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.minimum(a, b) * n + np.maximum(a, b)

    diag_keys = key(diagonals[:, 0], diagonals[:, 1])
    t = np.asarray(triangles, dtype=np.int64)
    return np.stack([np.isin(key(t[:, (k + 1) % 3], t[:, (k + 2) % 3]), diag_keys) for k in range(3)], axis=1)


def _bounding_box(uv: np.ndarray, rect: Rect, pad: int) -> Rect | None:
    """Pixel rectangle covering the points ``uv`` (plus ``pad``), clipped to ``rect``; None if outside."""
    x, y, w, h = rect
    finite = uv[np.isfinite(uv).all(axis=1)]
    if finite.size == 0:
        return None
    x0 = max(int(np.floor(finite[:, 0].min())) - pad, x)
    y0 = max(int(np.floor(finite[:, 1].min())) - pad, y)
    x1 = min(int(np.ceil(finite[:, 0].max())) + pad + 1, x + w)
    y1 = min(int(np.ceil(finite[:, 1].max())) + pad + 1, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _clip_planes(zmin: float, zmax: float) -> tuple[float, float]:
    """Near/far planes hugging the mesh (depth precision); geometry closer than 1 mm is clipped."""
    near = max(zmin * 0.9, 1.0)
    return near, max(zmax * 1.1, near + 1.0)


def _write(buf: moderngl.Buffer, data: np.ndarray) -> None:
    """Orphan-and-write: the driver hands out fresh storage if the GPU still reads the old contents."""
    if buf.size != data.nbytes:
        buf.orphan(data.nbytes)
    else:
        buf.orphan()
    buf.write(data)


def _uniform(prog: moderngl.Program, name: str) -> moderngl.Uniform:
    member = prog.get(name, None)
    if not isinstance(member, moderngl.Uniform):
        # Optimised away by the GLSL compiler (unused in this program): writes go to a throw-away.
        return _NULL_UNIFORM
    return member


class _NullUniform:
    value: object = None

    def write(self, data: bytes) -> None:
        pass


_NULL_UNIFORM = cast(moderngl.Uniform, _NullUniform())


def _mat4(prog: moderngl.Program, name: str, m: np.ndarray) -> None:
    # GLSL matrices are column-major.
    _uniform(prog, name).write(np.ascontiguousarray(m.T, dtype=np.float32).tobytes())
