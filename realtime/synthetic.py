"""Synthetic ground-truth renders of the face model: known identity, expression, pose, lighting, skin tone.

Used by tests, benchmarks (hundreds of renders) and network training (thousands). The face region of the
model has holes for the eyes and the mouth; a render closes them with proxies so that MediaPipe tracks the
images like photos: eyeball spheres with an iris disc of the mean human diameter (11.7 mm, the geometry is
``realtime.facemodel.EyeRig``, shared with the fitter's iris scale) and dark cavities behind the mouth and
the eye openings.

Lighting is second-order spherical harmonics in camera space (OpenCV axes), the convention of
``realtime.render.OffscreenRenderer``: ``shade(n) = Σ_k sh[k] · Y_k(n)`` with the real SH basis ``Y_k``
(``sh_basis``), multiplied by the per-vertex albedo.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from realtime.camera import Intrinsics
from realtime.facemodel import EyeRig, MorphableModel, boundary_loops, eye_rig
from realtime.results import FRONTAL_ROTATION, Pose

log = logging.getLogger(__name__)

FACE_CENTRE_MM = np.array([0.0, 10.0, 60.0], dtype=np.float32)
"""A point in the middle of the ICT face (model space) that renders aim at the image centre."""

GAZE_DEG_PER_UNIT = (30.0, 25.0)
"""Eyeball rotation (horizontal, vertical) for an eyeLook* blendshape weight of 1."""


# --- small geometry helpers ------------------------------------------------------------------------------

def rotation_from_euler(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Model -> camera rotation whose ``Pose.euler_deg()`` is (yaw, pitch, roll): ``FRONTAL_ROTATION·Ry·Rx·Rz``."""
    b, a, c = (math.radians(x) for x in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return FRONTAL_ROTATION @ ry @ rx @ rz


def pose_from_euler(yaw_deg: float, pitch_deg: float, roll_deg: float, distance_mm: float,
                    offset_mm: tuple[float, float] = (0.0, 0.0)) -> Pose:
    """A pose that puts ``FACE_CENTRE_MM`` at (offset_x, offset_y, distance) in camera space."""
    r = rotation_from_euler(yaw_deg, pitch_deg, roll_deg)
    t = np.array([offset_mm[0], offset_mm[1], distance_mm]) - r @ FACE_CENTRE_MM
    return Pose(rotation=r, translation_mm=t)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(..., 3) unit normals -> (..., 9) real spherical-harmonic basis values (bands 0-2)."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return np.stack([
        np.full_like(x, 0.282095),
        0.488603 * y, 0.488603 * z, 0.488603 * x,
        1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3.0 * z * z - 1.0),
        1.092548 * x * z, 0.546274 * (x * x - y * y),
    ], axis=-1)


def random_sh(rng: np.random.Generator, ambient: tuple[float, float] = (0.55, 0.85),
              directional: tuple[float, float] = (0.2, 0.7)) -> np.ndarray:
    """(9, 3) SH lighting: an ambient term, one main light from the camera's hemisphere, mild colour."""
    sh = np.zeros((9, 3))
    amb = rng.uniform(*ambient)
    # Main light direction: toward the face from the camera side (camera -z hemisphere seen from the face).
    d = rng.normal(size=3) * np.array([0.6, 0.4, 0.0])
    d[2] = -1.0
    d /= np.linalg.norm(d)
    strength = rng.uniform(*directional)
    tint = 1.0 + rng.uniform(-0.08, 0.08, size=3)
    sh[0] = amb / 0.282095
    sh[1:4] = (strength / 0.488603) * np.array([d[1], d[2], d[0]])[:, None]
    sh[4:] = rng.normal(scale=0.05, size=(5, 1))
    return (sh * tint[None, :]).astype(np.float32)


