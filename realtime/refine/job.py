"""One refinement job: image(s) → landmarks → (joint) fit → medium + fine stages → export.

Used by ``realtime-face refine`` and by the background worker (``realtime.refine.worker``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from realtime.camera import Intrinsics
from realtime.correspondence import Correspondence
from realtime.errors import BadInputError
from realtime.facemodel import MorphableModel
from realtime.refine.export import ExportedSnapshot, export_snapshot, visible_depth
from realtime.refine.photometric import PhotoFitResult, PhotometricFitter, PhotoView
from realtime.refine.snapshot import RefinedFace, RefineOptions, refine_snapshot
from realtime.refine.twoview import JointFit, JointFitter, ViewInput, is_side_view, rotated_view
from realtime.refine.uv import UVAtlas, View
from realtime.results import FaceFit, FaceTrack, Pose

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RefineRequest:
    """What the worker (or the CLI) refines. Arrays are plain numpy, so a request pickles across processes."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB front (or only) view."""
    intrinsics: Intrinsics | None = None
    track: FaceTrack | None = None
    """Landmarks of ``image`` when already known (live stream); tracked here otherwise."""
    fit: FaceFit | None = None
    """The live fit of ``image``; when given (and no side view), the job refines it as is."""
    side_image: np.ndarray | None = None
    side_intrinsics: Intrinsics | None = None
    side_track: FaceTrack | None = None
    rotated_second_view: bool = False
    """With one image, add the paper's rendered 30° view to the joint fit."""
    out_dir: str | None = None
    """Export here when set."""
    reason: str = "snapshot"
    """"snapshot" (manual), "keyframe:<why>", "cli"."""
    frame_index: int = -1
    timestamp_s: float = 0.0


@dataclass(slots=True)
class RefineOutcome:
    """A finished job, small enough to send back to the UI process."""

    reason: str
    frame_index: int
    timestamp_s: float
    detailed_vertices_mm: np.ndarray
    """(N, 3) float32 camera-space detailed mesh (model topology)."""
    coarse_vertices_mm: np.ndarray
    intrinsics: Intrinsics
    yaw_deg: float
    photometric_error: tuple[float, float]
    """Coarse and refined mean absolute error over the refined face (grey levels)."""
    landmark_error_px: tuple[float, float]
    displacement_uv: np.ndarray
    normal_uv: np.ndarray
    uv_valid: np.ndarray
    export: ExportedSnapshot | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    views: int = 1
    photometric_fit_rms: tuple[float, float] | None = None
    """Colour residual (grey levels) of the landmark fit and of its photometric refinement, if run."""
    pose: Pose | None = None
    """Head pose of the fit (model -> camera): the window turns the refined head to face its orbit view."""


def track_image(image: np.ndarray, tracker: object | None = None, what: str = "image") -> FaceTrack:
    from realtime.landmarks import FaceMeshTracker

    if isinstance(tracker, FaceMeshTracker):
        tracks = tracker.track(image)
    else:
        with FaceMeshTracker(max_faces=1, static=True) as own:
            tracks = own.track(image)
    if not tracks:
        raise BadInputError(f"no face found in the {what}")
    return max(tracks, key=lambda t: (t.box_px[2] - t.box_px[0]) * (t.box_px[3] - t.box_px[1]))


