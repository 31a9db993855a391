"""Anatomical regions of a morphable model, per side, derived from the model itself.

Nothing here is a hand-typed vertex list: every region is built from the model's iBUG-68 landmark
vertices (``model.landmarks68``), its computed mirror map (``model.symmetry``) and geometric
neighbourhoods on the neutral mesh. The subject's right side is defined first (iBUG points 0-7, 17-21,
36-41, 48-50, 58-59 lie at -x in model space) and the left side is its mirror image, so both sides of
every region are exact mirror pairs and a left/right difference can only come from the motion.

Model space: millimetres, +x = subject's left, +y up, +z out of the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from realtime.facemodel import MorphableModel

SIDES = ("left", "right")
"""Subject's sides; left = +x in model space."""

# iBUG-68 indices (0-based) on the subject's RIGHT side (image left in a frontal photo).
IBUG_BROW_R = (17, 18, 19, 20, 21)
IBUG_CANTHI_R = (36, 39)  # lateral, medial canthus
IBUG_UPPER_LID_R = (37, 38)
IBUG_LOWER_LID_R = (41, 40)  # paired with the upper lid points above (37-41, 38-40)
IBUG_COMMISSURE_R = 48
IBUG_UPPER_LIP_R = 50  # peak of Cupid's bow
IBUG_LOWER_LIP_R = 58  # lower vermilion, lateral to the midline
IBUG_ALAR_BASE_R = 31
IBUG_JAW_R = 3
IBUG_UPPER_LIP_INNER_MID = 62  # stomion (inner upper lip, midline)

NASOLABIAL_LATERAL_MM = 8.0
"""The nasolabial fold lies lateral to the line from the alar base to the commissure."""
NASOLABIAL_RADIUS_MM = 6.0
CHEEK_RADIUS_MM = 12.0


@dataclass(frozen=True)
class Region:
    """Vertices of one anatomical region on each side (same length; ``left[i]`` mirrors ``right[i]``)."""

    name: str
    left: np.ndarray
    right: np.ndarray

    def side(self, side: str) -> np.ndarray:
        if side == "left":
            return self.left
        if side == "right":
            return self.right
        raise ValueError(f"unknown side {side!r}")


@dataclass(frozen=True)
class FaceRegions:
    """The regions the clinical metrics read, with the rest-shape normals of the surface patches."""

    brow: Region
    canthi: Region
    upper_lid: Region
    lower_lid: Region
    commissure: Region
    upper_lip: Region
    lower_lip: Region
    nasolabial: Region
    cheek: Region
    midline_stomion: int
    cheek_normals: dict[str, np.ndarray]
    """(k, 3) outward unit normals of the neutral mesh at the cheek patch vertices, per side."""
    symmetry: np.ndarray
    """(N,) mirror vertex of each vertex (``model.symmetry``)."""

    def all_vertices(self) -> np.ndarray:
        """Sorted unique vertex ids used by any region (the metrics evaluate the mesh only there)."""
        parts = [self.symmetry[:0], np.array([self.midline_stomion])]
        for r in (self.brow, self.canthi, self.upper_lid, self.lower_lid, self.commissure, self.upper_lip,
                  self.lower_lip, self.nasolabial, self.cheek):
            parts += [r.left, r.right]
        return np.unique(np.concatenate(parts).astype(np.int64))


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=triangles, process=False)
    return np.asarray(mesh.vertex_normals, dtype=np.float64)


def _patch(tree: cKDTree, surface: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Vertices of the face area within ``radius`` of the surface point nearest to ``centre``."""
    _, nearest = tree.query(centre)
    ids = np.asarray(tree.query_ball_point(surface[nearest], radius), dtype=np.int64)
    return np.sort(ids)


def build_regions(model: MorphableModel) -> FaceRegions:
    """Derive the clinical regions from the model's landmarks, symmetry map and neutral geometry."""
    lm = np.asarray(model.landmarks68, dtype=np.int64)
    if lm.shape != (68,):
        raise ValueError(f"model {model.name} has no iBUG-68 landmarks")
    sym = np.asarray(model.symmetry, dtype=np.int64)
    neutral = model.mean_mm.astype(np.float64)
    if neutral[lm[IBUG_COMMISSURE_R], 0] >= 0.0:
        raise ValueError(f"model {model.name}: iBUG point 48 is not on the -x (subject's right) side")
    n_face = int(model.face_area_vertices)
    face = neutral[:n_face]
    # Only the face-area vertices in front of the ears qualify for patches (no hidden inner surfaces).
    tree = cKDTree(face)

    def pair(name: str, right_ids: np.ndarray) -> Region:
        right_ids = np.asarray(right_ids, dtype=np.int64)
        return Region(name, left=sym[right_ids], right=right_ids)

    ala, corner, jaw = neutral[lm[IBUG_ALAR_BASE_R]], neutral[lm[IBUG_COMMISSURE_R]], neutral[lm[IBUG_JAW_R]]
    naso_centre = 0.5 * (ala + corner) + np.array([-NASOLABIAL_LATERAL_MM, 0.0, 0.0])
    naso = _patch(tree, face, naso_centre, NASOLABIAL_RADIUS_MM)
    cheek_centre = 0.5 * (corner + jaw)
    cheek = _patch(tree, face, cheek_centre, CHEEK_RADIUS_MM)
    # Keep only patch vertices strictly on the right (a patch must not straddle the midline).
    naso = naso[face[naso, 0] < -1.0]
    cheek = cheek[face[cheek, 0] < -1.0]
    normals = _vertex_normals(neutral, model.triangles)
    cheek_r = pair("cheek", cheek)
    return FaceRegions(
        brow=pair("brow", lm[list(IBUG_BROW_R)]),
        canthi=pair("canthi", lm[list(IBUG_CANTHI_R)]),
        upper_lid=pair("upper_lid", lm[list(IBUG_UPPER_LID_R)]),
        lower_lid=pair("lower_lid", lm[list(IBUG_LOWER_LID_R)]),
        commissure=pair("commissure", lm[[IBUG_COMMISSURE_R]]),
        upper_lip=pair("upper_lip", lm[[IBUG_UPPER_LIP_R]]),
        lower_lip=pair("lower_lip", lm[[IBUG_LOWER_LIP_R]]),
        nasolabial=pair("nasolabial", naso),
        cheek=cheek_r,
        midline_stomion=int(lm[IBUG_UPPER_LIP_INNER_MID]),
        cheek_normals={"left": normals[cheek_r.left], "right": normals[cheek_r.right]},
        symmetry=sym,
    )