def eye_template(rig: EyeRig, segments: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eyeball sphere around the origin looking along +z: (V, 3) vertices, (T, 3) triangles, (V,) part.

    Rings are placed exactly on the pupil and limbus circles and duplicated there so that colours change
    sharply (part 0 = pupil, 1 = iris, 2 = sclera).
    """
    r = rig.radius_mm
    th_p = math.asin(rig.pupil_radius_mm / r)
    th_i = math.asin(rig.iris_radius_mm / r)
    bands = [(0, np.linspace(0.0, th_p, 3)), (1, np.linspace(th_p, th_i, 7)),
             (2, np.linspace(th_i, math.radians(115.0), 12))]
    phi = np.linspace(0.0, 2.0 * math.pi, segments, endpoint=False)
    verts, parts, tris = [], [], []
    base = 0
    for part, thetas in bands:
        for k, th in enumerate(thetas):
            ring = np.stack([r * math.sin(th) * np.cos(phi), r * math.sin(th) * np.sin(phi),
                             np.full_like(phi, r * math.cos(th))], axis=1)
            verts.append(ring)
            parts.append(np.full(segments, part))
            if k > 0:
                a = base + (k - 1) * segments + np.arange(segments)
                b = base + (k - 1) * segments + (np.arange(segments) + 1) % segments
                c, d = a + segments, b + segments
                tris.append(np.stack([a, c, d], 1))
                tris.append(np.stack([a, d, b], 1))
        base += len(thetas) * segments
    return (np.concatenate(verts).astype(np.float32), np.concatenate(tris).astype(np.int32),
            np.concatenate(parts).astype(np.int8))


def gaze_rotation(h_deg: float, v_deg: float) -> np.ndarray:
    """Eyeball rotation (model axes) turning +z toward +x by ``h`` and toward +y by ``v`` degrees."""
    h, v = math.radians(h_deg), math.radians(v_deg)
    ry = np.array([[math.cos(h), 0, math.sin(h)], [0, 1, 0], [-math.sin(h), 0, math.cos(h)]])
    rx = np.array([[1, 0, 0], [0, math.cos(v), -math.sin(v)], [0, math.sin(v), math.cos(v)]])
    return ry @ rx


def gaze_from_expression(model: MorphableModel, expression: np.ndarray) -> np.ndarray:
    """(2, 2) (horizontal, vertical) gaze degrees per eye (0 = subject's right) from the eyeLook* weights."""
    names = model.expression_names
    out = np.zeros((2, 2))

    def w(n: str) -> float:
        return float(expression[names.index(n)]) if n in names else 0.0

    for eye, side, outward in ((0, "R", -1.0), (1, "L", 1.0)):
        out[eye, 0] = GAZE_DEG_PER_UNIT[0] * outward * (w(f"eyeLookOut_{side}") - w(f"eyeLookIn_{side}"))
        out[eye, 1] = GAZE_DEG_PER_UNIT[1] * (w(f"eyeLookUp_{side}") - w(f"eyeLookDown_{side}"))
    return out


# --- the scene: face + proxies --------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneLayout:
    """Static topology of a render: the face mesh followed by the proxies (computed once per model)."""

    rig: EyeRig
    triangles: np.ndarray
    """(T_all, 3) int32 over all scene vertices."""
    n_face_vertices: int
    n_face_triangles: int
    mouth_loop: np.ndarray
    eye_vertices: np.ndarray
    """(V_eye, 3) template eyeball vertices (origin-centred, gaze +z)."""
    eye_part: np.ndarray
    part_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Triangle index ranges: "face", "mouth", "sockets", "eye_r", "eye_l"."""

    def part_of_triangles(self, tri_ids: np.ndarray) -> np.ndarray:
        """Part per triangle id: -1 none, 0 face, 1 mouth, 2 sockets, 3 eye_r, 4 eye_l."""
        out = np.full(np.shape(tri_ids), -1, dtype=np.int8)
        for k, name in enumerate(("face", "mouth", "sockets", "eye_r", "eye_l")):
            a, b = self.part_ranges[name]
            out[(tri_ids >= a) & (tri_ids < b)] = k
        return out


def scene_layout(model: MorphableModel) -> SceneLayout:
    rig = eye_rig(model)
    loops = boundary_loops(model.triangles)
    centre = model.mean_mm[model.landmarks68[48:68]].mean(axis=0)
    mouth = min(loops, key=lambda lp: float(np.linalg.norm(model.mean_mm[lp].mean(0) - centre)), default=None)
    if mouth is None or np.linalg.norm(model.mean_mm[mouth].mean(0) - centre) > 15.0:
        mouth = model.landmarks68[60:68].astype(np.int32)  # closed mouth in the mesh: inner-lip landmarks
    n = model.n_vertices
    tris = [model.triangles.astype(np.int32)]
    ranges: dict[str, tuple[int, int]] = {}
    t0 = 0

    def add(name: str, t: np.ndarray) -> None:
        nonlocal t0
        tris.append(t.astype(np.int32))
        ranges[name] = (t0, t0 + len(t))
        t0 += len(t)

    ranges["face"] = (0, len(model.triangles))
    t0 = len(model.triangles)

    # Cavity fans: loop -> one extra apex vertex behind it (apices: n, n+1, n+2 = mouth, right, left socket).
    def fan(loop: np.ndarray, apex: int) -> np.ndarray:
        # Border edges run loop[i] -> loop[i+1] in the mesh's triangles; the closing fan runs them backwards
        # so that it faces outward like the mesh (renderers cull back faces).
        return np.stack([np.roll(loop, -1), loop, np.full_like(loop, apex)], axis=1)

    add("mouth", fan(mouth, n))
    add("sockets", np.concatenate([fan(rig.loops[0], n + 1), fan(rig.loops[1], n + 2)]))
    ev, et, ep = eye_template(rig)
    add("eye_r", et + n + 3)
    add("eye_l", et + n + 3 + len(ev))
    return SceneLayout(rig=rig, triangles=np.concatenate(tris), n_face_vertices=n,
                       n_face_triangles=len(model.triangles), mouth_loop=mouth, eye_vertices=ev,
                       eye_part=ep, part_ranges=ranges)


def scene_vertices(layout: SceneLayout, face_vertices: np.ndarray, eye_centres: np.ndarray,
                   gaze_rotations: np.ndarray) -> np.ndarray:
    """All scene vertices in model space: face, 3 cavity apices, right eyeball, left eyeball."""
    fv = face_vertices
    apices = np.stack([
        fv[layout.mouth_loop].mean(0) + np.array([0.0, 0.0, -22.0]),
        fv[layout.rig.loops[0]].mean(0) + np.array([0.0, 0.0, -16.0]),
        fv[layout.rig.loops[1]].mean(0) + np.array([0.0, 0.0, -16.0]),
    ])
    eyes = [layout.eye_vertices @ gaze_rotations[e].T + eye_centres[e] for e in range(2)]
    return np.concatenate([fv, apices, *eyes]).astype(np.float32)


# --- albedo ------------------------------------------------------------------------------------------------

SKIN_TONES = np.array([
    [0.92, 0.74, 0.64], [0.85, 0.64, 0.52], [0.74, 0.53, 0.40], [0.60, 0.41, 0.30],
    [0.45, 0.30, 0.21], [0.32, 0.21, 0.15],
])
IRIS_COLOURS = np.array([[0.30, 0.18, 0.10], [0.18, 0.12, 0.07], [0.25, 0.40, 0.55], [0.35, 0.40, 0.25],
                         [0.40, 0.30, 0.15]])


@dataclass(frozen=True)
class AlbedoMasks:
    lips: np.ndarray
    """(N,) in [0, 1]."""
    brows: np.ndarray
    """(N,) in [0, 1]."""


def albedo_masks(model: MorphableModel) -> AlbedoMasks:
    """Soft lip and eyebrow masks on the model's vertices, from the iBUG-68 landmarks on the mean shape."""
    from matplotlib.path import Path as MplPath

    v = model.mean_mm
    lm = v[model.landmarks68]
    front = v[:, 2] > lm[:, 2].min() - 15.0
    outer_lip = MplPath(lm[48:60, :2])
    inside = outer_lip.contains_points(v[:, :2], radius=-1.0) & front
    # Distance to the outer lip contour for a soft edge.
    seg_a, seg_b = lm[48:60, :2], np.roll(lm[48:60, :2], -1, axis=0)
    d_lip = _polyline_distance(v[:, :2], seg_a, seg_b)
    lips = np.where(inside, 1.0, np.exp(-((d_lip / 1.2) ** 2))) * front
    brow_d = np.minimum(_polyline_distance(v[:, :2], lm[17:21, :2], lm[18:22, :2]),
                        _polyline_distance(v[:, :2], lm[22:26, :2], lm[23:27, :2]))
    # The iBUG brow points lie along the brow's upper edge: centre the brow 2.5 mm below them.
    brow_d2 = np.minimum(
        _polyline_distance(v[:, :2] + [0.0, 2.5], lm[17:21, :2], lm[18:22, :2]),
        _polyline_distance(v[:, :2] + [0.0, 2.5], lm[22:26, :2], lm[23:27, :2]))
    brows = np.exp(-((np.minimum(brow_d, brow_d2) / 3.5) ** 4)) * front
    return AlbedoMasks(lips=lips.astype(np.float32), brows=brows.astype(np.float32))


def _polyline_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) distance of 2D points to a set of segments a[i] -> b[i]."""
    ab = b - a
    t = np.clip(((p[:, None, :] - a[None]) * ab[None]).sum(-1) / np.maximum((ab**2).sum(-1), 1e-9), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((p[:, None, :] - closest) ** 2).sum(-1)).min(axis=1)


def random_albedo(rng: np.random.Generator, masks: AlbedoMasks) -> np.ndarray:
    """(N, 3) per-vertex albedo: a skin tone between the table's entries, redder lips, darker brows."""
    t = rng.uniform(0, len(SKIN_TONES) - 1)
    i = int(t)
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (t - i)
    skin = skin * (1.0 + rng.uniform(-0.05, 0.05, 3))
    lip = skin * np.array([0.95, 0.62, 0.62]) * rng.uniform(0.8, 1.0)
    brow = np.array([0.10, 0.07, 0.05]) * rng.uniform(0.6, 1.6) + skin * 0.15
    n = len(masks.lips)
    alb = np.tile(skin, (n, 1)) + masks.lips[:, None] * (lip - skin)
    bw = masks.brows[:, None] * rng.uniform(0.6, 0.95)
    alb = alb * (1 - bw) + brow * bw
    return np.clip(alb, 0.0, 1.0).astype(np.float32)


def lid_openings(layout: SceneLayout, face_vertices: np.ndarray, identity_vertices: np.ndarray) -> np.ndarray:
    """(2,) each eye's lid gap at the middle of the eye relative to the same person's neutral gap."""
    out = np.ones(2)
    for e, loop in enumerate(layout.rig.loops):
        out[e] = _lid_gap(face_vertices[loop]) / max(_lid_gap(identity_vertices[loop]), 1e-6)
    return out


def _lid_gap(rim: np.ndarray) -> float:
    """Vertical gap between the upper and lower halves of a lid loop over the middle third of the eye."""
    x = rim[:, 0]
    lo_x, hi_x = float(x.min()), float(x.max())
    mid = (x > lo_x + (hi_x - lo_x) / 3.0) & (x < hi_x - (hi_x - lo_x) / 3.0)
    y = rim[mid, 1]
    centre = 0.5 * (float(rim[int(np.argmin(x)), 1]) + float(rim[int(np.argmax(x)), 1]))
    upper, lower = y[y > centre], y[y <= centre]
    if upper.size == 0 or lower.size == 0:
        return 0.0
    return float(upper.mean() - lower.mean())


def scene_colours(layout: SceneLayout, face_albedo: np.ndarray, iris_rgb: np.ndarray,
                  openings: np.ndarray | None = None) -> np.ndarray:
    """Per-vertex colours for all scene vertices (matching ``scene_vertices``).

    ``openings`` (2,) from ``lid_openings`` shade each eyeball: the lids occlude the light falling on the
    eye, so the sliver of sclera left between nearly closed lids is dark, as in a real closed eye (a bright
    sliver reads as an open eye to MediaPipe).
    """
    sclera = np.array([0.86, 0.83, 0.80])
    part = layout.eye_part
    r = np.linalg.norm(layout.eye_vertices[:, :2], axis=1) / layout.rig.iris_radius_mm
    # Iris darkens toward the limbus ring, which helps MediaPipe find its edge as in real eyes.
    iris = iris_rgb[None, :] * (1.15 - 0.6 * np.clip(r, 0, 1) ** 3)[:, None]
    eye = np.where(part[:, None] == 0, 0.02, np.where(part[:, None] == 1, iris, sclera))
    apex = np.array([[0.12, 0.04, 0.04], [0.35, 0.18, 0.17], [0.35, 0.18, 0.17]])
    # The lid loops are the inner lid edges: on this model they keep ~65 % of their neutral gap when the
    # visible lids meet, so the shade reaches its darkest there.
    shade = np.ones(2) if openings is None else np.clip((np.asarray(openings) - 0.66) / 0.25, 0.08, 1.0)
    return np.concatenate([face_albedo, apex, eye * shade[0], eye * shade[1]]).astype(np.float32)


# --- backgrounds and image degradations ------------------------------------------------------------------

def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like clutter background: smooth colour noise, a gradient and a few soft shapes."""
    import cv2

    gw, gh = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    low = rng.uniform(0, 255, size=(gh, gw, 3)).astype(np.float32)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(10, width // 3)), int(rng.integers(10, height // 3)))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            p2 = (centre[0] + int(rng.integers(-width // 3, width // 3)),
                  centre[1] + int(rng.integers(-height // 3, height // 3)))
            cv2.rectangle(img, centre, p2, colour, -1)
    fine = rng.normal(0, rng.uniform(2, 12), size=(height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    grain = np.asarray(cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR), np.float32)
    sigma = float(rng.uniform(0.5, 3.0))
    out = cv2.GaussianBlur(np.asarray(img, np.float32) + grain[..., None], (0, 0), sigma)
    return np.clip(out, 0, 255).astype(np.uint8)


def degrade(rng: np.random.Generator, image: np.ndarray, blur_sigma: float, noise_sigma: float,
            jpeg_quality: int | None) -> np.ndarray:
    import cv2

    img = image
    if blur_sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    if noise_sigma > 0:
        noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise_sigma)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(img)


# --- the generator -----------------------------------------------------------------------------------------

@dataclass
class SyntheticSample:
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    intrinsics: Intrinsics
    identity: np.ndarray
    """(K_id,) weights."""
    expression: np.ndarray
    """(K_exp,) weights in [0, 1]."""
    pose: Pose
    vertices_mm: np.ndarray
    """(N, 3) face-model vertices in camera space (mm)."""
    sh_coeffs: np.ndarray
    """(9, 3) SH lighting (camera space) passed to the renderer."""
    albedo: np.ndarray
    """(N, 3) per-vertex albedo in [0, 1]."""
    eye_centres_mm: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    """(2, 3) eyeball centres in camera space (0 = subject's right)."""
    gaze_deg: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))
    """(2, 2) per-eye (horizontal, vertical) gaze in degrees, model axes."""
    seed: int = 0


