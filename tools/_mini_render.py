"""Stop-gap EGL renderer with the ``OffscreenRenderer`` signature (only until realtime/render.py lands).

Draws per-vertex-coloured SH-lit meshes and triangle-id/barycentric/depth buffers with the project's pixel
convention (pixel centres at integer coordinates, OpenCV camera space in mm).
"""

from __future__ import annotations

from typing import Any

import moderngl
import numpy as np

from realtime.camera import Intrinsics

_VS_COMMON = """
uniform vec4 K; uniform vec2 size; uniform vec2 nf;
vec4 project(vec3 p) {
    float u = K.x * p.x / p.z + K.z; float v = K.y * p.y / p.z + K.w;
    float xn = 2.0 * (u + 0.5) / size.x - 1.0; float yn = 1.0 - 2.0 * (v + 0.5) / size.y;
    float zn = 2.0 * (p.z - nf.x) / (nf.y - nf.x) - 1.0;
    return vec4(xn * p.z, yn * p.z, zn * p.z, p.z);
}
"""

_LIT_VS = "#version 330\n" + _VS_COMMON + """
in vec3 pos; in vec3 nrm; in vec3 col; out vec3 v_n; out vec3 v_c;
void main() { gl_Position = project(pos); v_n = nrm; v_c = col; }
"""
_LIT_FS = """#version 330
uniform vec3 sh[9]; in vec3 v_n; in vec3 v_c; out vec4 frag;
void main() {
    vec3 n = normalize(v_n);
    vec3 s = sh[0] * 0.282095 + 0.488603 * (sh[1] * n.y + sh[2] * n.z + sh[3] * n.x)
        + 1.092548 * (sh[4] * n.x * n.y + sh[5] * n.y * n.z + sh[7] * n.x * n.z)
        + sh[6] * 0.315392 * (3.0 * n.z * n.z - 1.0) + sh[8] * 0.546274 * (n.x * n.x - n.y * n.y);
    frag = vec4(clamp(v_c * max(s, vec3(0.0)), 0.0, 1.0), 1.0);
}
"""
_ID_VS = "#version 330\n" + _VS_COMMON + """
in vec3 pos; in vec3 bary; out vec3 v_b; out float v_z; flat out int v_id;
void main() { gl_Position = project(pos); v_b = bary; v_z = pos.z; v_id = gl_VertexID / 3; }
"""
_ID_FS = """#version 330
in vec3 v_b; in float v_z; flat in int v_id; out vec4 frag;
void main() { frag = vec4(float(v_id + 1), v_b.x, v_b.y, v_z); }
"""


class MiniRenderer:
    def __init__(self, width: int, height: int, samples: int = 4) -> None:
        self.width, self.height = width, height
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.lit = self.ctx.program(vertex_shader=_LIT_VS, fragment_shader=_LIT_FS)
        self.ids = self.ctx.program(vertex_shader=_ID_VS, fragment_shader=_ID_FS)
        size = (width, height)
        self.ms_fbo = self.ctx.framebuffer(self.ctx.renderbuffer(size, 4, samples=samples),
                                           self.ctx.depth_renderbuffer(size, samples=samples))
        self.fbo = self.ctx.framebuffer(self.ctx.renderbuffer(size, 4))
        self.id_fbo = self.ctx.framebuffer(self.ctx.renderbuffer(size, 4, dtype="f4"),
                                           self.ctx.depth_renderbuffer(size))

    def close(self) -> None:
        self.ctx.release()

    def __enter__(self) -> MiniRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _uniforms(self, prog: moderngl.Program, vertices: np.ndarray, intr: Intrinsics) -> None:
        z = vertices[:, 2]
        prog["K"].value = (intr.fx, intr.fy, intr.cx, intr.cy)
        prog["size"].value = (float(self.width), float(self.height))
        prog["nf"].value = (max(float(z.min()) - 50.0, 1.0), float(z.max()) + 50.0)

    def render(self, vertices_mm: np.ndarray, triangles: np.ndarray, intrinsics: Intrinsics,
               mode: str = "lit", *, vertex_colors: np.ndarray | None = None,
               sh_coeffs: np.ndarray | None = None, background: np.ndarray | None = None,
               **_: Any) -> np.ndarray:
        v = np.asarray(vertices_mm, np.float32)
        t = np.asarray(triangles, np.int32)
        fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
        n = np.zeros_like(v)
        for k in range(3):
            np.add.at(n, t[:, k], fn)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
        col = np.full_like(v, 0.8) if vertex_colors is None else np.asarray(vertex_colors, np.float32)
        sh = np.zeros((9, 3), np.float32)
        if sh_coeffs is None:
            sh[0], sh[2] = 0.7 / 0.282095, -0.4 / 0.488603
        else:
            sh[:] = sh_coeffs
        data = np.concatenate([v, n, col], axis=1).astype("f4")
        vbo = self.ctx.buffer(data.tobytes())
        ibo = self.ctx.buffer(t.astype("i4").tobytes())
        vao = self.ctx.vertex_array(self.lit, [(vbo, "3f 3f 3f", "pos", "nrm", "col")], ibo)
        self._uniforms(self.lit, v, intrinsics)
        self.lit["sh"].write(sh.astype("f4").tobytes())
        self.ms_fbo.use()
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.clear(0.0, 0.0, 0.0, 0.0)
        vao.render()
        self.ctx.copy_framebuffer(self.fbo, self.ms_fbo)
        raw = np.frombuffer(self.fbo.read(components=4), np.uint8).reshape(self.height, self.width, 4)[::-1]
        for obj in (vao, vbo, ibo):
            obj.release()
        rgb = raw[..., :3].astype(np.float32)
        if background is not None:
            a = raw[..., 3:].astype(np.float32) / 255.0
            rgb = rgb * a + background.astype(np.float32) * (1.0 - a)
        return np.ascontiguousarray(rgb.astype(np.uint8))

    def _id_buffer(self, vertices_mm: np.ndarray, triangles: np.ndarray,
                   intrinsics: Intrinsics) -> np.ndarray:
        v = np.asarray(vertices_mm, np.float32)
        t = np.asarray(triangles, np.int32)
        pos = v[t.reshape(-1)]
        bary = np.tile(np.eye(3, dtype=np.float32), (len(t), 1))
        vbo = self.ctx.buffer(np.concatenate([pos, bary], axis=1).astype("f4").tobytes())
        vao = self.ctx.vertex_array(self.ids, [(vbo, "3f 3f", "pos", "bary")])
        self._uniforms(self.ids, v, intrinsics)
        self.id_fbo.use()
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.clear(0.0, 0.0, 0.0, 0.0)
        vao.render()
        buf = np.frombuffer(self.id_fbo.read(components=4, dtype="f4"), np.float32)
        vao.release()
        vbo.release()
        return buf.reshape(self.height, self.width, 4)[::-1]

    def render_ids(self, vertices_mm: np.ndarray, triangles: np.ndarray,
                   intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
        b = self._id_buffer(vertices_mm, triangles, intrinsics)
        tri = np.rint(b[..., 0]).astype(np.int32) - 1
        bary = np.stack([b[..., 1], b[..., 2], 1.0 - b[..., 1] - b[..., 2]], axis=-1)
        return tri, np.ascontiguousarray(bary.astype(np.float32))

    def render_depth(self, vertices_mm: np.ndarray, triangles: np.ndarray,
                     intrinsics: Intrinsics) -> np.ndarray:
        b = self._id_buffer(vertices_mm, triangles, intrinsics)
        return np.where(b[..., 0] > 0.5, b[..., 3], 0.0).astype(np.float32)
