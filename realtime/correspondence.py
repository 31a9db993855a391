"""MediaPipe-478 landmarks <-> face-model surface: a barycentric point on the mesh for every landmark.

The table is built and measured by ``tools/build_correspondence.py`` (MediaPipe run on renders of the model,
landmarks back-projected onto the surface; method and figures in ``docs/correspondence.md``) and shipped as
``realtime/data/mediapipe478_<model name>.npz``.

The ten iris landmarks (468-472: subject's right eye, centre then ring; 473-477: left eye) do not lie on the
face surface but on the eyeballs (``realtime.facemodel.EyeRig``): their table entries have weight 0 and their
positions are given in eye-local coordinates instead (``iris_local_mm``, model axes, relative to the eyeball
centre, straight gaze), see ``Correspondence.iris_points``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from realtime.errors import MissingResourceError
from realtime.facemodel import MorphableModel
from realtime.paths import data_dir

log = logging.getLogger(__name__)

N_LANDMARKS = 478
IRIS_LANDMARKS = np.arange(468, 478)
"""468 right iris centre, 469-472 its ring; 473 left iris centre, 474-477 its ring (subject's sides)."""
IRIS_EYE = np.array([0] * 5 + [1] * 5, dtype=np.int32)
"""Eye of each iris landmark (0 = subject's right, the ``EyeRig`` order)."""
FORMAT_VERSION = 1
SPREAD_SCALE_MM = 2.0
"""Spread at which a landmark's reliability weight falls to 0.5."""


@dataclass(frozen=True, eq=False)
class Correspondence:
    vertex_ids: np.ndarray
    """(478, 3) int32 vertices of the model triangle each landmark lies on."""
    barycentric: np.ndarray
    """(478, 3) float32 barycentric coordinates in that triangle."""
    weights: np.ndarray
    """(478,) float32 reliability in [0, 1] (0 = not usable for fitting: the iris landmarks)."""
    triangle: np.ndarray
    """(478,) int32 index into ``model.triangles``."""
    spread_mm: np.ndarray
    """(478,) float32 median distance of the per-render back-projections to the chosen point (mm)."""
    iris_local_mm: np.ndarray
    """(10, 3) float32 iris landmarks 468-477 relative to their eyeball centre (model axes, straight gaze)."""
    model_name: str = ""
    n_model_vertices: int = 0
    source: str = ""
    topology: str = ""
    """``topology_hash(model.triangles)`` of the model the table was built for."""

    def points(self, vertices: np.ndarray) -> np.ndarray:
        """(..., N, 3) model vertices (any space) -> (..., 478, 3) landmark points on the surface."""
        v = np.asarray(vertices)
        return (v[..., self.vertex_ids, :] * self.barycentric[:, :, None]).sum(axis=-2)

    def iris_points(self, eye_centres: np.ndarray, rotation: np.ndarray | None = None,
                    gaze_rotations: np.ndarray | None = None) -> np.ndarray:
        """(10, 3) iris landmark positions from the two eyeball centres (``EyeRig.centres``).

        ``eye_centres`` (2, 3) are in the target space; ``rotation`` maps model axes to that space (a pose's
        rotation for camera space, None for model space); ``gaze_rotations`` (2, 3, 3) turn each eye.
        """
        local = self.iris_local_mm.astype(np.float64)
        if gaze_rotations is not None:
            local = np.einsum("kij,kj->ki", np.asarray(gaze_rotations)[IRIS_EYE], local)
        if rotation is not None:
            local = local @ np.asarray(rotation).T
        return np.asarray(eye_centres)[IRIS_EYE] + local

    @property
    def iris_diameter_mm(self) -> float:
        """Mean diameter of MediaPipe's iris ring (469-472 / 474-477) measured on the 11.7 mm iris proxy."""
        p = self.iris_local_mm
        return float(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in ((1, 3), (2, 4), (6, 8), (7, 9))]))


def topology_hash(triangles: np.ndarray) -> str:
    """Short hash of a mesh's triangle list: a table only fits models with the same vertex order and faces."""
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(triangles, dtype=np.int32).tobytes()).hexdigest()[:16]


