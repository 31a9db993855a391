"""Refinement core: CPU rasteriser, Laplacian medium stage, shape from shading on a synthetic relief."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.refine.medium import laplacian_deform, uniform_laplacian, vertex_regions
from realtime.refine.raster import depth_map, rasterize
from realtime.refine.sfs import SfsOptions, depth_normals, run_sfs, sh_basis


def test_rasterize_plane_depth_and_coverage() -> None:
    k = Intrinsics(100.0, 100.0, 32.0, 32.0, 64, 64)
    # a tilted square at z = 200 + 0.5 x, projected
    xs = np.array([[-40.0, -40.0], [40.0, -40.0], [40.0, 40.0], [-40.0, 40.0]])
    z = 200.0 + 0.5 * xs[:, 0]
    pts = np.column_stack([xs, z])
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    r = rasterize(k.project(pts), tri, 64, 64, depth=z)
    d = depth_map(r, z, tri)
    m = r.mask
    assert 0.3 < m.mean() < 0.95
    v, u = np.nonzero(m)
    # exact plane: z = 200 + 0.5 X with X = (u - cx) z / fx  ->  z = 200 / (1 - 0.5 (u - cx) / fx)
    expect = 200.0 / (1.0 - 0.5 * (u - k.cx) / k.fx)
    assert np.abs(d[v, u] - expect).max() < 1e-3


def test_laplacian_deformation_pulls_landmarks(face_model) -> None:
    m = face_model
    k = Intrinsics.from_fov(640, 480)
    rot = np.diag([1.0, -1.0, -1.0])
    cam = m.mean_mm @ rot.T + np.array([0.0, 0.0, 600.0])
    rng = np.random.default_rng(0)
    ids = m.triangles[rng.choice(np.nonzero((m.triangles < 6000).all(1))[0], 60, replace=False)]
    bary = np.full((60, 3), 1.0 / 3.0)
    target = k.project(np.einsum("mk,mkd->md", bary, cam[ids])) + rng.normal(0, 2.0, (60, 2))
    res = laplacian_deform(cam, m.triangles, k, target, ids, bary, np.full(60, 0.6))
    assert res.landmark_error_px_after < 0.6 * res.landmark_error_px_before
    # the deformation is local: far-away vertices barely move
    moved = np.linalg.norm(res.vertices_mm - cam, axis=1)
    assert np.median(moved[m.face_area_vertices:]) < 0.5
    lap = uniform_laplacian(m.n_vertices, m.triangles)
    assert np.allclose(lap @ np.ones(m.n_vertices), 0.0)


def test_vertex_regions_cover_features(face_model) -> None:
    reg = vertex_regions(face_model)
    lm = face_model.landmarks68
    assert (reg[lm[36:48]] == 2).mean() > 0.8   # eye contours
    assert (reg[lm[30]] == 3)                   # nose tip
    assert (reg[lm[48:60]] == 4).mean() > 0.8   # outer lip contour
    assert (reg[lm[17:27]] == 1).mean() > 0.8   # brows


def _relief_scene(size: int = 120) -> tuple:
    k = Intrinsics(400.0, 400.0, size / 2, size / 2, size, size)
    v, u = np.mgrid[0:size, 0:size].astype(float)
    x = (u - k.cx) / k.fx * 400.0
    y = (v - k.cy) / k.fy * 400.0
    r2 = (x / 55.0) ** 2 + (y / 65.0) ** 2
    valid = r2 < 1
    z0 = np.where(valid, 400.0 - 45.0 * np.sqrt(np.clip(1 - r2, 0, 1)), 0.0)
    bump = 0.8 * np.sin(x / 3.0) * np.exp(-(((y + 15.0) / 12.0) ** 2)) * valid
    zt = np.where(valid, z0 - bump, 0.0)
    sh = np.zeros((9, 3))
    sh[0], sh[1], sh[2], sh[3] = [0.9, 0.85, 0.8], [-0.15] * 3, [-0.6, -0.6, -0.55], [0.5] * 3
    img = np.clip(np.array([0.8, 0.6, 0.5]) * (sh_basis(depth_normals(zt, k)) @ sh), 0, 1) * valid[..., None]
    return k, z0, zt, img, r2 < 0.8


def test_sfs_recovers_synthetic_relief() -> None:
    k, z0, zt, img, mask = _relief_scene()
    res = run_sfs(img, z0, mask, np.zeros(mask.shape, int), k, SfsOptions())
    m = res.mask
    truth_n = depth_normals(zt, k)[m]
    detail_true = (truth_n - res.normals0[m]).ravel()
    detail_rec = (res.normals[m] - res.normals0[m]).ravel()
    corr = np.corrcoef(detail_true, detail_rec)[0, 1]
    assert corr >= 0.5, corr
    coarse, refined = (np.abs(res.render(r) - img)[m].mean() for r in (False, True))
    assert refined < 0.8 * coarse
    assert set(res.timings_ms) >= {"lighting", "albedo", "depth"}


def test_central_normals_fit_a_relief_shaded_at_the_pixel_centres() -> None:
    """A camera samples the shading at pixel centres. Rendered that way (normals of the exact surface at each
    centre), the relief is recovered by the default central-difference operator, and better than by the
    forward-difference one, whose x and y slopes sit half a pixel right of and below the centre."""
    size = 120
    k = Intrinsics(400.0, 400.0, size / 2, size / 2, size, size)

    def surface(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, y = (u - k.cx) / k.fx * 400.0, (v - k.cy) / k.fy * 400.0
        r2 = (x / 55.0) ** 2 + (y / 65.0) ** 2
        smooth = 400.0 - 45.0 * np.sqrt(np.clip(1 - r2, 0, 1))
        bump = 0.6 * np.sin(x / 1.15) * np.exp(-(((y + 15.0) / 12.0) ** 2)) \
            + 0.6 * np.exp(-((x - 12.0) ** 2 + (y - 10.0) ** 2) / (2 * 2.5**2))
        return smooth, smooth - bump, r2

    v, u = np.mgrid[0:size, 0:size].astype(float)
    z0, zt, r2 = surface(u, v)
    valid = r2 < 0.98
    eps = 1e-3  # the exact surface's normal at the centre (tangents over a thousandth of a pixel)

    def point(du: float, dv: float) -> np.ndarray:
        z = surface(u + du, v + dv)[1]
        return np.stack(((u + du - k.cx) / k.fx * z, (v + dv - k.cy) / k.fy * z, z), axis=-1)

    n = np.cross(point(0, eps) - point(0, -eps), point(eps, 0) - point(-eps, 0))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    sh = np.zeros((9, 3))
    sh[0], sh[1], sh[2], sh[3] = [1.6] * 3, [-0.4] * 3, [-1.0] * 3, [0.6] * 3  # ambient + key up-left-front
    img = np.clip(np.array([0.8, 0.6, 0.5]) * (sh_basis(n) @ sh), 0, 1) * valid[..., None]
    z0 = np.where(valid, z0, 0.0)
    mask = r2 < 0.8
    scores = {}
    for op in ("central", "forward"):
        res = run_sfs(img, z0, mask, np.zeros(mask.shape, int), k, SfsOptions(normal_operator=op))
        m = res.mask & (r2 < 0.6)
        truth = depth_normals(np.where(valid, zt, 0.0), k) - depth_normals(z0, k)
        rec = depth_normals(res.depth, k) - depth_normals(res.depth0, k)
        scores[op] = float(np.corrcoef(truth[m].ravel(), rec[m].ravel())[0, 1])
    assert scores["central"] >= 0.6, scores
    assert scores["central"] > scores["forward"] + 0.1, scores
    with pytest.raises(ValueError, match="normal operator"):
        run_sfs(img, z0, mask, np.zeros(mask.shape, int), k, SfsOptions(normal_operator="sobel"))


def test_sfs_rejects_tiny_face() -> None:
    k = Intrinsics(100.0, 100.0, 4.0, 4.0, 8, 8)
    with pytest.raises(ValueError):
        run_sfs(np.zeros((8, 8, 3)), np.full((8, 8), 100.0), np.ones((8, 8), bool), np.zeros((8, 8), int), k)


def test_sfs_holdout_pixels_get_no_data() -> None:
    """Pixels held out of the fine stage's data terms are predicted, not copied: a dark pattern that exists only
    on held-out blocks is not reproduced there, while the same pattern on seen pixels is (albedo map)."""
    from realtime.refine.snapshot import holdout_blocks

    k, z0, _zt, img, mask = _relief_scene()
    hold = holdout_blocks(mask.shape, 6, 0.25)
    assert 0.15 < hold[mask].mean() < 0.35
    # a dark albedo patch pattern (a tenth of the blocks, 40 % darker) on top of the relief
    spots = holdout_blocks(mask.shape, 6, 0.1, seed=3) & mask
    patterned = img * np.where(spots, 0.6, 1.0)[..., None]
    regions = np.zeros(mask.shape, int)
    seen_run = run_sfs(patterned, z0, mask, regions, k, SfsOptions())
    held_run = run_sfs(patterned, z0, mask, regions, k, SfsOptions(), holdout=spots | hold)
    assert held_run.holdout is not None and not held_run.holdout[~mask].any()
    test = spots & held_run.mask

    def err(res, m: np.ndarray) -> float:
        return float(np.abs(res.render(True) - patterned)[m].mean())

    prior_err = float(np.abs(held_run.render(prior_albedo=True) - patterned)[test].mean())
    assert err(seen_run, test) < 0.5 * prior_err          # seen: the albedo map takes the patches
    assert err(held_run, test) > 0.7 * prior_err          # held out: nothing copied
    other = held_run.mask & ~(spots | hold)
    assert err(held_run, other) < float(np.abs(held_run.render(prior_albedo=True) - patterned)[other].mean())
