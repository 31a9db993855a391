"""The composed views the user sees: the fitted mesh in place on the camera frame plus a 3D orbit view.

One function, :func:`compose_views`, draws them into an RGB frame with an :class:`OffscreenRenderer`; the
annotated ``--output`` video (:class:`MeshOverlay`, a ``VideoWriterSink`` ``draw`` callable), the
``reconstruct --render`` picture (:func:`render_reconstruction_png`) and the benchmark use it, and the live
window draws the same two views with the same style through its own GL context.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.camera import Intrinsics
from realtime.errors import MissingResourceError, OutputError
from realtime.facemodel import MorphableModel
from realtime.render import RENDER_MODES, OffscreenRenderer, orbit_view_matrix, quad_diagonals
from realtime.results import FRONTAL_ROTATION, FaceFit, FrameResult, Pose

log = logging.getLogger(__name__)

PANEL_COLOR = (0.11, 0.12, 0.14)
"""Background of the 3D view."""


@dataclass(frozen=True)
class ViewStyle:
    """How the mesh is shown (the window starts with these and lets the user change them)."""

    mode: str = "lit"
    """Render mode of the mesh in both views (see ``realtime.render.RENDER_MODES``)."""
    overlay_opacity: float = 0.55
    """Mesh over the camera frame: 0 shows only the frame, 1 hides it."""
    wireframe: bool = False
    """Barycentric wireframe on top of the mesh."""
    inset_fraction: float = 0.38
    """Side of the square 3D view as a fraction of the frame height (headless pictures)."""
    orbit_yaw_deg: float = 35.0
    orbit_pitch_deg: float = 8.0
    orbit_fov_deg: float = 30.0
    specular: float = 0.12
    landmarks: bool = True
    """Tracked MediaPipe landmarks as dots over the frame."""
    orbit_follows_head: bool = True
    """3D view angles relative to the camera (the head's own turns are seen) or, when False, to the face
    (a fixed three-quarter view of the face whatever its pose)."""

    def __post_init__(self) -> None:
        if self.mode not in RENDER_MODES:
            raise ValueError(f"unknown render mode {self.mode!r}")


@dataclass(frozen=True, eq=False)
class MeshDisplay:
    """Which triangles of the model each view shows: the camera overlay only the fitted face (a mask that
    sits on the skin; the fitted neck and skull are guesses that would cover hair and clothes), the 3D view
    the whole face area with ears and neck."""

    overlay_triangles: np.ndarray
    view_triangles: np.ndarray
    overlay_hidden_edges: np.ndarray | None = None
    """Quad diagonals, left out of the wireframe (a quad model's wireframe shows its quads)."""
    view_hidden_edges: np.ndarray | None = None
    overlay_simplified: np.ndarray | None = None
    """The overlay's surface with about half the triangles, over a subset of its vertices (see
    :func:`simplified_triangles`), for the per-frame video views; None = draw the full triangles."""
    view_simplified: np.ndarray | None = None

    @classmethod
    def from_model(cls, model: MorphableModel, simplify: bool = True) -> MeshDisplay:
        """``simplify``: also make the simplified triangle lists (about 0.1 s) for :func:`compose_views`."""
        tris = model.triangles
        narrow = model.narrow_face_area_vertices or model.face_area_vertices
        overlay = tris[(tris < narrow).all(axis=1)]
        view = tris[(tris < model.face_area_vertices).all(axis=1)]
        overlay = np.ascontiguousarray(overlay if len(overlay) else tris, dtype=np.int32)
        view = np.ascontiguousarray(view if len(view) else tris, dtype=np.int32)
        quads = model.quads
        return cls(overlay, view,
                   overlay_hidden_edges=None if quads is None else quad_diagonals(overlay, quads),
                   view_hidden_edges=None if quads is None else quad_diagonals(view, quads),
                   overlay_simplified=simplified_triangles(overlay, model.mean_mm) if simplify else None,
                   view_simplified=simplified_triangles(view, model.mean_mm) if simplify else None)


SIMPLIFIED_FRACTION = 0.35
"""Share of the triangles the video views draw. On llvmpipe the vertex work, the triangle setup and a good
part of the rasterisation scale with the triangle count; shaded with the full mesh's normals a third of the
triangles looks the same at the video's sizes (the face mask over a 720p frame, a 274-pixel 3D view).
Composed views on real 720p frames: 9.6 ms of CPU per frame with the full meshes, 7.5 with half, 6.7 with
35 %, 6.3 with 25 % (where the 3D view's silhouette starts to show corners)."""


def simplified_triangles(triangles: np.ndarray, vertices_mm: np.ndarray,
                         keep: float = SIMPLIFIED_FRACTION) -> np.ndarray | None:
    """About ``keep`` x the triangles, by quadric edge collapses on ``vertices_mm`` (the model's mean face),
    each collapse keeping one of the edge's two vertices: the result indexes a subset of the same vertices, so
    it follows every fitted face (identity, expression, pose) with no per-frame work. Open borders (eyes,
    mouth, the mask's outline) are not collapsed. None when the simplifier is not installed.
    """
    try:
        import fast_simplification
    except ImportError:  # a display optimisation: the full triangles are drawn then
        log.warning("fast-simplification is not installed: the video views draw the full meshes")
        return None
    tris = np.asarray(triangles, dtype=np.int64)
    try:
        _, _, collapses = fast_simplification.simplify(
            np.asarray(vertices_mm, dtype=np.float64), tris, target_reduction=1.0 - keep,
            return_collapses=True, preserve_border=True)
    except Exception as exc:  # (a mesh the simplifier cannot take: draw it as it is)
        log.warning("mesh simplification failed (%s): the video views draw the full meshes", exc)
        return None
    collapses = np.asarray(collapses, dtype=np.int64).reshape(-1, 2)
    # collapses[i] = (kept, removed): follow each removed vertex to the one that finally stands for it.
    rep = np.arange(vertices_mm.shape[0])
    if len(collapses):
        rep[collapses[:, 1]] = collapses[:, 0]
    while True:
        nxt = rep[rep]
        if np.array_equal(nxt, rep):
            break
        rep = nxt
    t = rep[tris]
    t = t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]
    _, first = np.unique(np.sort(t, axis=1), axis=0, return_index=True)
    if len(first) == 0:
        return None
    return np.ascontiguousarray(t[np.sort(first)], dtype=np.int32)


def _extent(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis minimum and maximum of (N, 3) points, column by column: numpy's ``min(axis=0)`` over a
    thin (N, 3) array takes about 0.8 ms for a face mesh, three column reductions 20 us."""
    lo = np.array([points[:, k].min() for k in range(points.shape[1])], dtype=np.float64)
    hi = np.array([points[:, k].max() for k in range(points.shape[1])], dtype=np.float64)
    return lo, hi


def orbit_distance_mm(vertices_mm: np.ndarray, fov_deg: float,
                      margin: float = 0.95) -> tuple[np.ndarray, float]:
    """Centre of the mesh and the orbit distance at which it fills the view (seen from any side)."""
    lo, hi = _extent(vertices_mm)
    center = 0.5 * (lo + hi)
    radius = 0.5 * float(np.max(hi - lo))
    return center, margin * radius / math.tan(math.radians(fov_deg) / 2.0) + 0.3 * radius


def orbit_view_params(vertices_mm: np.ndarray, rect: tuple[int, int, int, int], style: ViewStyle, *,
                      yaw_deg: float | None = None, pitch_deg: float | None = None, zoom: float = 1.0,
                      texture_image: np.ndarray | None = None, texture_intrinsics: Intrinsics | None = None,
                      scalars: np.ndarray | None = None, scalar_range: tuple[float, float] | None = None,
                      hidden_edges: np.ndarray | None = None,
                      face_pose: Pose | None = None) -> dict[str, Any]:
    """Renderer arguments (everything but vertices and triangles) of the 3D view into ``rect``.

    With ``face_pose`` the head's rotation is taken out first, so the orbit angles are relative to the
    face (yaw 0 = seen from the front) instead of to the camera.
    """
    w, h = rect[2], rect[3]
    fov = style.orbit_fov_deg
    intr = Intrinsics.from_fov(w, h, fov) if w >= h else _fov_vertical(w, h, fov)
    pre = np.eye(4)
    if face_pose is not None:
        # camera -> the same head turned to face the camera, in place: F R^T (p - t) + t.
        turn = FRONTAL_ROTATION @ np.asarray(face_pose.rotation, dtype=np.float64).T
        t = np.asarray(face_pose.translation_mm, dtype=np.float64)
        pre[:3, :3] = turn
        pre[:3, 3] = t - turn @ t
    lo, hi = _extent(vertices_mm)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    center, distance = orbit_distance_mm(corners @ pre[:3, :3].T + pre[:3, 3],
                                         min(fov, intr.horizontal_fov_deg))
    view = orbit_view_matrix(center, style.orbit_yaw_deg if yaw_deg is None else yaw_deg,
                             style.orbit_pitch_deg if pitch_deg is None else pitch_deg, distance / zoom) @ pre
    mode = style.mode
    if (mode == "textured" and texture_image is None) or (mode == "heatmap" and scalars is None):
        mode = "lit"
    return {"intrinsics": intr, "mode": mode, "view": view, "viewport": rect, "clear_color": PANEL_COLOR,
            "wireframe_overlay": style.wireframe, "texture_image": texture_image,
            "texture_intrinsics": texture_intrinsics, "scalars": scalars, "scalar_range": scalar_range,
            "specular": style.specular, "hidden_edges": hidden_edges}


def draw_orbit_view(renderer: OffscreenRenderer, vertices_mm: np.ndarray, triangles: np.ndarray,
                    rect: tuple[int, int, int, int], style: ViewStyle, *, reuse_mesh: bool = False,
                    out: np.ndarray, **params: Any) -> np.ndarray:
    """Draw the mesh seen by an orbit camera into ``rect`` of ``out`` (the rest of ``out`` untouched);
    ``params`` as :func:`orbit_view_params`."""
    return renderer.render(vertices_mm, triangles, **orbit_view_params(vertices_mm, rect, style, **params),
                           reuse_mesh=reuse_mesh, out=out)


def asymmetry_mm(model: MorphableModel, fit: FaceFit) -> np.ndarray:
    """Per-vertex left/right asymmetry (mm) of a fitted face with the head pose removed: the distance from
    each model-space vertex to the mirror image of its symmetric counterpart."""
    # einsum, not a BLAS product: BLAS threads on busy cores cost milliseconds at this size.
    model_space = np.einsum("ni,ij->nj", fit.vertices_mm - fit.pose.translation_mm, fit.pose.rotation)
    mirrored = model_space[model.symmetry] * np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    return np.linalg.norm(model_space - mirrored, axis=1).astype(np.float32)


ASYMMETRY_RANGE_MM = (0.0, 4.0)
"""Colour scale of the asymmetry heatmap."""


def _fov_vertical(w: int, h: int, fov_deg: float) -> Intrinsics:
    """Intrinsics whose *vertical* field of view is ``fov_deg`` (for portrait panels)."""
    f = 0.5 * h / math.tan(math.radians(fov_deg) / 2.0)
    return Intrinsics(f, f, w / 2.0, h / 2.0, w, h)


def compose_views(renderer: OffscreenRenderer, image: np.ndarray, vertices_mm: np.ndarray | None,
                  display: MeshDisplay, intrinsics: Intrinsics, style: ViewStyle,
                  landmarks_px: list[np.ndarray] | None = None, out: np.ndarray | None = None,
                  face_pose: Pose | None = None) -> np.ndarray:
    """The camera frame with the mesh drawn in place and a square 3D view in the bottom-right corner.

    ``renderer`` must have the image's size. Without a mesh (no fit) only the landmarks are drawn.
    ``out`` may be ``image`` itself (drawn in place).
    """
    h, w = image.shape[:2]
    if out is None:
        out = np.empty_like(image)
    if out is not image:
        np.copyto(out, image)
    dots = np.concatenate(landmarks_px)[:, :2] if style.landmarks and landmarks_px else None
    if vertices_mm is None:
        if dots is not None and dots.size:
            draw_dots(out, dots)
        return out
    mode = style.mode if style.mode != "heatmap" else "lit"
    # The simplified meshes unless the wireframe shows the triangulation; either way shaded with the normals
    # of the whole face area's full mesh.
    small = not style.wireframe and mode != "wireframe"
    overlay_tris = display.overlay_simplified if small and display.overlay_simplified is not None \
        else display.overlay_triangles
    view_tris = display.view_simplified if small and display.view_simplified is not None \
        else display.view_triangles
    # The mesh over the frame: drawn alone (premultiplied), composited into ``out`` below.
    overlay_box = renderer.draw(
        vertices_mm, overlay_tris, intrinsics, mode, crop=True, transparent=True,
        texture_image=image if mode == "textured" else None, opacity=style.overlay_opacity,
        wireframe_overlay=style.wireframe, specular=style.specular, hidden_edges=display.overlay_hidden_edges,
        points_px=dots, point_size=3.0, point_color=(0.3, 1.0, 0.55, 1.0),
        normal_triangles=display.view_triangles)   # (the 3D view reuses these normals)
    side = max(32, round(style.inset_fraction * h))
    side = min(side, w, h)
    margin = max(4, side // 40)
    rect = (w - side - margin, h - side - margin, side, side)
    # (The textured 3D view needs the untouched frame; when drawing in place it falls back to "lit".)
    params = orbit_view_params(vertices_mm, rect, style, texture_image=image if out is not image else None,
                               texture_intrinsics=intrinsics, hidden_edges=display.view_hidden_edges,
                               face_pose=None if style.orbit_follows_head else face_pose)
    if overlay_box is not None:
        renderer.flush()   # rasterised while the 3D view is prepared and drawn
    # The 3D view is drawn into the same picture before the camera overlay is read back: where the two
    # boxes overlap, the overlay's read-back shows the 3D view, but only inside ``rect``, which is painted
    # over afterwards.
    orbit_box = renderer.draw(vertices_mm, view_tris, crop=True, reuse_mesh=True, **params)
    if overlay_box is not None:
        renderer.read_box_into(out, overlay_box, over=True)
    renderer.fill(out, rect, PANEL_COLOR)
    if orbit_box is not None:
        renderer.read_box_into(out, orbit_box, over=False)
    return out


def draw_dots(image: np.ndarray, points_px: np.ndarray) -> None:
    from realtime.annotate import draw_points

    draw_points(image, points_px, np.array([77, 255, 140], np.uint8), radius=1)


class MeshOverlay:
    """``VideoWriterSink`` ``draw`` callable: :func:`compose_views` of each frame's first fitted face, then
    the tracking annotations' text. The renderer (an EGL context) is created on the first call, on the
    writer thread that uses it; :meth:`close` releases it.
    """

    def __init__(self, model: MorphableModel, intrinsics_for_size: Callable[[int, int], Intrinsics],
                 style: ViewStyle | None = None, samples: int | None = None) -> None:
        self.display = MeshDisplay.from_model(model)
        self.intrinsics_for_size = intrinsics_for_size
        self.style = style or ViewStyle()
        self.samples = samples
        self._renderer: OffscreenRenderer | None = None
        self._unavailable = False

    def __call__(self, image: np.ndarray, result: FrameResult) -> np.ndarray:
        from realtime.annotate import AnnotateOptions, annotate

        h, w = image.shape[:2]
        fit = next((f.fit for f in result.faces if f.fit is not None), None)
        r = self._renderer
        if not self._unavailable and (r is None or (r.width, r.height) != (w, h)):
            if r is not None:
                r.release()
            try:
                r = self._renderer = OffscreenRenderer(w, h, samples=self.samples)
            except MissingResourceError as exc:  # no EGL here: keep writing the video, without meshes
                log.warning("the video shows no meshes: %s", exc)
                self._unavailable = True
                r = self._renderer = None
        if r is None:
            return annotate(image, result, AnnotateOptions())
        landmarks = [f.track.landmarks_px for f in result.faces]
        compose_views(r, image, None if fit is None else fit.vertices_mm, self.display,
                      self.intrinsics_for_size(w, h), self.style, landmarks, out=image,
                      face_pose=None if fit is None else fit.pose)
        # Boxes and the frame label from the tracking annotations (landmarks are drawn above already).
        return annotate(image, result, AnnotateOptions(landmarks=False, boxes=fit is None))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.release()
            self._renderer = None


def mesh_overlay_for(stages: list[Any], style: ViewStyle | None = None) -> MeshOverlay | None:
    """The ``--output`` video's ``draw`` for a pipeline with a "fit" stage (its model and camera), else None
    (the video then keeps the plain tracking annotations)."""
    fit = next((s for s in stages if getattr(s, "name", "") == "fit"), None)
    model = getattr(fit, "model", None)
    resolver = getattr(fit, "intrinsics", None)
    if model is None or resolver is None:
        return None
    return MeshOverlay(model, resolver.for_size, style)


def check_render_path(path: str | Path) -> Path:
    """Fail early (``OutputError``) when a ``--render`` PNG cannot be written."""
    import os

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise OutputError(f"--render needs a .png path, got {p}")
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir() or (parent.exists() and not os.access(parent, os.W_OK)):
        raise OutputError(f"cannot write {p}")
    return p


def render_reconstruction(image: np.ndarray, fit: FaceFit, model: MorphableModel, intrinsics: Intrinsics,
                          style: ViewStyle | None = None, max_height: int = 1440) -> np.ndarray:
    """Side-by-side picture of a one-shot reconstruction: the photo with the mesh in place | the 3D view.

    Photos taller than ``max_height`` are shown scaled down (the picture, not the fit, is smaller).
    """
    from PIL import Image

    style = style or ViewStyle(overlay_opacity=0.6, orbit_follows_head=False)
    display = MeshDisplay.from_model(model, simplify=False)   # a still picture: the full meshes
    h, w = image.shape[:2]
    if h > max_height:
        w, h = max(1, round(w * max_height / h)), max_height
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))
        intrinsics = intrinsics.scaled(w, h)
    canvas = np.empty((h, w + h, 3), dtype=np.uint8)
    with OffscreenRenderer(w + h, h) as r:
        # Left: the photo with the mesh; the renderer's picture is wider, so draw it into a viewport.
        canvas[:, :w] = image
        r.render(fit.vertices_mm, display.overlay_triangles, intrinsics, "lit", viewport=(0, 0, w, h),
                 background=canvas, opacity=style.overlay_opacity, wireframe_overlay=style.wireframe,
                 specular=style.specular, hidden_edges=display.overlay_hidden_edges, out=canvas)
        draw_orbit_view(r, fit.vertices_mm, display.view_triangles, (w, 0, h, h), style, reuse_mesh=True,
                        hidden_edges=display.view_hidden_edges,
                        face_pose=None if style.orbit_follows_head else fit.pose, out=canvas)
    return canvas


def render_reconstruction_png(image: np.ndarray, fit: FaceFit, model: MorphableModel, intrinsics: Intrinsics,
                              path: str | Path, style: ViewStyle | None = None) -> Path:
    """Write :func:`render_reconstruction` as a PNG (``OutputError`` when it cannot be written)."""
    from PIL import Image

    p = check_render_path(path)
    picture = render_reconstruction(image, fit, model, intrinsics, style)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(p)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {exc.strerror or exc}") from None
    return p