def weights_from_spread(spread_mm: np.ndarray) -> np.ndarray:
    """Reliability weight 1 / (1 + (spread / 2 mm)²); 0 where the spread is unknown (no samples)."""
    s = np.asarray(spread_mm, dtype=np.float64)
    w = 1.0 / (1.0 + (np.where(np.isfinite(s), s, 0.0) / SPREAD_SCALE_MM) ** 2)
    return np.where(np.isfinite(s), w, 0.0).astype(np.float32)


def default_path(model: MorphableModel) -> Path:
    return data_dir() / f"mediapipe478_{model.name}.npz"


def save_correspondence(corr: Correspondence, path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        p, format_version=np.int32(FORMAT_VERSION), vertex_ids=corr.vertex_ids.astype(np.int32),
        barycentric=corr.barycentric.astype(np.float32), weights=corr.weights.astype(np.float32),
        triangle=corr.triangle.astype(np.int32), spread_mm=corr.spread_mm.astype(np.float32),
        iris_local_mm=corr.iris_local_mm.astype(np.float32), model_name=np.str_(corr.model_name),
        n_model_vertices=np.int32(corr.n_model_vertices), source=np.str_(corr.source),
        topology=np.str_(corr.topology))


def read_correspondence(path: str | Path) -> Correspondence:
    p = Path(path)
    if not p.is_file():
        raise MissingResourceError(f"correspondence table not found: {p} (build it with "
                                   "tools/build_correspondence.py)")
    with np.load(p) as d:
        return Correspondence(
            vertex_ids=d["vertex_ids"].astype(np.int32), barycentric=d["barycentric"].astype(np.float32),
            weights=d["weights"].astype(np.float32), triangle=d["triangle"].astype(np.int32),
            spread_mm=d["spread_mm"].astype(np.float32), iris_local_mm=d["iris_local_mm"].astype(np.float32),
            model_name=str(d["model_name"]), n_model_vertices=int(d["n_model_vertices"]),
            source=str(d["source"]), topology=str(d["topology"]) if "topology" in d.files else "")


def load_correspondence(model: MorphableModel, path: str | Path | None = None) -> Correspondence:
    """The shipped table for ``model`` (``realtime/data/mediapipe478_<model.name>.npz``)."""
    corr = _load_cached(str(Path(path) if path is not None else default_path(model)))
    if (corr.n_model_vertices != model.n_vertices or int(corr.vertex_ids.max()) >= model.n_vertices
            or (corr.topology and corr.topology != topology_hash(model.triangles))):
        raise MissingResourceError(
            f"the MediaPipe correspondence table for '{model.name}' was built for another mesh "
            f"({corr.n_model_vertices} vertices, topology {corr.topology}); rebuild it with "
            "tools/build_correspondence.py --out PATH")
    return corr


@lru_cache(maxsize=4)
def _load_cached(path: str) -> Correspondence:
    return read_correspondence(path)


def landmark_regions() -> dict[str, np.ndarray]:
    """MediaPipe landmark ids by face region (from MediaPipe's own connection lists); "other" = the rest."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def ids(conns: frozenset[tuple[int, int]]) -> set[int]:
        return {i for c in conns for i in c}

    regions = {
        "lips": ids(fmc.FACEMESH_LIPS),
        "eye_r": ids(fmc.FACEMESH_RIGHT_EYE),
        "eye_l": ids(fmc.FACEMESH_LEFT_EYE),
        "brow_r": ids(fmc.FACEMESH_RIGHT_EYEBROW),
        "brow_l": ids(fmc.FACEMESH_LEFT_EYEBROW),
        "nose": ids(fmc.FACEMESH_NOSE),
        "oval": ids(fmc.FACEMESH_FACE_OVAL),
        "iris": set(range(468, 478)),
    }
    used: set[int] = set()
    out: dict[str, np.ndarray] = {}
    for name, s in regions.items():
        s = s - used
        used |= s
        out[name] = np.array(sorted(s), dtype=np.int64)
    out["other"] = np.array(sorted(set(range(N_LANDMARKS)) - used), dtype=np.int64)
    return out
