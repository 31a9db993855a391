"""Morphable face models: a mean shape, identity modes and named expression blendshapes.

All geometry is held in millimetres in the model's own axes (+x = subject's left, +y up, +z out of the face).
A model is a plain immutable value; loaders turn a source (the packed ICT-FaceKit ``.npz``, a user's
``FaceXModel/`` folder, or another licensed model) into one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np

from realtime.errors import BadInputError, MissingResourceError
from realtime.paths import shared_dir

log = logging.getLogger(__name__)

ICT_NPZ_RELATIVE = Path("models/ict-facekit/ict_face_model.npz")


@dataclass(frozen=True, eq=False)
class MorphableModel:
    name: str
    mean_mm: np.ndarray
    """(N, 3) float32 neutral shape."""
    identity_basis_mm: np.ndarray
    """(K_id, N, 3) float32 identity modes; weights ~ N(0, 1)."""
    expression_basis_mm: np.ndarray
    """(K_exp, N, 3) float32 expression blendshape deltas; weights in [0, 1]."""
    expression_names: tuple[str, ...]
    triangles: np.ndarray
    """(T, 3) int32 vertex indices, counter-clockwise seen from outside."""
    landmarks68: np.ndarray
    """(68,) int32 vertex indices of the iBUG-68 landmarks."""
    face_area_vertices: int
    """Vertices [0, face_area_vertices) form the face area used for shape metrics."""
    uv: np.ndarray | None = None
    """(M, 2) float32 texture coordinates."""
    triangle_uv: np.ndarray | None = None
    """(T, 3) int32 per-corner indices into ``uv`` (UV seams allowed)."""
    quads: np.ndarray | None = None
    narrow_face_area_vertices: int | None = None
    source: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.mean_mm.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis_mm.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.expression_basis_mm.shape[0])

    def expression_index(self, name: str) -> int:
        return self.expression_names.index(name)

    def shape(self, identity: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """Vertices (N, 3) in mm for the given identity and expression weights (zeros when omitted)."""
        v = self.mean_mm.copy()
        if identity is not None:
            v += np.tensordot(np.asarray(identity, np.float32), self.identity_basis_mm, axes=1)
        if expression is not None:
            v += np.tensordot(np.asarray(expression, np.float32), self.expression_basis_mm, axes=1)
        return v

    @cached_property
    def symmetry(self) -> np.ndarray:
        """(N,) index of each vertex's mirror image across the x = 0 plane (computed, not hand-typed)."""
        from scipy.spatial import cKDTree

        mirrored = self.mean_mm * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
        _, idx = cKDTree(self.mean_mm).query(mirrored)
        return idx.astype(np.int32)

    @cached_property
    def expression_mirror(self) -> np.ndarray:
        """(K_exp,) index of each blendshape's left/right counterpart (itself when unpaired)."""
        names = list(self.expression_names)
        out = np.arange(len(names), dtype=np.int32)
        swaps = (("_L", "_R"), ("Left", "Right"))
        for i, n in enumerate(names):
            for a, b in swaps:
                for x, y in ((a, b), (b, a)):
                    if n.endswith(x) and n[: -len(x)] + y in names:
                        out[i] = names.index(n[: -len(x)] + y)
        return out


def triangulate_quads(quads: np.ndarray) -> np.ndarray:
    """Split each quad (a, b, c, d) into triangles (a, b, c) and (a, c, d)."""
    q = np.asarray(quads, dtype=np.int32)
    return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], axis=0)


def load_ict_npz(path: str | Path | None = None) -> MorphableModel:
    """Load the packed ICT-FaceKit model (format: its README; centimetres converted to millimetres)."""
    p = Path(path) if path is not None else default_ict_path()
    if not p.is_file():
        raise MissingResourceError(
            f"ICT-FaceKit model not found at {p}; run `realtime-face models install ict-facekit`"
        )
    return load_packed_npz(p, name="ict-facekit")