@dataclass
class SyntheticRanges:
    """Sampling ranges of the generator (all overridable through ``SyntheticGenerator(**ranges)``)."""

    identity_scale: float = 1.0
    """Identity weights ~ N(0, identity_scale²)."""
    expression_active: tuple[int, int] = (0, 4)
    """Number of non-zero blendshapes (inclusive range)."""
    expression_max: float = 1.0
    one_sided_fraction: float = 1.0 / 3.0
    conjugate_gaze: bool = True
    """Sample the eyeLook* blendshapes as one gaze shared by both eyes (down with down, the left eye's In with
    the right eye's Out), as people move their eyes; a one-eyed downward look cannot be told from a wink."""
    """Fraction of samples whose main expression is one _L/_R blendshape with its mirror at 0."""
    neutral_fraction: float = 0.1
    yaw_deg: float = 45.0
    pitch_deg: float = 20.0
    roll_deg: float = 15.0
    distance_mm: tuple[float, float] = (450.0, 750.0)
    offset_fraction: float = 0.08
    """Face centre offset from the optical axis as a fraction of the distance."""
    horizontal_fov_deg: tuple[float, float] = (40.0, 65.0)
    blur_sigma: tuple[float, float] = (0.0, 1.2)
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    jpeg_quality: tuple[int, int] = (60, 98)
    jpeg_probability: float = 0.7


