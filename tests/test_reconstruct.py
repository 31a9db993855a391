"""``realtime-face reconstruct`` on the real annotated photos (real MediaPipe, real fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realtime.cli import main
from tests.conftest import IMAGE_NAMES


def read_pts(path) -> np.ndarray:
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, float).reshape(-1, 2) - 1.0   # 1-based iBUG -> 0-based pixel centres


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_reconstruct_photo(images_dir, tmp_path, name, face_model, capsys):
    out = tmp_path / "rec"
    rc = main(["reconstruct", str(images_dir / f"{name}.jpg"), "--out", str(out), "--texture-size", "256"])
    assert rc == 0
    for f in ("mesh.obj", "mesh.mtl", "texture.png", "landmarks68.json", "params.json"):
        assert (out / f).stat().st_size > 0
    lm = json.loads((out / "landmarks68.json").read_text())
    p2, p3 = np.array(lm["points_2d_px"]), np.array(lm["points_3d_mm"])
    assert p2.shape == (68, 2) and p3.shape == (68, 3)
    params = json.loads((out / "params.json").read_text())
    assert params["format_version"] == 1
    assert len(params["identity"]) == face_model.n_identity
    assert set(params["expression"]) == set(face_model.expression_names)
    assert all(0.0 <= w <= 1.0 for w in params["expression"].values())
    k = params["intrinsics"]
    # The 3D landmarks project onto the 2D ones with the written intrinsics (same camera space).
    proj = np.c_[k["fx"] * p3[:, 0] / p3[:, 2] + k["cx"], k["fy"] * p3[:, 1] / p3[:, 2] + k["cy"]]
    np.testing.assert_allclose(proj, p2, atol=0.05)
    assert 150.0 < float(np.linalg.norm(params["pose"]["translation_mm"])) < 3000.0
    # The mesh file holds the model's vertices in the same camera space (landmark vertices match).
    text = (out / "mesh.obj").read_text().splitlines()
    verts = np.array([ln.split()[1:4] for ln in text if ln.startswith("v ")], float)
    faces = [ln for ln in text if ln.startswith("f ")]
    assert verts.shape[0] == face_model.n_vertices and len(faces) == len(face_model.triangles)
    assert sum(ln.startswith("vt ") for ln in text) == len(face_model.uv)
    np.testing.assert_allclose(verts[face_model.landmarks68], p3, atol=0.01)
    # The projected model landmarks land on the annotated ones (NME, bounding-box normalised).
    gt = read_pts(images_dir / f"{name}.pts")
    box = np.sqrt(np.prod(gt.max(axis=0) - gt.min(axis=0)))
    nme = float(np.linalg.norm(p2 - gt, axis=1).mean() / box)
    assert nme < 0.08, nme
    # The identity and pose were refined against the photo's shading: the colour residual went down.
    photo = params["photometric_fit_rms_grey"]
    assert photo is not None and photo["refined"] < photo["landmark_fit"], photo
    assert params["timings_ms"]["photometric"] > 0


def test_reconstruct_without_photometric(images_dir, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["reconstruct", str(images_dir / f"{IMAGE_NAMES[0]}.jpg"), "--out", str(out),
                 "--texture-size", "64", "--no-photometric"]) == 0
    params = json.loads((out / "params.json").read_text())
    assert params["photometric_fit_rms_grey"] is None and "photometric" not in params["timings_ms"]


def test_reconstruct_errors(tmp_path, capsys):
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    assert main(["reconstruct", str(blank), "--out", str(tmp_path / "o")]) == 2
    assert "no face found" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")]) == 2
    not_image = tmp_path / "x.jpg"
    not_image.write_text("hello")
    assert main(["reconstruct", str(not_image), "--out", str(tmp_path / "o")]) == 2
