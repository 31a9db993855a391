"""Export a refined snapshot: OBJ + MTL + texture PNG, displacement and normal maps, PLY, GLB and JSON.

Meshes are written in the face model's space (mm, +y up, +z out of the face), so viewers show them upright;
the JSON holds the pose that maps them into the camera of the input image. Geometry and texture go through
trimesh (OBJ/MTL/PNG, PLY, GLB) and Pillow.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from realtime.facemodel import MorphableModel
from realtime.paths import ensure_writable_dir
from realtime.refine.raster import depth_map, rasterize
from realtime.refine.uv import UVAtlas, View, unwrap_texture
from realtime.results import FRONTAL_ROTATION

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DISPLACEMENT_UM_PER_LEVEL = 1.0
"""displacement.png is 16-bit: value = 32768 + displacement in µm."""


@dataclass(frozen=True, slots=True)
class ExportedSnapshot:
    directory: Path
    files: dict[str, Path]
    """Role -> path: obj, mtl, texture, displacement, normal_map, ply, glb, coarse_ply, json."""
    timings_ms: dict[str, float] = field(default_factory=dict)


def visible_depth(vertices_cam: np.ndarray, triangles: np.ndarray, width: int, height: int,
                  intrinsics_project: object) -> np.ndarray:
    """Full-resolution depth of the front-most surface (for the texture's visibility test)."""
    px = intrinsics_project(vertices_cam)  # type: ignore[operator]
    v = np.asarray(vertices_cam, np.float64)
    front = v[:, 2] > 1.0
    tri = triangles[front[triangles].all(axis=1)]
    # back faces can never be the visible surface of a closed-enough head: skip them (half the work)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    tri = tri[np.einsum("ij,ij->i", np.cross(b - a, c - a), a) < 0.0]
    r = rasterize(px, tri, height, width, depth=v[:, 2])
    return depth_map(r, vertices_cam[:, 2], tri)


def _unwelded(atlas: UVAtlas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One output vertex per distinct (model vertex, uv) pair: (vertex ids, uvs, faces)."""
    pairs = np.stack([atlas.triangles.ravel(), atlas.triangle_uv.ravel()], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.int64)
    return uniq[:, 0], atlas.uv[uniq[:, 1]], faces


def to_model_space(vertices_cam: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    return ((np.asarray(vertices_cam, np.float64) - translation) @ np.asarray(rotation, np.float64)).astype(
        np.float32)


def export_snapshot(out_dir: str | Path, model: MorphableModel, atlas: UVAtlas, views: list[View],
                    detailed_cam: np.ndarray, coarse_cam: np.ndarray, rotation: np.ndarray,
                    translation: np.ndarray, displacement_uv: np.ndarray, normal_uv: np.ndarray,
                    uv_valid: np.ndarray, parameters: dict[str, object],
                    timings_ms: dict[str, float], stem: str = "face") -> ExportedSnapshot:
    """Write all snapshot files into ``out_dir`` (created); raises OutputError when it cannot be written."""
    import trimesh

    t0 = time.perf_counter()
    out = Path(out_dir)
    ensure_writable_dir(out, f".{stem}.write-test")
    files: dict[str, Path] = {}
    texture, seen = unwrap_texture(atlas, views, model.triangles)
    tex_img = Image.fromarray(texture)
    vid, uvs, faces = _unwelded(atlas)
    detailed_model = to_model_space(detailed_cam, rotation, translation)
    coarse_model = to_model_space(coarse_cam, rotation, translation)

    material = trimesh.visual.material.SimpleMaterial(image=tex_img, diffuse=[255, 255, 255, 255])
    textured = trimesh.Trimesh(vertices=detailed_model[vid], faces=faces, process=False,
                               visual=trimesh.visual.TextureVisuals(uv=uvs, material=material))
    # OBJ + MTL + texture: trimesh returns the side files (material, image) as a dict of bytes
    obj_text, side = trimesh.exchange.obj.export_obj(textured, include_texture=True, return_texture=True,
                                                     mtl_name=f"{stem}.mtl")
    obj_path = out / f"{stem}.obj"
    obj_path.write_text(obj_text)
    files["obj"] = obj_path
    for name, data in side.items():
        p = out / name
        p.write_bytes(data if isinstance(data, bytes) else str(data).encode())
        files["mtl" if name.endswith(".mtl") else "texture"] = p

    disp_path = out / f"{stem}_displacement.png"
    d16 = np.clip(32768.0 + displacement_uv * 1000.0 / DISPLACEMENT_UM_PER_LEVEL, 0, 65535).astype(np.uint16)
    Image.fromarray(d16).save(disp_path)
    files["displacement"] = disp_path
    nrm_path = out / f"{stem}_normal.png"
    n8 = np.where(uv_valid[..., None], (normal_uv * 0.5 + 0.5) * 255.0, 128.0)
    Image.fromarray(np.clip(n8, 0, 255).astype(np.uint8)).save(nrm_path)
    files["normal_map"] = nrm_path

    # vertex colours for the PLY from the texture at each vertex's uv
    ij = np.clip(np.stack([(1.0 - uvs[:, 1]) * atlas.size, uvs[:, 0] * atlas.size], 1).astype(int), 0,
                 atlas.size - 1)
    colours = np.concatenate([texture[ij[:, 0], ij[:, 1]], np.full((len(uvs), 1), 255, np.uint8)], axis=1)
    coloured = trimesh.Trimesh(vertices=detailed_model[vid], faces=faces, vertex_colors=colours,
                               process=False)
    ply_path = out / f"{stem}.ply"
    coloured.export(ply_path)
    files["ply"] = ply_path
    glb_path = out / f"{stem}.glb"
    glb = textured.export(file_type="glb")
    glb_path.write_bytes(glb if isinstance(glb, bytes) else str(glb).encode())
    files["glb"] = glb_path
    coarse_path = out / f"{stem}_coarse.ply"
    trimesh.Trimesh(vertices=coarse_model[vid], faces=faces, process=False).export(coarse_path)
    files["coarse_ply"] = coarse_path

    timings = dict(timings_ms)
    timings["export"] = (time.perf_counter() - t0) * 1e3
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "space": "model (mm, +x subject's left, +y up, +z out of the face); camera = R @ v + t",
        "pose": {"rotation": np.asarray(rotation).tolist(),
                 "translation_mm": np.asarray(translation).tolist()},
        "displacement_png": f"16-bit, value = 32768 + displacement along the outward normal in µm "
                            f"(×{DISPLACEMENT_UM_PER_LEVEL})",
        "normal_png": "model-space unit normals, rgb = (n + 1) / 2; 128 grey where not refined",
        "texture_coverage": float(seen[atlas.mask].mean()) if atlas.mask.any() else 0.0,
        "parameters": parameters,
        "timings_ms": timings,
        "files": {k: v.name for k, v in files.items()},
    }
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(meta, indent=1, default=_json_default))
    files["json"] = json_path
    log.info("exported snapshot to %s (%d files)", out, len(files))
    return ExportedSnapshot(out, files, timings)


def _json_default(o: object) -> object:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def render_preview(meshes: list[tuple[np.ndarray, np.ndarray]], path: str | Path | None = None,
                   size: int = 384, yaw_deg: float = 25.0,
                   vertex_colors: list[np.ndarray | None] | None = None) -> np.ndarray:
    """Headless side-by-side render of model-space meshes (e.g. coarse | refined), lit, turned by ``yaw_deg``.

    Returns the (size, size * len(meshes), 3) uint8 picture and writes it as PNG when ``path`` is given.
    """
    from realtime.camera import Intrinsics
    from realtime.render import OffscreenRenderer

    k = Intrinsics.from_fov(size, size, 30.0)
    a = np.radians(yaw_deg)
    # model -> camera: turn about +y, then the frontal flip (y down, z forward), 560 mm away
    turn = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    rot = FRONTAL_ROTATION @ turn
    tiles = []
    with OffscreenRenderer(size, size) as r:
        for i, (verts, faces) in enumerate(meshes):
            v = np.asarray(verts, np.float64)
            centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
            cam = ((v - centre) @ rot.T + np.array([0.0, 0.0, 560.0])).astype(np.float32)
            colours = vertex_colors[i] if vertex_colors is not None else None
            tiles.append(r.render(cam, np.asarray(faces, np.int32), k, "lit", vertex_colors=colours))
    picture = np.concatenate(tiles, axis=1)
    if path is not None:
        Image.fromarray(picture).save(path)
    return picture
