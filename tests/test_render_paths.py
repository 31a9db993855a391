"""The renderer's fast paths give the same pictures as the plain ones.

* a mesh over a background is drawn alone (premultiplied RGBA) and composited on the CPU; the live window
  mixes it with the background in the shader: both must agree;
* draws and read-backs go through ctypes (GIL released) instead of moderngl's calls;
* ``compose_views`` draws the 3D view before reading the camera overlay back, and draws simplified meshes
  (half the triangles) shaded with the full meshes' normals;
* vertex normals are computed in (3, N) rows, and a superset of triangles can provide them.
"""

from __future__ import annotations

import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.overlay import MeshDisplay, ViewStyle, compose_views, orbit_view_params
from realtime.render import OffscreenRenderer, composite_premultiplied

W, H = 320, 240


@pytest.fixture(scope="module")
def scene(face_model):
    """The mean face turned 20 degrees, 600 mm away, over a textured background."""
    yaw = np.radians(20.0)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rotation = np.diag([1.0, -1.0, -1.0]) @ turn
    vertices = (face_model.mean_mm @ rotation.T + np.array([5.0, -10.0, 600.0])).astype(np.float32)
    intr = Intrinsics(fx=420.0, fy=410.0, cx=161.3, cy=118.6, width=W, height=H)
    yy, xx = np.mgrid[0:H, 0:W]
    background = np.stack([xx * 255 // W, yy * 255 // H, (xx * yy) % 251], -1).astype(np.uint8)
    return vertices, intr, background, MeshDisplay.from_model(face_model)


@pytest.mark.parametrize("mode,wire", [("lit", False), ("lit", True), ("wireframe", False), ("normals", False)])
def test_cpu_composite_matches_the_shader_mix(scene, mode: str, wire: bool) -> None:
    """render() over a background (CPU composite) = draw() with the background mixed in by the shader (the
    window's path), to rounding."""
    v, intr, background, display = scene
    kwargs = {"opacity": 0.55, "wireframe_overlay": wire, "specular": 0.12,
              "points_px": intr.project(v[::400]), "point_size": 3.0, "hidden_edges": display.overlay_hidden_edges}
    with OffscreenRenderer(W, H, samples=0) as r:
        headless = r.render(v, display.overlay_triangles, intr, mode, background=background, **kwargs)
        box = r.draw(v, display.overlay_triangles, intr, mode, crop=True, background=background, **kwargs)
        assert box is not None
        window = background.copy()
        bx, by, bw, bh = box
        window[by:by + bh, bx:bx + bw] = r.read()[by:by + bh, bx:bx + bw]
    diff = np.abs(headless.astype(int) - window.astype(int)).max(axis=-1)
    changed = np.any(headless != background, axis=-1)
    assert changed.mean() > 0.05                          # the mesh is there
    assert diff.max() <= 2, np.unique(diff, return_counts=True)


def test_composite_keeps_uncovered_pixels_exactly() -> None:
    rng = np.random.default_rng(1)
    dst = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    big = np.zeros((50, 80, 3), np.uint8)
    big[5:45, 10:70] = dst
    rgb = rng.integers(0, 256, (40, 60, 3)).astype(np.float64)
    alpha = rng.integers(0, 256, (40, 60)).astype(np.float64)
    alpha[:, :20] = 0
    layer = np.dstack([np.round(rgb * alpha[..., None] / 255.0), alpha]).astype(np.uint8)   # premultiplied
    composite_premultiplied(big[5:45, 10:70], layer)
    expected = dst * (1.0 - alpha[..., None] / 255.0) + layer[..., :3]
    assert np.array_equal(big[5:45, 10:30], dst[:, :20])       # alpha 0: untouched
    assert np.abs(big[5:45, 10:70] - expected).max() <= 1.0
    assert not big[:5].any() and not big[:, :10].any()          # nothing outside the view


def test_direct_gl_calls_match_moderngl_calls(scene) -> None:
    v, intr, background, display = scene
    pictures = []
    for direct in (True, False):
        with OffscreenRenderer(W, H, samples=0) as r:
            if not direct:
                r._gl = None   # moderngl's own draw and read calls
            else:
                assert r._gl is not None, "no GL library for the GIL-free path"
            pictures.append(r.render(v, display.overlay_triangles, intr, "lit", background=background,
                                     opacity=0.6, wireframe_overlay=True))
            pictures.append(r.render(v, display.view_triangles, intr, "normals"))
    assert np.array_equal(pictures[0], pictures[2]) and np.array_equal(pictures[1], pictures[3])


@pytest.mark.parametrize("shift_mm", [(-60.0, -30.0), (95.0, 57.0)], ids=["apart", "overlapping"])
def test_compose_views_equals_two_plain_renders(scene, shift_mm: tuple[float, float]) -> None:
    """The deferred read-back of the camera overlay gives the picture of two sequential renders, also when
    the face reaches into the 3D view's corner."""
    v, intr, background, display = scene
    v = v + np.array([*shift_mm, 0.0], np.float32)
    style = ViewStyle()
    lm = [intr.project(v[::300])]
    with OffscreenRenderer(W, H, samples=0) as r:
        composed = compose_views(r, background, v, display, intr, style, lm)
        ref = background.copy()
        r.render(v, display.overlay_simplified, intr, "lit", background=ref, opacity=style.overlay_opacity,
                 specular=style.specular, points_px=lm[0], point_size=3.0, point_color=(0.3, 1.0, 0.55, 1.0),
                 normal_triangles=display.view_triangles, out=ref)
        side = round(style.inset_fraction * H)
        margin = max(4, side // 40)
        rect = (W - side - margin, H - side - margin, side, side)
        r.render(v, display.view_simplified, **orbit_view_params(v, rect, style), reuse_mesh=True, out=ref)
    assert np.abs(composed.astype(int) - ref.astype(int)).max() <= 1
    face = intr.project(v[np.unique(display.overlay_triangles)])
    reaches_inset = face[:, 0].max() > rect[0] and face[:, 1].max() > rect[1]
    assert reaches_inset == (shift_mm[0] > 0)
    # Both views are in the picture.
    assert np.any(composed[:rect[1]] != background[:rect[1]])
    assert (np.abs(composed[rect[1]:rect[1] + side, rect[0]:rect[0] + side].astype(int)
                   - np.array([28, 31, 36])).max(axis=-1) <= 3).mean() > 0.3


def test_vertex_normals_and_normals_from_a_superset(scene) -> None:
    v, intr, _, display = scene

    def reference(tris: np.ndarray) -> np.ndarray:
        a, b, c = (v[tris[:, k]].astype(np.float64) for k in range(3))
        face = np.cross(b - a, c - a)
        n = np.zeros((v.shape[0], 3))
        for k in range(3):
            np.add.at(n, tris[:, k], face)
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)

    with OffscreenRenderer(W, H, samples=0) as r:
        r.render(v, display.overlay_triangles, intr, "lit")
        used = np.unique(display.overlay_triangles)
        np.testing.assert_allclose(r._mesh["normal"][used], reference(display.overlay_triangles)[used], atol=1e-4)
        # With the whole face area's triangles as the normals' source, and reused by the next draw.
        rotated = np.roll(display.view_triangles, 1, axis=1)     # same triangles, other first corner
        r.render(v, display.overlay_triangles, intr, "lit", normal_triangles=rotated)
        normals = r._mesh["normal"].copy()
        np.testing.assert_allclose(normals[used], reference(display.view_triangles)[used], atol=1e-4)
        r.render(v, display.view_triangles, intr, "lit", reuse_mesh=True)
        assert np.array_equal(r._mesh["normal"], normals)
        # A triangle set that is not a superset is not used for the normals.
        r.render(v, display.view_triangles, intr, "lit", normal_triangles=display.overlay_triangles)
        used_view = np.unique(display.view_triangles)
        np.testing.assert_allclose(r._mesh["normal"][used_view], reference(display.view_triangles)[used_view],
                                   atol=1e-4)


def test_simplified_meshes_look_like_the_full_ones(scene) -> None:
    """The video views draw about a third of the triangles, over the same vertices, and look the same."""
    v, _, _, display = scene
    for full, small in ((display.overlay_triangles, display.overlay_simplified),
                        (display.view_triangles, display.view_simplified)):
        assert small is not None
        assert 0.25 < len(small) / len(full) < 0.45
        assert np.isin(small, full).all()                      # a subset of the same vertices
        # Open borders (eyes, mouth, outline) are kept: every border edge of the full mesh is still an edge.
        edges = np.sort(np.concatenate([full[:, [0, 1]], full[:, [1, 2]], full[:, [2, 0]]]), axis=1)
        uniq, counts = np.unique(edges, axis=0, return_counts=True)
        small_edges = np.sort(np.concatenate([small[:, [0, 1]], small[:, [1, 2]], small[:, [2, 0]]]), axis=1)
        border = {tuple(e) for e in uniq[counts == 1]}
        assert border <= {tuple(e) for e in small_edges}
    plain = MeshDisplay(display.overlay_triangles, display.view_triangles)
    style = ViewStyle()
    big = Intrinsics(fx=1000.0, fy=1000.0, cx=639.5, cy=359.5, width=1280, height=720)   # a 720p video frame
    frame = np.full((720, 1280, 3), 120, np.uint8)
    with OffscreenRenderer(1280, 720, samples=0) as r:
        a = compose_views(r, frame, v, plain, big, style)
        b = compose_views(r, frame, v, display, big, style)
    diff = np.abs(a.astype(int) - b.astype(int)).max(axis=-1)
    drawn = np.any(a != frame, axis=-1)
    assert drawn.mean() > 0.05
    # (Shaded with their own, coarser normals the simplified meshes look blotchy: mean 1.03, 4.9 % of the
    # drawn pixels off by more than 3; with the full meshes' normals 0.69 and 2.6 %.)
    assert diff[drawn].mean() < 0.85, diff[drawn].mean()
    assert (diff[drawn] > 3).mean() < 0.035, (diff[drawn] > 3).mean()
    assert (diff > 24).mean() < 0.002, (diff > 24).mean()
