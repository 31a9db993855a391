"""Headless (EGL) rendering: projection convention, every display mode, overlay alignment."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.errors import BadInputError
from realtime.render import RENDER_MODES, OffscreenRenderer

W, H = 320, 240


@pytest.fixture(scope="module", params=[4, 0], ids=["msaa4", "no-msaa"])
def renderer(request):
    with OffscreenRenderer(W, H, samples=request.param) as r:
        yield r


@pytest.fixture(scope="module")
def frontal(face_model) -> np.ndarray:
    """The ICT mean face, frontal, 600 mm in front of the camera (camera space, mm)."""
    rotation = np.diag([1.0, -1.0, -1.0])
    return (face_model.mean_mm @ rotation.T + np.array([0.0, 0.0, 600.0])).astype(np.float32)


def _off_centre_intrinsics() -> Intrinsics:
    # fx != fy and an off-centre principal point, so that any mix-up of the conventions shows.
    return Intrinsics(fx=330.0, fy=310.0, cx=171.3, cy=109.6, width=W, height=H)


def test_rendered_surface_points_project_to_their_pixel_centres(renderer, face_model, frontal) -> None:
    intr = _off_centre_intrinsics()
    tri, bary = renderer.render_ids(frontal, face_model.triangles, intr)
    ys, xs = np.nonzero(tri >= 0)
    assert xs.size > 0.1 * W * H
    corners = frontal[face_model.triangles[tri[ys, xs]]]              # (K, 3, 3)
    points = np.einsum("kc,kcd->kd", bary[ys, xs], corners)
    uv = intr.project(points)
    err = np.hypot(uv[:, 0] - xs, uv[:, 1] - ys)
    # A pixel's sample point is its centre: the surface point seen there projects back onto it.
    assert np.median(err) < 0.02
    assert np.percentile(err, 99) < 0.1


def test_depth_matches_the_surface(renderer, face_model, frontal) -> None:
    intr = _off_centre_intrinsics()
    depth = renderer.render_depth(frontal, face_model.triangles, intr)
    tri, bary = renderer.render_ids(frontal, face_model.triangles, intr)
    assert np.array_equal(depth > 0, tri >= 0)
    ys, xs = np.nonzero(tri >= 0)
    z = np.einsum("kc,kc->k", bary[ys, xs], frontal[face_model.triangles[tri[ys, xs]], 2])
    np.testing.assert_allclose(depth[ys, xs], z, atol=0.05)


def test_model_landmarks_are_drawn_where_they_project(face_model, frontal) -> None:
    """Overlay alignment: model landmarks (dots and mesh) sit within 1 px of ``intrinsics.project``."""
    from scipy import ndimage

    # A webcam-like scale (about 2 px per mm).
    intr = Intrinsics(fx=1150.0, fy=1130.0, cx=331.4, cy=262.7, width=640, height=560)
    lm = frontal[face_model.landmarks68]
    uv = intr.project(lm)
    with OffscreenRenderer(intr.width, intr.height, samples=0) as r:
        depth = r.render_depth(frontal, face_model.triangles, intr)
        dots = r.render(frontal, face_model.triangles, intr, "wireframe", wire_color=(0, 0, 0, 0),
                        points_px=uv, point_color=(1.0, 1.0, 1.0, 1.0), point_size=3.0)
    # Dots: the centroid of each blob is the projected landmark.
    labels, n = ndimage.label(dots[..., 0] > 0)
    centroids = np.array(ndimage.center_of_mass(dots[..., 0].astype(float), labels, range(1, n + 1)))[:, ::-1]
    nearest = np.min(np.linalg.norm(uv[:, None, :] - centroids[None], axis=-1), axis=1)
    isolated = np.sort(np.linalg.norm(uv[:, None] - uv[None], axis=-1), axis=1)[:, 1] > 4.0
    assert isolated.sum() >= 40
    assert nearest[isolated].max() < 0.25
    # Mesh: within 1 px of each landmark's projection the drawn surface passes through the landmark (same
    # depth), except for the few hidden by the cheeks (outer jaw line) or lying on a silhouette, where the
    # depth jumps between neighbouring pixels.
    px = np.round(uv).astype(int)
    offsets = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    near = px[:, None, :] + offsets[None]
    drawn_z = depth[near[..., 1], near[..., 0]]                     # (68, 9)
    gap = np.min(np.abs(drawn_z - lm[:, 2:3]), axis=1)
    assert np.median(gap) < 0.3, np.round(gap, 2)
    assert (gap < 1.0).sum() >= 60, np.round(gap, 2)


@pytest.mark.parametrize("mode", RENDER_MODES)
def test_every_mode_draws_the_mesh_over_the_background(renderer, face_model, frontal, mode) -> None:
    from scipy import ndimage

    intr = Intrinsics.from_fov(W, H, 40.0)
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
    kwargs: dict = {}
    if mode == "textured":
        kwargs["texture_image"] = np.full((H, W, 3), (200, 120, 40), np.uint8)
    if mode == "heatmap":
        kwargs["scalars"] = frontal[:, 0]
    img = renderer.render(frontal, face_model.triangles, intr, mode, background=background, **kwargs)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    tri, _ = renderer.render_ids(frontal, face_model.triangles, intr)
    covered = tri >= 0
    # Outside the mesh the background is untouched; inside, the mesh is drawn (the wireframe mode keeps
    # the background between its lines).
    outside = ~ndimage.binary_dilation(covered, structure=np.ones((3, 3), bool))  # MSAA edge pixels
    assert np.array_equal(img[outside], background[outside])
    changed = np.any(img != background, axis=-1)
    frac = changed[covered].mean()
    assert frac > (0.3 if mode == "wireframe" else 0.97)


def test_no_gl_errors_in_any_mode(renderer, face_model, frontal) -> None:
    """Every program variant and path leaves the GL error flag clear (a window's toolkit would trip on it)."""
    from realtime.render import quad_diagonals

    intr = Intrinsics.from_fov(W, H, 40.0)
    bg = np.zeros((H, W, 3), np.uint8)
    hidden = quad_diagonals(face_model.triangles, face_model.quads)
    for mode in RENDER_MODES:
        for wire in (False, True):
            renderer.render(frontal, face_model.triangles, intr, mode, background=bg, wireframe_overlay=wire,
                            texture_image=bg, scalars=frontal[:, 0], points_px=np.zeros((3, 2)),
                            hidden_edges=hidden)
            with renderer.ctx:
                assert renderer.ctx.error == "GL_NO_ERROR", (mode, wire)


def test_bad_inputs_raise_user_errors(renderer, face_model, frontal) -> None:
    intr = Intrinsics.from_fov(W, H)
    with pytest.raises(BadInputError):
        renderer.render(frontal, face_model.triangles, intr, "cartoon")
    with pytest.raises(BadInputError):
        renderer.render(frontal[:, :2], face_model.triangles, intr)
    with pytest.raises(BadInputError):
        renderer.render(frontal, face_model.triangles + frontal.shape[0], intr)
    with pytest.raises(BadInputError):
        renderer.render(frontal, face_model.triangles, intr, "heatmap")
