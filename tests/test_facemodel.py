"""Face-model layer: symmetry map, eyeball rig, loader registry, FaceXModel/ OBJ folder conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime.errors import BadInputError, MissingResourceError
from realtime.facemodel import (
    MorphableModel,
    boundary_loops,
    eye_rig,
    load_face_model,
    load_facex_folder,
    load_packed_npz,
)

MIRROR = np.array([-1.0, 1.0, 1.0], dtype=np.float32)


def test_symmetry_map_mirrors_vertices_and_blendshapes(face_model: MorphableModel) -> None:
    sym = face_model.symmetry
    v = face_model.mean_mm
    err = np.linalg.norm(v[sym] * MIRROR - v, axis=1)
    assert np.percentile(err, 99) < 0.1 and err.max() < 0.5
    assert (sym[sym] == np.arange(len(sym))).mean() > 0.99
    # Vertices off the mid-plane map to the other side, mid-plane ones to themselves (or a neighbour on it).
    off = np.abs(v[:, 0]) > 1.0
    assert np.all(np.sign(v[sym[off], 0]) == -np.sign(v[off, 0]))
    # The left blendshape, mirrored through the map, is the right one (and clearly not without the map).
    for left in ("mouthSmile_L", "eyeBlink_L", "browDown_L", "cheekPuff_L"):
        i = face_model.expression_index(left)
        j = face_model.expression_mirror[i]
        assert face_model.expression_names[j] == left[:-2] + "_R"
        dl, dr = face_model.expression_basis_mm[i], face_model.expression_basis_mm[j]
        assert np.linalg.norm(dl[sym] * MIRROR - dr) < 0.05 * np.linalg.norm(dr)
        assert np.linalg.norm(dl - dr) > 0.5 * np.linalg.norm(dr)


def test_eye_rig_finds_both_openings(face_model: MorphableModel) -> None:
    rig = eye_rig(face_model)
    centres = rig.centres(face_model.mean_mm)
    assert centres[0, 0] < -20 and centres[1, 0] > 20, "eye 0 is the subject's right (-x)"
    np.testing.assert_allclose(centres[0] * MIRROR, centres[1], atol=0.1)
    # Eyeball front sits just in front of the lid opening; the iris plane 10.5 mm in front of the centre.
    for e in range(2):
        loop = face_model.mean_mm[rig.loops[e]]
        assert abs(centres[e, 2] + rig.radius_mm - loop[:, 2].mean() - 1.0) < 1e-3
    assert rig.iris_radius_mm * 2 == pytest.approx(11.7)
    assert 10.0 < rig.iris_depth_mm < 11.0
    loops = boundary_loops(face_model.triangles)
    assert sorted(len(lp) for lp in loops) == [42, 42, 54, 74]  # two eyes, the neck, the mouth
    # Identity changes move the centres with the lids (batched call).
    ids = np.stack([face_model.shape(np.eye(face_model.n_identity)[k] * 2) for k in range(3)])
    assert rig.centres(ids).shape == (3, 2, 3)


def test_registry_unknown_and_custom_loaders(face_model: MorphableModel, tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="unknown face model 'bfm2009'"):
        load_face_model("bfm2009")
    with pytest.raises(MissingResourceError):
        load_face_model("packed")  # needs a path
    calls: list[Path | None] = []

    def fake_loader(path: Path | None) -> MorphableModel:
        calls.append(path)
        return face_model

    assert load_face_model("mine", tmp_path, loaders={"mine": fake_loader}) is face_model
    assert calls == [tmp_path]


def test_packed_loader_on_another_model(tmp_path: Path) -> None:
    """A second model in the packed format (triangles, mm, no UVs) plugs in through the 'packed' loader."""
    rng = np.random.default_rng(0)
    n = 200
    neutral = rng.normal(size=(n, 3)).astype(np.float32) * 50
    tris = rng.integers(0, n, size=(300, 3)).astype(np.int32)
    path = tmp_path / "other.npz"
    np.savez(path, neutral=neutral, identity_deltas=rng.normal(size=(5, n, 3)).astype(np.float32),
             expression_deltas=rng.normal(size=(2, n, 3)).astype(np.float32),
             expression_names=np.array(["a_L", "a_R"]), landmarks68=np.arange(68, dtype=np.int32),
             face_area_vertices=np.int32(150), triangles=tris, name="toy")
    m = load_face_model("packed", path)
    assert m.name == "toy" and m.n_vertices == n and m.n_identity == 5
    np.testing.assert_array_equal(m.triangles, tris)
    assert m.expression_mirror.tolist() == [1, 0]
    bad = tmp_path / "bad.npz"
    np.savez(bad, neutral=neutral)
    with pytest.raises(MissingResourceError, match="lacks arrays"):
        load_packed_npz(bad)


def _fmt(rows: np.ndarray, prefix: str) -> str:
    return "".join(f"{prefix} " + " ".join(f"{x:.6f}" for x in r) + "\n" for r in rows)


def _write_obj(path: Path, verts_cm: np.ndarray, body: str) -> None:
    path.write_text(_fmt(verts_cm, "v") + body)


def write_facex_folder(model: MorphableModel, folder: Path, n_id: int, expressions: list[str]) -> np.ndarray:
    """A small FaceXModel/ folder written from the packed model: OBJs in cm with an extra (eyeball) group."""
    folder.mkdir(parents=True)
    n = model.n_vertices
    rng = np.random.default_rng(1)
    extra = (rng.normal(size=(8, 3)) * 0.5 + [3.0, 3.5, 8.0]).astype(np.float32)  # cm, behind the left eye
    neutral = np.concatenate([model.mean_mm / 10.0, extra])
    assert model.quads is not None and model.uv is not None and model.triangle_uv is not None
    quads = model.quads
    n_q = len(quads)
    quad_uv = np.concatenate([model.triangle_uv[:n_q], model.triangle_uv[n_q:]], axis=1)[:, [0, 1, 2, 5]]
    face_area_quads = np.all(quads < model.face_area_vertices, axis=1)
    lines = [_fmt(model.uv, "vt")]
    for name, sel in (("Face", face_area_quads), ("HeadNeck", ~face_area_quads)):
        lines.append(f"g {name}\n")
        q, qu = quads[sel] + 1, quad_uv[sel] + 1
        lines.append("".join(f"f {a}/{ua} {b}/{ub} {c}/{uc} {d}/{ud}\n"
                             for (a, b, c, d), (ua, ub, uc, ud) in zip(q, qu, strict=True)))
    lines.append("g Eyeball\n" + "".join(f"f {n + 1 + k} {n + 2 + k} {n + 3 + k}\n" for k in range(6)))
    _write_obj(folder / "generic_neutral_mesh.obj", neutral, "".join(lines))
    for k in range(n_id):
        v = neutral.copy()
        v[:n] += model.identity_basis_mm[k] / 10.0
        _write_obj(folder / f"identity{k:03d}.obj", v, "")
    for name in expressions:
        v = neutral.copy()
        v[:n] += model.expression_basis_mm[model.expression_index(name)] / 10.0
        _write_obj(folder / f"{name}.obj", v, "")
    # An eyeball-only shape (moves nothing in the region): listed, converted, dropped.
    v = neutral.copy()
    v[n:] *= 1.1
    _write_obj(folder / "PupilDilate_L.obj", v, "")
    (folder / "vertex_indices.json").write_text(json.dumps(
        {"expressions": [*expressions, "PupilDilate_L"],
         "idx_to_landmark_verts": model.landmarks68.tolist()}))
    return quad_uv


def test_facex_folder_round_trip(face_model: MorphableModel, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_FACE_CACHE", str(tmp_path / "cache"))
    expressions = ["eyeBlink_L", "eyeBlink_R", "jawOpen", "mouthSmile_L"]
    write_facex_folder(face_model, tmp_path / "FaceXModel", 3, expressions)
    m = load_facex_folder(tmp_path / "FaceXModel")
    assert m.name == "ict-facekit"
    assert m.n_vertices == face_model.n_vertices
    assert m.expression_names == tuple(expressions)
    assert m.n_identity == 3
    np.testing.assert_allclose(m.mean_mm, face_model.mean_mm, atol=1e-3)
    np.testing.assert_allclose(m.identity_basis_mm, face_model.identity_basis_mm[:3], atol=0.02)
    idx = [face_model.expression_index(e) for e in expressions]
    np.testing.assert_allclose(m.expression_basis_mm, face_model.expression_basis_mm[idx], atol=0.02)
    np.testing.assert_array_equal(m.triangles, face_model.triangles)
    np.testing.assert_array_equal(m.landmarks68, face_model.landmarks68)
    assert m.face_area_vertices == face_model.face_area_vertices
    assert m.narrow_face_area_vertices == face_model.narrow_face_area_vertices
    assert m.uv is not None and m.triangle_uv is not None and face_model.triangle_uv is not None
    np.testing.assert_allclose(m.uv[m.triangle_uv], face_model.uv[face_model.triangle_uv], atol=1e-5)
    cached = list((tmp_path / "cache" / "models").glob("facex-*.npz"))
    assert len(cached) == 1
    # Second load comes from the cache (same arrays), and the registry routes a folder path to it.
    again = load_face_model("ict-facekit", tmp_path / "FaceXModel")
    assert again.source == str(cached[0])
    np.testing.assert_array_equal(again.expression_basis_mm, m.expression_basis_mm)


def test_facex_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        load_facex_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="FaceXModel"):
        load_facex_folder(tmp_path / "empty", cache=False)


def test_eye_rig_on_a_mesh_without_eye_openings(face_model: MorphableModel) -> None:
    """Closed meshes (BFM-like) fall back to the iBUG eye landmarks as eyeball anchors."""
    from dataclasses import replace

    rig = eye_rig(face_model)
    fills = [np.stack([lp[0].repeat(len(lp) - 2), lp[1:-1], lp[2:]], 1) for lp in rig.loops]
    closed = replace(face_model, triangles=np.concatenate([face_model.triangles, *fills]))
    closed_rig = eye_rig(closed)
    np.testing.assert_array_equal(closed_rig.loops[0], face_model.landmarks68[36:42])
    shift = np.linalg.norm(closed_rig.centres(closed.mean_mm) - rig.centres(face_model.mean_mm), axis=1)
    assert shift.max() < 4.0
