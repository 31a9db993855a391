"""The shipped MediaPipe-478 correspondence table: structure, geometry, consistency, and its builder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from realtime.correspondence import (
    IRIS_LANDMARKS,
    Correspondence,
    landmark_regions,
    load_correspondence,
    read_correspondence,
    save_correspondence,
    weights_from_spread,
)
from realtime.errors import MissingResourceError
from realtime.facemodel import MorphableModel, eye_rig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corr(face_model: MorphableModel) -> Correspondence:
    return load_correspondence(face_model)


def test_table_structure(corr: Correspondence, face_model: MorphableModel) -> None:
    assert corr.vertex_ids.shape == (478, 3) and corr.vertex_ids.dtype == np.int32
    assert corr.barycentric.shape == (478, 3) and corr.weights.shape == (478,)
    np.testing.assert_allclose(corr.barycentric.sum(1), 1.0, atol=1e-5)
    assert corr.barycentric.min() >= 0.0
    assert corr.weights.min() >= 0.0 and corr.weights.max() <= 1.0
    assert np.all(corr.weights[IRIS_LANDMARKS] == 0.0)
    face = np.setdiff1d(np.arange(478), IRIS_LANDMARKS)
    assert (corr.weights[face] > 0).all(), "every face landmark got samples"
    # vertex_ids are the corners of model triangles.
    np.testing.assert_array_equal(corr.vertex_ids[face], face_model.triangles[corr.triangle[face]])
    assert (corr.vertex_ids < face_model.face_area_vertices).all()
    assert np.isfinite(corr.points(face_model.mean_mm)).all()


def test_points_batch_and_surface(corr: Correspondence, face_model: MorphableModel) -> None:
    v = np.stack([face_model.mean_mm, face_model.shape(expression=np.eye(face_model.n_expressions)[26])])
    pts = corr.points(v)
    assert pts.shape == (2, 478, 3)
    np.testing.assert_allclose(pts[0], corr.points(face_model.mean_mm), atol=1e-4)
    # jawOpen moves the chin/lower-lip landmarks down and leaves the brows.
    lower_lip, brows = 17, 105
    assert pts[1, lower_lip, 1] < pts[0, lower_lip, 1] - 5.0
    assert abs(pts[1, brows, 1] - pts[0, brows, 1]) < 0.5


def test_left_right_consistency(corr: Correspondence, face_model: MorphableModel) -> None:
    """The table was built without any symmetry assumption: mirrored regions must still match."""
    regions = landmark_regions()
    p = corr.points(face_model.mean_mm)
    mirror = np.array([-1.0, 1.0, 1.0])
    for left, right in (("eye_l", "eye_r"), ("brow_l", "brow_r")):
        cl, cr = p[regions[left]].mean(0), p[regions[right]].mean(0)
        assert cl[0] > 10 and cr[0] < -10, "MediaPipe 'left' = subject's left = model +x"
        assert np.linalg.norm(cl * mirror - cr) < 2.0


def test_iris_points_on_the_eyeball_proxy(corr: Correspondence, face_model: MorphableModel) -> None:
    rig = eye_rig(face_model)
    local = corr.iris_local_mm
    for centre_k in (0, 5):
        c = local[centre_k]
        assert np.hypot(c[0], c[1]) < 1.5 and rig.iris_depth_mm - 1.5 < c[2] < rig.radius_mm + 0.5
    # MediaPipe's iris ring is (nearly) the 11.7 mm limbus of the proxy.
    assert 10.0 < corr.iris_diameter_mm < 12.5
    centres = rig.centres(face_model.mean_mm)
    iris = corr.iris_points(centres)
    assert iris.shape == (10, 3)
    assert (iris[:5, 0] < 0).all() and (iris[5:, 0] > 0).all()
    # With a pose the eye-local offsets rotate with the head.
    r = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(corr.iris_points(centres @ r.T, r), iris @ r.T, atol=1e-6)


def test_save_load_and_topology_check(corr: Correspondence, face_model: MorphableModel,
                                      tmp_path: Path) -> None:
    save_correspondence(corr, tmp_path / "t.npz")
    back = read_correspondence(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.vertex_ids, corr.vertex_ids)
    assert back.topology == corr.topology != ""
    flipped = replace(face_model, triangles=face_model.triangles[:, ::-1].copy())
    with pytest.raises(MissingResourceError, match="rebuild"):
        load_correspondence(flipped, tmp_path / "t.npz")
    with pytest.raises(MissingResourceError, match="not found"):
        load_correspondence(face_model, tmp_path / "absent.npz")


def test_weights_from_spread() -> None:
    w = weights_from_spread(np.array([0.0, 2.0, 6.0, np.inf]))
    np.testing.assert_allclose(w, [1.0, 0.5, 0.1, 0.0])


@pytest.mark.slow
def test_builder_runs_end_to_end_on_a_plugged_in_model(tmp_path: Path, face_model: MorphableModel) -> None:
    """The tool renders, runs MediaPipe, back-projects and measures (tiny run; the shipped table used 400),
    here for another model given in the packed format: the ICT mesh with its eye and mouth holes closed (no
    eye openings: the eyeball anchors fall back to the iBUG eye landmarks)."""
    from realtime.facemodel import boundary_loops

    loops = [lp for lp in boundary_loops(face_model.triangles) if len(lp) < 80 and lp.max() < 9409]
    fills = [np.stack([lp[0].repeat(len(lp) - 2), lp[1:-1], lp[2:]], 1) for lp in loops]
    tris = np.concatenate([face_model.triangles, *fills]).astype(np.int32)
    packed = tmp_path / "closed.npz"
    np.savez(packed, neutral=face_model.mean_mm, identity_deltas=face_model.identity_basis_mm[:10],
             expression_deltas=face_model.expression_basis_mm,
             expression_names=np.array(face_model.expression_names), landmarks68=face_model.landmarks68,
             face_area_vertices=np.int32(face_model.face_area_vertices), triangles=tris, name="closed-ict")
    out = tmp_path / "table.npz"
    cmd = [sys.executable, str(ROOT / "tools" / "build_correspondence.py"), "--renders", "16", "--held-out",
           "4", "--size", "384", "--model", "packed", "--model-path", str(packed), "--out", str(out),
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["renders_used"] >= 12 and report["held_out"] >= 3
    assert report["all_px_median"] < 6.0
    assert set(report["regions"]) >= {"lips", "eye_l", "eye_r", "nose", "iris"}
    table = read_correspondence(out)
    assert table.model_name == "closed-ict" and table.n_model_vertices == 11248
    from realtime.facemodel import load_packed_npz

    load_correspondence(load_packed_npz(packed), out)  # topology matches the plugged-in mesh
    with pytest.raises(MissingResourceError):
        load_correspondence(face_model, out)  # ... and not the original one