class RefineEngine:
    """Holds the model, correspondence, UV atlas and a static tracker across jobs (one per process)."""

    def __init__(self, model: MorphableModel, correspondence: Correspondence,
                 options: RefineOptions | None = None) -> None:
        self.model = model
        self.correspondence = correspondence
        self.options = options or RefineOptions()
        self.atlas = UVAtlas.build(model, self.options.uv_size)
        self.joint = JointFitter(model, correspondence)
        self.photo = PhotometricFitter(model, correspondence, self.options.photo)
        self._tracker: object | None = None

    def _track(self, image: np.ndarray, what: str) -> FaceTrack:
        if self._tracker is None:
            from realtime.landmarks import FaceMeshTracker

            self._tracker = FaceMeshTracker(max_faces=1, static=True)
        return track_image(image, self._tracker, what)

    def close(self) -> None:
        closer = getattr(self._tracker, "close", None)
        if closer is not None:
            closer()
        self._tracker = None

    def __enter__(self) -> RefineEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fit_views(self, req: RefineRequest,
                  timings: dict[str, float]
                  ) -> tuple[FaceTrack, FaceFit, JointFit | None, list[View], PhotoFitResult | None]:
        """Landmarks, the (joint) landmark fit, then the photometric refinement of its identity and pose.

        Returns the track, the fit of the front (only) image, the joint fit (two views), the other images
        as texture views, and the photometric refinement (None when off or skipped)."""
        t0 = time.perf_counter()
        h, w = req.image.shape[:2]
        k = req.intrinsics or Intrinsics.from_fov(w, h)
        track = req.track if req.track is not None else self._track(req.image, "image")
        timings["landmarks"] = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        views = [ViewInput(track, k)]
        extra: list[tuple[np.ndarray, Intrinsics]] = []
        joint: JointFit | None = None
        if req.side_image is not None:
            sh, sw = req.side_image.shape[:2]
            ks = req.side_intrinsics or Intrinsics.from_fov(sw, sh)
            side_track = req.side_track if req.side_track is not None else self._track(req.side_image,
                                                                                       "side image")
            views.append(ViewInput(side_track, ks))
            extra.append((req.side_image, ks))
        elif req.rotated_second_view:
            single = req.fit if req.fit is not None else self.joint.fit(views, iterations=0).fits[0]
            rendered, _ = rotated_view(req.image, single, self.model, k)
            try:
                views.append(ViewInput(self._track(rendered, "rotated rendering"), k))
            except BadInputError:
                log.warning("no face found in the rotated rendering; single-view fit")
        if len(views) > 1:
            # the photometric step starts from the views fitted with the most frontal view's identity locked:
            # skip the joint landmark iterations then
            photo_next = self.options.photometric and req.side_image is not None
            joint = self.joint.fit(views, iterations=0 if photo_next else 4)
            fit = joint.fits[0]
            if req.side_image is not None and not is_side_view(joint.fits[1]):
                log.warning("the side image is turned only %.0f° (two-view works best from 35°)",
                            abs(joint.fits[1].pose.euler_deg()[0]))
        elif req.fit is not None:
            fit = req.fit
        else:
            fit = self.joint.fit(views, iterations=0).fits[0]
        timings["fit"] = (time.perf_counter() - t1) * 1e3
        photo: PhotoFitResult | None = None
        if self.options.photometric:
            # analysis by synthesis over the real images (a rendered 30° view only repeats the front one)
            t2 = time.perf_counter()
            if joint is not None and req.side_image is not None:
                # per-view landmark fits with the most frontal view's identity locked (iterations=0 above)
                photo_views = [PhotoView(req.image, k, joint.fits[0], track),
                               PhotoView(req.side_image, extra[0][1], joint.fits[1], views[1].track)]
            else:
                photo_views = [PhotoView(req.image, k, fit, track)]
            try:
                photo = self.photo.fit_views(photo_views)
            except ValueError as exc:   # a face (almost) outside the image: keep the landmark fit
                log.warning("photometric fit skipped: %s", exc)
            if photo is not None:
                fit = photo.fits[0]
                if joint is not None and req.side_image is not None:
                    joint = JointFit(photo.fits, photo.identity, joint.single_fits,
                                     joint.residual_px)
            timings["photometric_fit"] = (time.perf_counter() - t2) * 1e3
        tex_views: list[View] = []
        if joint is not None:
            for (img, kk), f in zip(extra, joint.fits[1:], strict=False):
                depth = visible_depth(np.asarray(f.vertices_mm), self.model.triangles, kk.width, kk.height,
                                      kk.project)
                tex_views.append(View(img, np.asarray(f.vertices_mm), kk, depth))
        return track, fit, joint, tex_views, photo

    def run(self, req: RefineRequest) -> tuple[RefineOutcome, RefinedFace]:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        track, fit, joint, side_views, photo = self.fit_views(req, timings)
        h, w = req.image.shape[:2]
        k = req.intrinsics or Intrinsics.from_fov(w, h)
        try:
            refined = refine_snapshot(req.image, track, fit, self.model, self.correspondence, k, self.options,
                                      self.atlas)
        except ValueError as exc:
            raise BadInputError(f"cannot refine this face: {exc}") from None
        for key, val in refined.timings_ms.items():
            timings[f"refine.{key}" if key != "total" else "refine"] = val
        exported = None
        if req.out_dir is not None:
            t1 = time.perf_counter()
            depth = visible_depth(refined.medium_vertices_mm, self.model.triangles, w, h, k.project)
            views = [View(req.image, refined.medium_vertices_mm, k, depth), *side_views]
            params: dict[str, object] = {
                "identity": np.asarray(fit.identity).tolist(),
                "expression": dict(zip(self.model.expression_names, np.asarray(fit.expression).tolist(),
                                       strict=True)),
                "intrinsics": k.to_dict(),
                "yaw_pitch_roll_deg": list(fit.pose.euler_deg()),
                "sh_coeffs": refined.sfs.sh.tolist(),
                "views": 1 + len(side_views) if joint is None else len(joint.fits),
                "photometric_error_grey": dict(zip(("coarse", "refined"), refined.photometric_errors(),
                                                   strict=True)),
                "landmark_error_px": dict(zip(("coarse", "medium"), refined.landmark_error_px, strict=True)),
                "photometric_fit_rms_grey": (None if photo is None else dict(zip(
                    ("landmark_fit", "refined"), photo.photometric_rms, strict=True))),
                "reason": req.reason,
                "frame_index": req.frame_index,
            }
            exported = export_snapshot(req.out_dir, self.model, self.atlas, views,
                                       refined.detailed_vertices_mm, refined.coarse_vertices_mm,
                                       fit.pose.rotation, fit.pose.translation_mm, refined.displacement_uv,
                                       refined.normal_uv, refined.uv_valid, params, timings)
            timings["export"] = (time.perf_counter() - t1) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        outcome = RefineOutcome(
            reason=req.reason, frame_index=req.frame_index, timestamp_s=req.timestamp_s,
            detailed_vertices_mm=refined.detailed_vertices_mm, coarse_vertices_mm=refined.coarse_vertices_mm,
            intrinsics=k, yaw_deg=float(fit.pose.euler_deg()[0]),
            photometric_error=refined.photometric_errors(),
            landmark_error_px=refined.landmark_error_px, displacement_uv=refined.displacement_uv,
            normal_uv=refined.normal_uv, uv_valid=refined.uv_valid, export=exported, timings_ms=timings,
            views=1 if joint is None else len(joint.fits), pose=fit.pose,
            photometric_fit_rms=None if photo is None else photo.photometric_rms)
        return outcome, refined