def load_packed_npz(path: str | Path, name: str | None = None) -> MorphableModel:
    """Load a model in the packed format (the ICT README's arrays; any model converted to it plugs in).

    Required: ``neutral``, ``identity_deltas``, ``expression_deltas``, ``expression_names``, ``landmarks68``,
    ``face_area_vertices`` and either ``quads`` or ``triangles``. Optional: ``uv`` with ``quad_uv`` or
    ``triangle_uv``, ``narrow_face_area_vertices``, ``units`` ("cm" or "mm", default "mm"), ``name``.
    """
    p = Path(path)
    try:
        d = np.load(p)
    except (OSError, ValueError) as exc:
        raise MissingResourceError(f"cannot read face model {p}: {exc}") from None
    with d:
        keys = set(d.files)
        missing = {"neutral", "identity_deltas", "expression_deltas", "expression_names", "landmarks68",
                   "face_area_vertices"} - keys
        if missing or not ({"quads", "triangles"} & keys):
            lacking = sorted(missing) or ["quads/triangles"]
            raise MissingResourceError(f"face model {p} lacks arrays: {lacking}")
        scale = 10.0 if "units" in keys and str(d["units"]) == "cm" else 1.0
        quads = d["quads"].astype(np.int32) if "quads" in keys else None
        triangles = triangulate_quads(quads) if quads is not None else d["triangles"].astype(np.int32)
        tri_uv = None
        if "quad_uv" in keys:
            tri_uv = triangulate_quads(d["quad_uv"].astype(np.int32))
        elif "triangle_uv" in keys:
            tri_uv = d["triangle_uv"].astype(np.int32)
        return MorphableModel(
            name=name or (str(d["name"]) if "name" in keys else p.stem),
            mean_mm=(d["neutral"].astype(np.float32) * scale),
            identity_basis_mm=(d["identity_deltas"].astype(np.float32) * scale),
            expression_basis_mm=(d["expression_deltas"].astype(np.float32) * scale),
            expression_names=tuple(str(n) for n in d["expression_names"]),
            triangles=triangles,
            landmarks68=d["landmarks68"].astype(np.int32),
            face_area_vertices=int(d["face_area_vertices"]),
            narrow_face_area_vertices=(int(d["narrow_face_area_vertices"])
                                       if "narrow_face_area_vertices" in keys else None),
            uv=d["uv"].astype(np.float32) if "uv" in keys else None,
            triangle_uv=tri_uv,
            quads=quads,
            source=str(p),
        )


def default_ict_path() -> Path:
    """The installed ICT model if there is one, else the shared data folder's copy."""
    from realtime.paths import models_dir

    installed = models_dir() / "ict-facekit" / "ict_face_model.npz"
    if installed.is_file():
        return installed
    return shared_dir() / ICT_NPZ_RELATIVE


# --- Loader registry -------------------------------------------------------------------------------------
# A second morphable model (BFM 2009 + an expression basis, FLAME, ...) plugs in without changing this file:
# either convert it to the packed format and load it with ``load_face_model("packed", path)``, or ship a
# loader ``(path: Path | None) -> MorphableModel`` in any installed package under the entry-point group
# ``realtime_face.face_models`` (see docs/face_models.md). Built-in loaders are a constant mapping; plug-ins
# are discovered at call time, so there is no mutable global registry.

ModelLoader = Callable[[Path | None], MorphableModel]
ENTRY_POINT_GROUP = "realtime_face.face_models"


def _load_ict(path: Path | None) -> MorphableModel:
    if path is not None and path.is_dir():
        return load_facex_folder(path)
    return load_ict_npz(path)


def _load_packed(path: Path | None) -> MorphableModel:
    if path is None:
        raise MissingResourceError("the 'packed' face model loader needs a path to an .npz file")
    return load_packed_npz(path)


BUILTIN_LOADERS: Mapping[str, ModelLoader] = MappingProxyType(
    {"ict-facekit": _load_ict, "packed": _load_packed})


