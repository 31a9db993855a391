"""End to end on a real photo: `realtime-face refine` → files that open in trimesh and render headless."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime.cli import main


@pytest.fixture(scope="module")
def refined_dir(tmp_path_factory: pytest.TempPathFactory, images_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("refined")
    rc = main(["-q", "refine", str(images_dir / "takeo.jpg"), "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.slow
def test_refine_cli_exports_all_files(refined_dir: Path) -> None:
    meta = json.loads((refined_dir / "face.json").read_text())
    for role in ("obj", "mtl", "texture", "displacement", "normal_map", "ply", "glb", "coarse_ply"):
        assert (refined_dir / meta["files"][role]).stat().st_size > 0, role
    assert len(meta["parameters"]["identity"]) == 100
    assert meta["timings_ms"]["refine.sfs"] > 0
    assert 0.3 < meta["texture_coverage"] <= 1.0
    pe = meta["parameters"]["photometric_error_grey"]
    # the refined geometry explains the shading better (-13 % here; it was -39 % while the depth still
    # carved the dark brow hair and the nostrils' shadows in as grooves and pits, see the test below)
    assert pe["refined"] < 0.9 * pe["coarse"]
    # the analysis-by-synthesis step explains the skin's colours better than the landmark fit it starts from
    rms = meta["parameters"]["photometric_fit_rms_grey"]
    assert rms["refined"] < 0.9 * rms["landmark_fit"]


@pytest.mark.slow
def test_exported_meshes_open_and_render(refined_dir: Path) -> None:
    import trimesh
    from PIL import Image

    from realtime.refine.export import render_preview

    obj = trimesh.load(refined_dir / "face.obj", force="mesh")
    glb = trimesh.load(refined_dir / "face.glb", force="mesh")
    ply = trimesh.load(refined_dir / "face.ply", force="mesh")
    coarse = trimesh.load(refined_dir / "face_coarse.ply", force="mesh")
    assert isinstance(obj.visual, trimesh.visual.TextureVisuals)
    assert obj.visual.material.image is not None
    assert len(glb.faces) == len(ply.faces) == len(coarse.faces) > 10_000
    # the refined mesh differs from the coarse one, but only by detail (a few mm at most)
    diff = np.linalg.norm(ply.vertices - coarse.vertices, axis=1)
    assert np.percentile(diff, 75) > 0.1       # the face moved (medium stage + detail) ...
    assert np.percentile(diff, 99) < 6.0       # ... by mm, not by a broken transform
    from realtime.facemodel import load_face_model
    from realtime.refine.medium import vertex_regions

    brows = vertex_regions(load_face_model())[: len(diff)] == 1
    assert diff[brows].mean() < 1.5, diff[brows].mean()   # brow hair is albedo, not 3-4 mm grooves
    pic = render_preview([(coarse.vertices, coarse.faces), (ply.vertices, ply.faces)], refined_dir / "p.png",
                         size=128)
    assert pic.shape == (128, 256, 3)
    lit = pic.reshape(-1, 3).max(axis=1) > 20
    assert 0.1 < lit.mean() < 0.9
    disp = np.asarray(Image.open(refined_dir / "face_displacement.png")).astype(np.int64) - 32768
    assert disp.std() > 10   # µm: the displacement map is not empty


def test_refine_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["refine", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "image not found" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(blank)
    rc = main(["refine", str(blank), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "no face found" in capsys.readouterr().err
