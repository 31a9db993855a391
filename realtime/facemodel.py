"""Morphable face models: a mean shape, identity modes and named expression blendshapes.

All geometry is held in millimetres in the model's own axes (+x = subject's left, +y up, +z out of the face).
A model is a plain immutable value; loaders turn a source (the packed ICT-FaceKit ``.npz``, a user's
``FaceXModel/`` folder, or another licensed model) into one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from realtime.errors import MissingResourceError
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
    with np.load(p) as d:
        scale = 10.0 if str(d["units"]) == "cm" else 1.0
        quads = d["quads"].astype(np.int32)
        quad_uv = d["quad_uv"].astype(np.int32)
        return MorphableModel(
            name="ict-facekit",
            mean_mm=(d["neutral"].astype(np.float32) * scale),
            identity_basis_mm=(d["identity_deltas"].astype(np.float32) * scale),
            expression_basis_mm=(d["expression_deltas"].astype(np.float32) * scale),
            expression_names=tuple(str(n) for n in d["expression_names"]),
            triangles=triangulate_quads(quads),
            landmarks68=d["landmarks68"].astype(np.int32),
            face_area_vertices=int(d["face_area_vertices"]),
            narrow_face_area_vertices=int(d["narrow_face_area_vertices"]),
            uv=d["uv"].astype(np.float32),
            triangle_uv=triangulate_quads(quad_uv),
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


def load_face_model(name: str = "ict-facekit", path: str | Path | None = None) -> MorphableModel:
    """Load a face model by name. Other licensed models plug in here with their own loader."""
    if name == "ict-facekit":
        return load_ict_npz(path)
    raise MissingResourceError(f"unknown face model '{name}' (available: ict-facekit)")


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
    """Find the two eye openings (the boundary loops nearest the iBUG eye landmarks) and place the spheres."""
    loops = boundary_loops(model.triangles)
    mean = model.mean_mm
    # iBUG-68: 36-41 subject's right eye, 42-47 subject's left eye.
    targets = (mean[model.landmarks68[36:42]].mean(axis=0), mean[model.landmarks68[42:48]].mean(axis=0))
    chosen: list[np.ndarray] = []
    for target in targets:
        dists = [float(np.linalg.norm(mean[lp].mean(axis=0) - target)) for lp in loops]
        best = int(np.argmin(dists))
        if dists[best] > 15.0:
            raise MissingResourceError(f"face model '{model.name}' has no eye opening near the eye landmarks")
        chosen.append(loops[best])
    offset = np.zeros((2, 3), dtype=np.float32)
    offset[:, 2] = CORNEA_PROTRUSION_MM - EYEBALL_RADIUS_MM
    return EyeRig(loops=(chosen[0], chosen[1]), offset_mm=offset)