def conjugate_gaze(weights: np.ndarray, pairs: list[tuple[int, int]]) -> None:
    """In place: each gaze direction's two blendshapes (one per eye) take the larger of their weights, and of
    two opposite directions (pairs 0/1: down/up, 2/3: rightward/leftward) only the stronger is kept."""
    for a, b in pairs:
        weights[a] = weights[b] = max(weights[a], weights[b])
    if len(pairs) == 4:
        for first, second in ((pairs[0], pairs[1]), (pairs[2], pairs[3])):
            weaker = second if weights[first[0]] >= weights[second[0]] else first
            weights[list(weaker)] = 0.0


class SyntheticGenerator:
    """Seeded renders of a morphable model with known parameters (``sample(**overrides)``).

    Overrides fix any part of a sample: ``identity``, ``expression`` (array or ``{name: weight}``),
    ``yaw_deg``/``pitch_deg``/``roll_deg``/``distance_mm``/``offset_mm`` or a full ``pose``, ``sh_coeffs``,
    ``albedo``, ``gaze_deg``, ``iris_rgb``, ``background`` (an image), ``clean=True`` (no blur/noise/JPEG),
    ``seed``.
    ``sequence(n_frames, ...)`` yields a video-like sequence of one person turning their head.
    """

    def __init__(self, model: MorphableModel, width: int = 512, height: int = 512, seed: int = 0,
                 renderer: Any = None, samples: int = 4, **ranges: Any) -> None:
        self.model = model
        self.width, self.height = width, height
        self.ranges = replace(SyntheticRanges(), **ranges)
        self._seed_seq = np.random.SeedSequence(seed)
        self._count = 0
        self.layout = scene_layout(model)
        self.masks = albedo_masks(model)
        self._own_renderer = renderer is None
        if renderer is None:
            from realtime.render import OffscreenRenderer

            # MSAA resolve dominates the render time on llvmpipe: samples=0 is ~2x faster, with jaggier edges.
            self.renderer: Any = OffscreenRenderer(width, height, samples=samples)
        else:
            self.renderer = renderer
        self._setup_sampling()

    def _setup_sampling(self) -> None:
        """Index tables of the expression sampler (needs only ``model`` and ``ranges``)."""
        model = self.model
        names = model.expression_names
        self._gaze = [i for i, n in enumerate(names) if n.startswith("eyeLook")]
        # Gaze is never one-sided in people (see ``conjugate_gaze``), so it is not a one-sided main expression.
        self._sided = [i for i, n in enumerate(names) if model.expression_mirror[i] != i
                       and not (self.ranges.conjugate_gaze and i in self._gaze)]
        pairs = (("eyeLookDown_L", "eyeLookDown_R"), ("eyeLookUp_L", "eyeLookUp_R"),
                 ("eyeLookIn_L", "eyeLookOut_R"), ("eyeLookOut_L", "eyeLookIn_R"))
        self._gaze_pairs = [(names.index(a), names.index(b)) for a, b in pairs
                            if a in names and b in names]

    def __enter__(self) -> SyntheticGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_renderer:
            release = getattr(self.renderer, "release", None) or getattr(self.renderer, "close", None)
            if release is not None:
                release()

    # -- parameter sampling
    def random_expression(self, rng: np.random.Generator) -> np.ndarray:
        r = self.ranges
        k = self.model.n_expressions
        w = np.zeros(k, dtype=np.float32)
        if rng.random() < r.neutral_fraction:
            return w
        n_active = int(rng.integers(r.expression_active[0], r.expression_active[1] + 1))
        if rng.random() < r.one_sided_fraction and self._sided:
            main = int(rng.choice(self._sided))
            w[main] = rng.uniform(0.6, 1.0) * r.expression_max
            others = [i for i in range(k) if i not in (main, int(self.model.expression_mirror[main]))]
            n_active = max(n_active - 1, 0)
        else:
            others = list(range(k))
        if n_active:
            idx = rng.choice(others, size=min(n_active, len(others)), replace=False)
            w[idx] = rng.uniform(0.1, 1.0, size=len(idx)) * r.expression_max
        if r.conjugate_gaze and self._gaze_pairs:
            conjugate_gaze(w, self._gaze_pairs)
        return w

    def _expression_from(self, value: Any) -> np.ndarray:
        if isinstance(value, dict):
            w = np.zeros(self.model.n_expressions, dtype=np.float32)
            for name, weight in value.items():
                w[self.model.expression_index(name)] = weight
            return w
        return np.asarray(value, dtype=np.float32)

    def skip(self, n: int) -> None:
        """Advance the sample stream by ``n`` samples without rendering them (resumable data sets)."""
        self._count += n

    def sample(self, **overrides: Any) -> SyntheticSample:
        seed = int(overrides.pop("seed", self._seed_seq.generate_state(1)[0] + self._count))
        self._count += 1
        rng = np.random.default_rng(seed)
        r = self.ranges
        m = self.model
        identity = np.asarray(overrides.pop("identity", rng.normal(0.0, r.identity_scale, m.n_identity)),
                              dtype=np.float32)
        expression = self._expression_from(overrides.pop("expression", self.random_expression(rng)))
        fov = float(overrides.pop("horizontal_fov_deg", rng.uniform(*r.horizontal_fov_deg)))
        intr = overrides.pop("intrinsics", None) or Intrinsics.from_fov(self.width, self.height, fov)
        pose = overrides.pop("pose", None)
        pose_keys = {"yaw_deg", "pitch_deg", "roll_deg", "distance_mm", "offset_mm"} & set(overrides)
        if pose is not None and pose_keys:
            raise TypeError(f"give either pose or {sorted(pose_keys)}, not both")
        if pose is None:
            dist = float(overrides.pop("distance_mm", rng.uniform(*r.distance_mm)))
            # Keep the face about the same size in the image whatever the focal length.
            dist *= intr.fx / Intrinsics.from_fov(self.width, self.height, 50.0).fx
            off = np.asarray(overrides.pop("offset_mm", rng.uniform(-r.offset_fraction, r.offset_fraction, 2)
                                           * dist), dtype=np.float64)
            pose = pose_from_euler(
                float(overrides.pop("yaw_deg", rng.uniform(-r.yaw_deg, r.yaw_deg))),
                float(overrides.pop("pitch_deg", rng.uniform(-r.pitch_deg, r.pitch_deg))),
                float(overrides.pop("roll_deg", rng.uniform(-r.roll_deg, r.roll_deg))),
                dist, (float(off[0]), float(off[1])))
        sh = np.asarray(overrides.pop("sh_coeffs", random_sh(rng)), dtype=np.float32)
        albedo = np.asarray(overrides.pop("albedo", random_albedo(rng, self.masks)), dtype=np.float32)
        gaze = np.asarray(overrides.pop("gaze_deg", gaze_from_expression(m, expression)), dtype=np.float64)
        iris_rgb = np.asarray(overrides.pop(
            "iris_rgb", IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))] * rng.uniform(0.8, 1.2)))
        background = overrides.pop("background", None)
        if background is None:
            background = random_background(rng, self.width, self.height)
        clean = bool(overrides.pop("clean", False))
        if overrides:
            raise TypeError(f"unknown overrides: {sorted(overrides)}")

        id_shape = m.shape(identity)
        face = id_shape + np.tensordot(expression, m.expression_basis_mm, axes=1)
        centres = self.layout.rig.centres(id_shape)
        gaze_r = np.stack([gaze_rotation(*gaze[e]) for e in range(2)])
        verts_model = scene_vertices(self.layout, face, centres, gaze_r)
        rot = pose.rotation.astype(np.float32)
        tr = pose.translation_mm.astype(np.float32)
        verts_cam = verts_model @ rot.T + tr
        colours = scene_colours(self.layout, albedo, iris_rgb, lid_openings(self.layout, face, id_shape))
        image = self.renderer.render(verts_cam, self.layout.triangles, intr, "lit", vertex_colors=colours,
                                     sh_coeffs=sh, background=background)
        if not clean:
            jpeg = int(rng.integers(*r.jpeg_quality)) if rng.random() < r.jpeg_probability else None
            image = degrade(rng, image, float(rng.uniform(*r.blur_sigma)), float(rng.uniform(*r.noise_sigma)),
                            jpeg)
        n = m.n_vertices
        return SyntheticSample(image=image, intrinsics=intr, identity=identity, expression=expression,
                               pose=pose, vertices_mm=verts_cam[:n].copy(), sh_coeffs=sh, albedo=albedo,
                               eye_centres_mm=(centres @ rot.T + tr), gaze_deg=gaze, seed=seed)

    def sequence(self, n_frames: int, yaw_amplitude_deg: float = 40.0, period_frames: int = 60,
                 expression_every: int = 15, seed: int | None = None,
                 **fixed: Any) -> Iterator[SyntheticSample]:
        """A video-like sequence of one person: identity, skin, lighting, background, iris and camera fixed;
        yaw swings sinusoidally over ±``yaw_amplitude_deg``; expressions blend linearly between random key
        expressions every ``expression_every`` frames. ``fixed`` overrides any per-sequence value."""
        rng = np.random.default_rng(self._seed_seq.generate_state(1)[0] + 7919 * self._count
                                    if seed is None else seed)
        r = self.ranges
        m = self.model
        per_seq: dict[str, Any] = {
            "identity": rng.normal(0.0, r.identity_scale, m.n_identity).astype(np.float32),
            "albedo": random_albedo(rng, self.masks), "sh_coeffs": random_sh(rng),
            "background": random_background(rng, self.width, self.height),
            "iris_rgb": IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))],
            "horizontal_fov_deg": 55.0, "distance_mm": float(np.mean(r.distance_mm)),
            "pitch_deg": float(rng.uniform(-5, 5)), "roll_deg": float(rng.uniform(-5, 5)),
            "offset_mm": (0.0, 0.0),
        }
        per_seq.update(fixed)
        keys = [self.random_expression(rng) for _ in range(n_frames // max(expression_every, 1) + 2)]
        for t in range(n_frames):
            k, frac = divmod(t, max(expression_every, 1))
            a = frac / max(expression_every, 1)
            expr = (1 - a) * keys[k] + a * keys[k + 1]
            yaw = yaw_amplitude_deg * math.sin(2 * math.pi * t / period_frames)
            over = {"expression": expr, "yaw_deg": yaw, "seed": int(rng.integers(2**31)), **per_seq}
            yield self.sample(**over)

    def scene_camera_vertices(self, sample: SyntheticSample) -> np.ndarray:
        """All scene vertices (face + proxies) of a sample in camera space, e.g. for ``render_ids``."""
        m = self.model
        id_shape = m.shape(sample.identity)
        face = id_shape + np.tensordot(sample.expression, m.expression_basis_mm, axes=1)
        gaze_r = np.stack([gaze_rotation(*sample.gaze_deg[e]) for e in range(2)])
        v = scene_vertices(self.layout, face, self.layout.rig.centres(id_shape), gaze_r)
        return (v @ sample.pose.rotation.T + sample.pose.translation_mm).astype(np.float32)


def true_landmarks(sample: SyntheticSample, corr: Any) -> np.ndarray:
    """(478, 3) camera-space positions (mm) of the MediaPipe landmarks on a sample's true mesh and eyes.

    ``corr`` is the model's ``realtime.correspondence.Correspondence``; project with
    ``sample.intrinsics.project`` for pixels (training targets, benchmarks).
    """
    pts = np.asarray(corr.points(sample.vertices_mm), dtype=np.float64)
    gaze = np.stack([gaze_rotation(*sample.gaze_deg[e]) for e in range(2)])
    pts[468:478] = corr.iris_points(sample.eye_centres_mm, sample.pose.rotation, gaze)
    return pts

