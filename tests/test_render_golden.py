"""Golden pictures: the ICT mean face in every display mode, compared with tolerance to tests/golden/*.png.

The goldens were rendered by this renderer (Mesa llvmpipe) and looked at by a person. Regenerate them after
an intended change of the look with ``REALTIME_FACE_UPDATE_GOLDEN=1 pytest tests/test_render_golden.py``
and look at the new pictures before committing them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realtime.camera import Intrinsics
from realtime.render import OffscreenRenderer, quad_diagonals

GOLDEN_DIR = Path(__file__).parent / "golden"
SIZE = 192
UPDATE = os.environ.get("REALTIME_FACE_UPDATE_GOLDEN") == "1"

CASES = ("lit", "lit_sh_albedo", "wireframe", "lit_wireframe_overlay", "textured", "normals", "depth",
         "heatmap", "overlay_points")


@pytest.fixture(scope="module")
def scene(face_model):
    """A face turned 25 degrees, 450 mm away, slightly off-centre (perspective and pose both matter)."""
    yaw = np.radians(25.0)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rotation = np.diag([1.0, -1.0, -1.0]) @ turn
    vertices = (face_model.mean_mm @ rotation.T + np.array([8.0, 5.0, 450.0])).astype(np.float32)
    tris = face_model.triangles[(face_model.triangles < face_model.face_area_vertices).all(axis=1)]
    intr = Intrinsics(fx=300.0, fy=300.0, cx=95.5, cy=97.0, width=SIZE, height=SIZE)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    background = np.stack([xx * 255 // SIZE, yy * 255 // SIZE, np.full_like(xx, 90)], -1).astype(np.uint8)
    checker = (((xx // 12) + (yy // 12)) % 2).astype(np.uint8)
    texture = np.stack([60 + 160 * checker, 120 + 0 * checker, 200 - 150 * checker], -1).astype(np.uint8)
    tris = np.ascontiguousarray(tris)
    return face_model, vertices, tris, intr, background, texture, quad_diagonals(tris, face_model.quads)


def _render(case: str, scene) -> np.ndarray:
    model, v, tris, intr, background, texture, diagonals = scene
    with OffscreenRenderer(SIZE, SIZE) as r:
        if case == "lit":
            return r.render(v, tris, intr, "lit")
        if case == "lit_sh_albedo":
            sh = np.zeros((9, 3), np.float32)
            sh[0] = (2.0, 1.6, 1.2)          # warm ambient
            sh[3] = (0.9, 0.0, 0.0)          # red light from +x (the picture's right)
            sh[1] = (0.0, 0.0, -0.9)         # blue light from above (-y)
            albedo = np.where(model.mean_mm[:, 1:2] > 20.0, (0.9, 0.9, 0.9), (0.7, 0.55, 0.45))
            return r.render(v, tris, intr, "lit", sh_coeffs=sh, vertex_colors=albedo.astype(np.float32))
        if case == "wireframe":
            return r.render(v, tris, intr, "wireframe", background=background, wire_width=0.5,
                            hidden_edges=diagonals)
        if case == "lit_wireframe_overlay":
            return r.render(v, tris, intr, "lit", wireframe_overlay=True, background=background, opacity=0.7,
                            wire_color=(0.1, 0.2, 0.4, 0.6), wire_width=0.4, hidden_edges=diagonals)
        if case == "textured":
            return r.render(v, tris, intr, "textured", texture_image=texture)
        if case == "normals":
            return r.render(v, tris, intr, "normals")
        if case == "depth":
            return r.render(v, tris, intr, "depth")
        if case == "heatmap":
            return r.render(v, tris, intr, "heatmap", scalars=model.mean_mm[:, 0], scalar_range=(-80.0, 80.0))
        if case == "overlay_points":
            lm = intr.project(v[model.landmarks68])
            return r.render(v, tris, intr, "lit", background=background, opacity=0.5, points_px=lm,
                            point_size=3.0)
    raise AssertionError(case)


@pytest.mark.parametrize("case", CASES)
def test_matches_golden_picture(case: str, scene) -> None:
    picture = _render(case, scene)
    path = GOLDEN_DIR / f"render_{case}.png"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        Image.fromarray(picture).save(path, optimize=True)
    golden = np.asarray(Image.open(path).convert("RGB"))
    diff = np.abs(picture.astype(np.int16) - golden.astype(np.int16)).max(axis=-1)
    # Tolerant: another GL driver rasterises edges and rounds colours a little differently, but the picture
    # must be the same: small mean difference, and large differences only on a thin set of edge pixels.
    assert diff.mean() < 1.5, f"{case}: mean abs difference {diff.mean():.2f}"
    assert (diff > 48).mean() < 0.01, f"{case}: {(diff > 48).mean():.2%} pixels differ by more than 48"


def test_goldens_differ_from_each_other(scene) -> None:
    """The comparison can fail: each golden is far from the others (so a mode mix-up would be caught)."""
    pics = {c: np.asarray(Image.open(GOLDEN_DIR / f"render_{c}.png").convert("RGB")).astype(np.int16)
            for c in CASES}
    for a in CASES:
        for b in CASES:
            if a < b:
                assert np.abs(pics[a] - pics[b]).max(axis=-1).mean() > 3.0, (a, b)