def available_loaders() -> dict[str, ModelLoader]:
    """Built-in loaders plus those installed packages declare under ``realtime_face.face_models``."""
    from importlib.metadata import entry_points

    loaders: dict[str, ModelLoader] = dict(BUILTIN_LOADERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in loaders:
            loaders[ep.name] = _lazy_entry_point(ep)
    return loaders


def _lazy_entry_point(ep: Any) -> ModelLoader:
    def load(path: Path | None) -> MorphableModel:
        return cast(MorphableModel, ep.load()(path))

    return load


def load_face_model(name: str = "ict-facekit", path: str | Path | None = None,
                    loaders: Mapping[str, ModelLoader] | None = None) -> MorphableModel:
    """Load a face model by name (``ict-facekit``: the packed npz, or a ``FaceXModel/`` folder given as path).

    ``loaders`` replaces the discovered loaders (tests, embedding applications).
    """
    table = dict(loaders) if loaders is not None else available_loaders()
    if name not in table:
        raise MissingResourceError(f"unknown face model '{name}' (available: {', '.join(sorted(table))})")
    return table[name](Path(path) if path is not None else None)


# --- ICT-FaceKit FaceXModel/ folder of OBJs --------------------------------------------------------------

FACEX_NEUTRAL = "generic_neutral_mesh.obj"
FACEX_INDICES = "vertex_indices.json"
FACEX_REGION_GROUPS = 2
"""The ICT mesh's first two OBJ groups (#0 face, #1 head and neck) form the region the project uses."""
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ObjMesh:
    vertices: np.ndarray
    """(V, 3) float32 as written (ICT: centimetres)."""
    uv: np.ndarray
    """(M, 2) float32."""
    faces: list[np.ndarray]
    """Per polygon: (k,) vertex ids, 0-based."""
    face_uv: list[np.ndarray]
    face_group: np.ndarray
    """(F,) index of the OBJ group (``g``/``o`` statement order) each polygon belongs to."""


def read_obj_vertices(path: Path) -> np.ndarray:
    """Only the ``v`` lines of an OBJ (fast path for the 150 shape files of a FaceXModel folder)."""
    text = path.read_text(errors="replace")
    values = [line[2:] for line in text.splitlines() if line.startswith("v ")]
    arr = np.array(" ".join(values).split(), dtype=np.float32)
    if len(values) == 0 or arr.size % len(values):
        raise BadInputError(f"{path}: cannot read vertices")
    return arr.reshape(len(values), -1)[:, :3]


def read_obj(path: Path) -> ObjMesh:
    """Vertices, texture coordinates, polygons (with their UV corners) and group ids of an OBJ file."""
    verts: list[str] = []
    uvs: list[str] = []
    faces: list[np.ndarray] = []
    face_uv: list[np.ndarray] = []
    groups: list[int] = []
    group = -1
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("v "):
            verts.append(line[2:])
        elif line.startswith("vt "):
            uvs.append(line[3:])
        elif line.startswith("f "):
            corners = [c.split("/") for c in line[2:].split()]
            faces.append(np.array([int(c[0]) - 1 for c in corners], dtype=np.int32))
            face_uv.append(np.array([int(c[1]) - 1 if len(c) > 1 and c[1] else -1 for c in corners],
                                    np.int32))
            groups.append(max(group, 0))
        elif line.startswith(("g ", "o ")) or line.strip() in ("g", "o"):
            group += 1
    if not verts or not faces:
        raise BadInputError(f"{path}: not a polygon mesh OBJ")
    v = np.array(" ".join(verts).split(), dtype=np.float32).reshape(len(verts), -1)[:, :3]
    uv = (np.array(" ".join(uvs).split(), dtype=np.float32).reshape(len(uvs), -1)[:, :2] if uvs
          else np.zeros((0, 2), np.float32))
    return ObjMesh(v, uv, faces, face_uv, np.array(groups, dtype=np.int32))


def _folder_fingerprint(folder: Path) -> str:
    import hashlib

    h = hashlib.sha1(f"facex-v{CACHE_FORMAT}".encode())
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in (".obj", ".json"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def convert_facex_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """Read a ``FaceXModel/`` folder into the packed arrays (ICT README format, centimetres, float16 deltas).

    Region: polygons of the first two OBJ groups (face, head and neck), whose vertices must be the leading
    vertex range. Expressions: ``vertex_indices.json``'s list when present, else every other OBJ; shapes that
    do not move the region (eyeball-only ones) are dropped. Landmarks: ``idx_to_landmark_verts`` of the json.
    The narrow face area ends with the eye and mouth rims (the region's inner boundary loops).
    """
    import json

    src = Path(folder)
    neutral_path = src / FACEX_NEUTRAL
    if not neutral_path.is_file():
        raise BadInputError(f"{src} is not an ICT-FaceKit FaceXModel folder (no {FACEX_NEUTRAL})")
    mesh = read_obj(neutral_path)
    n_groups = int(mesh.face_group.max()) + 1
    keep = np.nonzero(mesh.face_group < min(FACEX_REGION_GROUPS, n_groups))[0]
    polys = [mesh.faces[i] for i in keep]
    n_region = int(max(int(p.max()) for p in polys)) + 1
    face_area = int(max(int(mesh.faces[i].max()) for i in keep if mesh.face_group[i] == 0)) + 1
    used = np.unique(np.concatenate(polys))
    if len(used) != n_region:
        raise BadInputError(f"{neutral_path}: the face region's vertices are not a leading range")
    sizes = {len(p) for p in polys}
    if sizes == {4}:
        quads = np.stack(polys).astype(np.int32)
        quad_uv = np.stack([mesh.face_uv[i] for i in keep]).astype(np.int32)
        arrays: dict[str, np.ndarray] = {"quads": quads, "quad_uv": quad_uv}
        triangles = triangulate_quads(quads)
    else:
        tris, tri_uv = [], []
        for i in keep:
            f, fu = mesh.faces[i], mesh.face_uv[i]
            for k in range(1, len(f) - 1):
                tris.append(f[[0, k, k + 1]])
                tri_uv.append(fu[[0, k, k + 1]])
        triangles = np.stack(tris).astype(np.int32)
        arrays = {"triangles": triangles, "triangle_uv": np.stack(tri_uv).astype(np.int32)}
    neutral = mesh.vertices[:n_region].astype(np.float32)

    meta: dict[str, Any] = {}
    if (src / FACEX_INDICES).is_file():
        meta = json.loads((src / FACEX_INDICES).read_text())

    def deltas(names: list[str]) -> np.ndarray:
        out = np.empty((len(names), n_region, 3), dtype=np.float32)
        for k, nm in enumerate(names):
            v = read_obj_vertices(src / f"{nm}.obj")
            if len(v) < n_region:
                raise BadInputError(f"{src / nm}.obj has {len(v)} vertices, fewer than the face region")
            out[k] = v[:n_region] - neutral
        return out

    identity_names = sorted(f.stem for f in src.glob("identity*.obj") if f.stem[8:].isdigit())
    if not identity_names:
        raise BadInputError(f"{src}: no identityNNN.obj files")
    expr_names = list(meta.get("expressions") or sorted(
        f.stem for f in src.glob("*.obj") if f.name != FACEX_NEUTRAL and f.stem not in identity_names))
    missing = [n for n in expr_names if not (src / f"{n}.obj").is_file()]
    if missing:
        raise BadInputError(f"{src}: expression OBJs missing: {', '.join(missing[:5])}")
    log.info("converting %s: %d identities, %d expressions, %d region vertices", src, len(identity_names),
             len(expr_names), n_region)
    id_d = deltas(identity_names)
    ex_d = deltas(expr_names)
    moves = np.abs(ex_d).max(axis=(1, 2)) > 1e-6
    if not moves.all():
        log.info("dropping shapes that do not move the face region: %s",
                 [n for n, m in zip(expr_names, moves, strict=True) if not m])
    ex_d = ex_d[moves]
    expr_names = [n for n, m in zip(expr_names, moves, strict=True) if m]
    landmarks = np.asarray(meta.get("idx_to_landmark_verts", []), dtype=np.int32)
    if landmarks.shape != (68,) or int(landmarks.max()) >= n_region:
        raise BadInputError(f"{src}: {FACEX_INDICES} with 68 landmark vertices of the face region is needed")
    inner = [lp for lp in boundary_loops(triangles) if int(lp.max()) < face_area]
    narrow = int(max(int(lp.max()) for lp in inner)) + 1 if inner else face_area
    arrays |= dict(
        neutral=neutral, identity_deltas=id_d.astype(np.float16), identity_names=np.array(identity_names),
        expression_deltas=ex_d.astype(np.float16), expression_names=np.array(expr_names),
        uv=mesh.uv.astype(np.float32), landmarks68=landmarks,
        face_area_vertices=np.asarray(face_area, np.int32),
        narrow_face_area_vertices=np.asarray(narrow, np.int32), units=np.asarray("cm"),
        name=np.asarray("ict-facekit"))
    return arrays


def load_facex_folder(folder: str | Path, cache: bool = True) -> MorphableModel:
    """Load a user's ``FaceXModel/`` folder, converted once, cached under ``realtime.paths.cache_dir()``."""
    from realtime.paths import cache_dir

    src = Path(folder)
    if not src.is_dir():
        raise BadInputError(f"not a folder: {src}")
    cached = cache_dir() / "models" / f"facex-{_folder_fingerprint(src)}.npz"
    if cache and cached.is_file():
        return load_packed_npz(cached, name="ict-facekit")
    arrays = convert_facex_folder(src)
    if not cache:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_packed_npz(arrays, Path(tmp) / "model.npz")
            return load_packed_npz(Path(tmp) / "model.npz", name="ict-facekit")
    write_packed_npz(arrays, cached)
    return load_packed_npz(cached, name="ict-facekit")


def write_packed_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write atomically (a temp file renamed into place) so a crash never leaves half a model."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- Eyeball proxies ---------------------------------------------------------------------------------
# The ICT face region has holes where the eyes are. MediaPipe needs eyes to track well, and its iris
# landmarks (468-477) give the metric scale, so renders (synthetic.py) put a sphere with an iris disc in each
# socket and the fitter needs the same eye centres. Both use this one definition.

IRIS_DIAMETER_MM = 11.7
"""Mean human iris (limbus) diameter; MediaPipe's iris landmarks are calibrated against it."""
EYEBALL_RADIUS_MM = 12.0
"""Mean human eyeball radius (axial length ≈ 24 mm)."""
PUPIL_DIAMETER_MM = 4.0
CORNEA_PROTRUSION_MM = 1.0
"""How far the eyeball's front (gaze axis) sits in front of the mean of the lid-opening loop, in +z."""


@dataclass(frozen=True)
class EyeRig:
    """Eyeball spheres anchored to the lid-opening boundary loops of the mesh.

    Index 0 is the subject's right eye (-x, MediaPipe iris 468-472), 1 the subject's left eye (+x, 473-477).
    ``centres`` must be given the identity-only shape (``model.shape(identity)``): expressions (blinks,
    eyeLook*) move the lids, not the eyeballs.
    """

    loops: tuple[np.ndarray, np.ndarray]
    """Vertex ids of each eye's lid-opening boundary loop, in loop order."""
    offset_mm: np.ndarray
    """(2, 3) eyeball centre minus the mean of its loop's vertices (model axes)."""
    radius_mm: float = EYEBALL_RADIUS_MM
    iris_radius_mm: float = IRIS_DIAMETER_MM / 2.0
    pupil_radius_mm: float = PUPIL_DIAMETER_MM / 2.0

    def centres(self, identity_vertices: np.ndarray) -> np.ndarray:
        """(..., N, 3) identity-only vertices -> (..., 2, 3) eyeball centres in the same space."""
        v = np.asarray(identity_vertices)
        return np.stack([v[..., loop, :].mean(axis=-2) for loop in self.loops], axis=-2) + self.offset_mm

    @property
    def iris_depth_mm(self) -> float:
        """Distance from the eyeball centre to the plane of the limbus along the gaze axis."""
        return float(np.sqrt(self.radius_mm**2 - self.iris_radius_mm**2))


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Ordered vertex loops of the mesh boundary (edges used by exactly one triangle)."""
    tri = np.asarray(triangles, dtype=np.int64)
    directed = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    key = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    border = directed[counts[inverse.ravel()] == 1]
    nxt = dict(zip(border[:, 0].tolist(), border[:, 1].tolist(), strict=True))
    loops: list[np.ndarray] = []
    seen: set[int] = set()
    for start in nxt:
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        cur = nxt[start]
        while cur != start and cur not in seen:
            loop.append(cur)
            seen.add(cur)
            cur = nxt.get(cur, start)
        loops.append(np.asarray(loop, dtype=np.int32))
    return loops


def eye_rig(model: MorphableModel) -> EyeRig:
    """Find the two eye openings (the boundary loops nearest the iBUG eye landmarks) and place the spheres.

    Meshes without eye openings fall back to the iBUG eye landmarks as anchors.
    """
    loops = boundary_loops(model.triangles)
    mean = model.mean_mm
    # iBUG-68: 36-41 subject's right eye, 42-47 subject's left eye.
    targets = (mean[model.landmarks68[36:42]].mean(axis=0), mean[model.landmarks68[42:48]].mean(axis=0))
    chosen: list[np.ndarray] = []
    for e, target in enumerate(targets):
        dists = [float(np.linalg.norm(mean[lp].mean(axis=0) - target)) for lp in loops]
        best = int(np.argmin(dists)) if dists else -1
        if best >= 0 and dists[best] <= 15.0:
            chosen.append(loops[best])
        else:
            # A mesh without eye openings (e.g. BFM): anchor the eyeball on the six iBUG eye landmarks.
            chosen.append(model.landmarks68[36 + 6 * e: 42 + 6 * e].astype(np.int32))
    offset = np.zeros((2, 3), dtype=np.float32)
    offset[:, 2] = CORNEA_PROTRUSION_MM - EYEBALL_RADIUS_MM
    return EyeRig(loops=(chosen[0], chosen[1]), offset_mm=offset)
