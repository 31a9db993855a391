"""Background photometric refinement of the locked identity (issue 3), fed back into the live fit.

MediaPipe's landmarks pin a face's shape only to ≈ 3 mm even over many frames (``docs/fitting.md``). Once
the live fitter locks an identity, the images of a few frames the live path has already seen carry more: the
shading of the skin. This module picks those frames and refines the locked identity against them, off the
hot path, and hands the result back to the live fitter:

1. ``ViewCollector`` (per face slot, on the processing thread, a few scalar tests per frame) keeps the best
   *front* view (|yaw| ≤ 18°) and the best *side* view on each side (|yaw| 22-45°): least expression (the
   photometric step keeps each view's expressions fixed, so a neutral face is the cleanest evidence), then
   yaw closest to the slot's centre. The frame's image is copied only when it replaces a slot's view.
2. ``IdentityRefineStage`` (after the fit stage) submits a job when the identity locks (front view) and
   whenever a view slot is filled or clearly improved afterwards: the landmark lock and the views.
3. ``IdentityRefiner`` (the job, in ``IdentityRefineWorker``'s process) refits each view's pose and
   expression with the landmark lock fixed (a few ms per view), then runs ``PhotometricFitter`` over all
   views together (identity shared, start and prior centre at the landmark lock; ≈ 1.5 s per view on one
   core).
4. Between frames the stage polls the worker and adopts a result of the current lock (unless the landmarks
   fit it much worse than the lock: ``IdentityRefineOptions.max_residual_ratio``) with
   ``FaceFitter.lock_identity(refined, reid_reference=landmark_lock)``: the live fit then only uses another
   identity vector (no extra cost per frame). Re-identification keeps comparing landmark-only estimates with
   each other (``reid_reference``), since a refined identity is further from any landmark-only estimate
   than the landmark lock is (measured in ``docs/fitting.md``).

Cancellation: "reset-identity" (UI) or "new-face" (re-identification) starts a new lock generation; waiting
work of older generations is dropped and their results are discarded when they arrive. A dedicated worker
process (not ``realtime.refine.worker.RefineWorker``): that worker runs the full keyframe refinement with
exports and only when ``--refine`` asks for it, with a priority queue of independent jobs; here one small
job matters at a time and a newer request supersedes a waiting one, and it starts only once an identity
locks (a run that never locks never pays for the process).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from realtime.camera import Intrinsics
from realtime.results import FaceFit, FaceTrack, FrameResult
from realtime.spawn import start_single_threaded

if TYPE_CHECKING:
    from realtime.correspondence import Correspondence
    from realtime.facemodel import MorphableModel
    from realtime.fitting import FaceFitter, FitStage
    from realtime.refine.photometric import PhotoFitOptions, PhotoFitResult, PhotoView

log = logging.getLogger(__name__)

SLOT_FRONT = "front"
SLOT_LEFT = "left"     # the subject's left side toward the camera: positive yaw
SLOT_RIGHT = "right"


@dataclass(frozen=True, slots=True)
class IdentityRefineOptions:
    front_max_yaw_deg: float = 18.0
    """|yaw| of a front view (a person seated off-axis, e.g. 14° on talking_720p.mp4, still gets one; the most
    frontal neutral view is kept)."""
    side_bins_deg: tuple[tuple[float, float, float], ...] = ((22.0, 45.0, 32.0),)
    """Side view slots, each (min |yaw|, max |yaw|, preferred |yaw|) and one per side: among equally neutral
    views the one closest to the preferred |yaw| is kept."""
    max_pitch_deg: float = 20.0
    max_expression: float = 0.5
    """Views whose largest face expression weight (gaze left out) is above this are not used."""
    min_confidence: float = 0.3
    improve_margin: float = 0.1
    """A kept view is replaced by one whose score (largest expression weight + |yaw - target| / 100) is
    lower by at least this."""
    sides: bool = True
    """Add side views (off: the front view only)."""
    max_jobs: int = 6
    """Jobs per lock (each refines with all views kept at the time)."""
    max_residual_ratio: float = 1.25
    """A refined identity is adopted only if the views' landmark residual with it is at most this times the
    residual with the landmark lock. The lock fits MediaPipe's biased points better than the truth does (on the
    head-turn renders the true identity costs +9-18 %, adopted refinements of the tuning seeds 0.95-1.21 ×), so
    some increase is expected; much more means the shading was explained by something else (talking_720p.mp4:
    1.43 ×, rejected)."""
    min_interval_s: float = 1.0
    """Stream time between two submissions (a newer request also supersedes a waiting one)."""
    photo: PhotoFitOptions | None = None
    """Options of the photometric step (default ``PhotoFitOptions()``)."""


@dataclass(frozen=True, slots=True)
class IdentityView:
    image: np.ndarray
    """(H, W, 3) uint8 RGB (a copy of the frame)."""
    intrinsics: Intrinsics
    track: FaceTrack
    slot: str
    yaw_deg: float
    score: float
    frame_index: int


@dataclass(frozen=True, slots=True)
class IdentityRefineRequest:
    generation: int
    identity: np.ndarray
    """The landmark lock: the start and the prior centre of the refinement."""
    views: tuple[IdentityView, ...]
    frame_index: int = 0
    """Frame at which the request was made."""


@dataclass(frozen=True, slots=True)
class IdentityRefineResult:
    generation: int
    identity: np.ndarray | None
    """The refined identity (None on error)."""
    slots: tuple[str, ...]
    frame_index: int
    photometric_rms: tuple[float, float] = (0.0, 0.0)
    """RMS colour residual (grey levels) at the landmark lock / refined."""
    landmark_residual_px: tuple[float, float] = (0.0, 0.0)
    """Mean landmark residual of the views' fits (pose and expression refitted) with the landmark lock /
    with the refined identity."""
    elapsed_ms: float = 0.0
    error: str = ""


# --------------------------------------------------------------------------------------------- the job

class IdentityRefiner:
    """Runs one request synchronously (the worker process's body; the benchmark and tests call it directly)."""

    def __init__(self, model: MorphableModel, correspondence: Correspondence,
                 photo: PhotoFitOptions | None = None, keep_size: bool = True, size_stride: int = 4) -> None:
        """``keep_size``: give the refined identity the landmark lock's overall size (see ``run``)."""
        from realtime.fitting import FitOptions
        from realtime.refine.photometric import PhotometricFitter

        self.model = model
        self.correspondence = correspondence
        self.photo = PhotometricFitter(model, correspondence, photo)
        self.fit_options = FitOptions(lock_identity=True)
        self.keep_size = keep_size
        # Face area, every ``size_stride``-th vertex: the similarity scale and the identity that best
        # reproduces a rescaled shape (least squares over the basis plus a free translation, tiny ridge).
        fa = model.face_area_vertices
        sel = np.arange(0, fa, size_stride)
        self._size_mean = model.mean_mm[sel].astype(np.float64)                          # (V, 3)
        self._size_basis = model.identity_basis_mm[:, sel].astype(np.float64).reshape(model.n_identity, -1).T
        a = np.concatenate([self._size_basis, np.tile(np.eye(3), (len(sel), 1))], axis=1)
        self._size_solve = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T)      # (K + 3, 3V)

    def _view_fit(self, view: IdentityView, identity: np.ndarray) -> FaceFit:
        """The view's pose and expression refitted with ``identity`` fixed (cold start, full mesh)."""
        from realtime.fitting import FaceFitter

        f = FaceFitter(self.model, self.correspondence, view.intrinsics, self.fit_options)
        f.lock_identity(identity)
        return f.fit(view.track)

    def _shape(self, identity: np.ndarray) -> np.ndarray:
        return self._size_mean + (self._size_basis @ identity).reshape(-1, 3)

    def size_ratio(self, identity: np.ndarray, reference: np.ndarray) -> float:
        """Similarity scale that maps ``identity``'s face area onto ``reference``'s (least squares)."""
        p, q = self._shape(identity), self._shape(reference)
        p, q = p - p.mean(axis=0), q - q.mean(axis=0)
        u, s, vt = np.linalg.svd(p.T @ q)
        d = np.ones(3)
        d[2] = np.sign(np.linalg.det(u @ vt))
        return float((s * d).sum() / (p**2).sum())

    def rescaled(self, identity: np.ndarray, scale: float) -> np.ndarray:
        """The identity whose face area best reproduces ``identity``'s scaled by ``scale`` about its centroid."""
        shape = self._shape(identity)
        c = shape.mean(axis=0)
        target = (c + scale * (shape - c) - self._size_mean).reshape(-1)
        return np.asarray((self._size_solve @ target)[: len(identity)])

    def refine_views(self, views: Sequence[PhotoView], start: np.ndarray) -> tuple[np.ndarray, float,
                                                                                   PhotoFitResult]:
        """The photometric identity fit over ``views`` (start and prior centre ``start``), then, with
        ``keep_size``, the size reset. Returns the identity, the scale applied and the fit's result."""
        res = self.photo.fit(views, start, start)
        refined = np.asarray(res.identity, np.float64)
        scale = 1.0
        if self.keep_size:
            # Shading and outline cannot tell a face's absolute size (twice as large twice as far looks the
            # same): the views' depths and the identity drift together (several views: the refined face
            # came out 2-4 % smaller than the lock on the tuning seeds). The size is the iris
            # measurement's, which the landmark lock carries: keep it.
            scale = self.size_ratio(refined, start)
            refined = self.rescaled(refined, scale)
        return refined, scale, res

    def run(self, req: IdentityRefineRequest) -> IdentityRefineResult:
        from realtime.refine.photometric import PhotoView

        t0 = time.perf_counter()
        slots = tuple(v.slot for v in req.views)
        if not req.views:
            return IdentityRefineResult(req.generation, None, slots, req.frame_index, error="no views")
        start = np.asarray(req.identity, np.float64)
        views = [PhotoView(v.image, v.intrinsics, self._view_fit(v, start), v.track) for v in req.views]
        res_lock = float(np.mean([pv.fit.residual_px for pv in views]))
        refined, scale, res = self.refine_views(views, start)
        res_ref = float(np.mean([self._view_fit(v, refined).residual_px for v in req.views]))
        ms = (time.perf_counter() - t0) * 1e3
        log.info("identity refined from %d view(s) (%s) in %.0f ms: colour residual %.2f -> %.2f grey, size "
                 "reset by %+.1f %%, landmark residual %.2f -> %.2f px", len(views), "+".join(slots), ms,
                 *res.photometric_rms, 100 * (scale - 1), res_lock, res_ref)
        return IdentityRefineResult(req.generation, refined, slots, req.frame_index, res.photometric_rms,
                                    (res_lock, res_ref), ms)


# --------------------------------------------------------------------------------------------- executors

class Executor(Protocol):
    def submit(self, request: IdentityRefineRequest) -> None: ...

    def poll(self) -> list[IdentityRefineResult]: ...

    def cancel_before(self, generation: int) -> None: ...

    def close(self) -> None: ...


class SyncExecutor:
    """Runs each request at once on the calling thread: the benchmark and tests measure what the app adopts,
    at the points of the stream where the app hands the request over (the app's result arrives later)."""

    def __init__(self, refiner: IdentityRefiner) -> None:
        self.refiner = refiner
        self._results: list[IdentityRefineResult] = []
        self.requests: list[IdentityRefineRequest] = []

    def submit(self, request: IdentityRefineRequest) -> None:
        self.requests.append(request)
        self._results.append(self.refiner.run(request))

    def poll(self) -> list[IdentityRefineResult]:
        out, self._results = self._results, []
        return out

    def cancel_before(self, generation: int) -> None:
        self._results = [r for r in self._results if r.generation >= generation]

    def close(self) -> None:
        self._results.clear()


def _child_main(inbox: Any, outbox: Any, model_name: str, photo: PhotoFitOptions | None, nice: int,
                idle_policy: bool, log_level: int) -> None:
    """Worker process: load the model once, then refine requests until ``None`` arrives."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s[identity-worker]: %(message)s")
    with contextlib.suppress(OSError):
        os.nice(nice)
    if idle_policy and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    import cv2

    cv2.setNumThreads(1)
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model

    model = load_face_model(model_name)
    refiner = IdentityRefiner(model, load_correspondence(model), photo)
    outbox.put(("ready", None))
    while True:
        item = inbox.get()
        if item is None:
            break
        try:
            outbox.put(("done", refiner.run(item)))
        except Exception as exc:  # one bad job must not end the worker
            logging.getLogger(__name__).exception("identity refinement failed")
            outbox.put(("done", IdentityRefineResult(item.generation, None, tuple(v.slot for v in item.views),
                                                     item.frame_index, error=f"{type(exc).__name__}: {exc}")))


class IdentityRefineWorker:
    """A spawned low-priority process (nice 19, SCHED_IDLE on Linux, one BLAS thread) that runs one
    request at a time. ``submit`` never blocks: a request waiting for the process is superseded by a newer
    one (latest wins; the queue holds at most one). ``poll`` returns the finished results. The process
    starts on the first ``submit``."""

    def __init__(self, model_name: str = "ict-facekit", photo: PhotoFitOptions | None = None, nice: int = 19,
                 idle_policy: bool = True) -> None:
        self.model_name = model_name
        self.photo = photo
        self.nice = nice
        self.idle_policy = idle_policy
        self._cond = threading.Condition()
        self._pending: IdentityRefineRequest | None = None
        self._running: IdentityRefineRequest | None = None
        self._results: list[IdentityRefineResult] = []
        self._min_generation = 0
        self._stop = False
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self.failed = False

    def _start(self) -> None:
        """Start the dispatcher thread; it starts the process (``Process.start`` takes 10-20 ms: not on the
        processing thread)."""
        self._thread = threading.Thread(target=self._dispatch, name="identity-refine", daemon=True)
        self._thread.start()

    def _start_process(self) -> None:
        ctx = mp.get_context("spawn")
        self._inbox = ctx.Queue(maxsize=1)
        self._outbox = ctx.Queue()
        self._proc = ctx.Process(target=_child_main, name="realtime-identity-refine", daemon=True,
                                 args=(self._inbox, self._outbox, self.model_name, self.photo, self.nice,
                                       self.idle_policy, logging.getLogger("realtime").getEffectiveLevel()))
        start_single_threaded(self._proc)

    def submit(self, request: IdentityRefineRequest) -> None:
        with self._cond:
            if self._stop or self.failed:
                return
            if self._thread is None:
                self._start()
            if self._pending is not None:
                log.debug("identity refinement request of frame %d superseded", self._pending.frame_index)
            self._pending = request
            self._cond.notify_all()

    def poll(self) -> list[IdentityRefineResult]:
        with self._cond:
            out = [r for r in self._results if r.generation >= self._min_generation]
            self._results.clear()
            return out

    def cancel_before(self, generation: int) -> None:
        """Drop work of older lock generations (a waiting request now, a running one's result on arrival)."""
        with self._cond:
            self._min_generation = max(self._min_generation, generation)
            if self._pending is not None and self._pending.generation < generation:
                self._pending = None

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._pending is not None or self._running is not None

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing waits or runs (True) or ``timeout`` passes (False). Tests and batch tools."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop or self.failed:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def close(self, timeout: float = 2.0) -> None:
        """Stop now: a running job is abandoned (it writes nothing), the process ends."""
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._pending = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._proc is None:
            return
        with contextlib.suppress(queue.Full, ValueError, OSError):
            self._inbox.put_nowait(None)
        # an idle child ends at once; one still loading the model or in a job is stopped (it writes nothing)
        self._proc.join(min(timeout, 0.5))
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)
        self._inbox.close()
        self._outbox.close()
        self._inbox.cancel_join_thread()

    def __enter__(self) -> IdentityRefineWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, timeout: float) -> tuple[str, Any] | None:
        try:
            item: tuple[str, Any] = self._outbox.get(timeout=timeout)
            return item
        except queue.Empty:
            return None

    def _fail(self, why: str) -> None:
        log.error("identity refinement worker: %s (the landmark lock stays in use)", why)
        with self._cond:
            self.failed = True
            self._pending = None
            self._running = None
            self._cond.notify_all()

    def _dispatch(self) -> None:
        with self._cond:
            if self._stop:
                return
        self._start_process()   # not under the lock: poll() on the processing thread must not wait for it
        deadline = time.monotonic() + 120.0
        while True:   # the child loads the model first
            item = self._get(0.5)
            if item is not None and item[0] == "ready":
                break
            with self._cond:
                if self._stop:
                    return
            if not self._proc.is_alive() or time.monotonic() > deadline:
                self._fail("failed to start")
                return
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                req, self._pending = self._pending, None
                self._running = req
            self._inbox.put(req)
            item = None
            while item is None:
                item = self._get(0.5)
                with self._cond:
                    if self._stop:
                        return
                if item is None and not self._proc.is_alive():
                    self._fail("process died")
                    return
            with self._cond:
                self._running = None
                result = item[1]
                if isinstance(result, IdentityRefineResult) and result.generation >= self._min_generation:
                    self._results.append(result)
                self._cond.notify_all()


# --------------------------------------------------------------------------------------------- view choice

@dataclass
class ViewCollector:
    """Keeps the best front / left / right view of one face (see the module docstring)."""

    options: IdentityRefineOptions
    face_expressions: np.ndarray
    """Indices of the expression weights that count (gaze left out: it barely moves the face)."""
    views: dict[str, IdentityView] = field(default_factory=dict)

    def _slot(self, yaw: float) -> tuple[str, float] | None:
        o = self.options
        if abs(yaw) <= o.front_max_yaw_deg:
            return SLOT_FRONT, abs(yaw) / 100.0
        if not o.sides:
            return None
        for i, (lo, hi, target) in enumerate(o.side_bins_deg):
            if lo <= abs(yaw) <= hi:
                name = (SLOT_LEFT if yaw > 0 else SLOT_RIGHT) + (str(i + 1) if i else "")
                return name, abs(abs(yaw) - target) / 100.0
        return None

    def consider(self, result: FrameResult, face_index: int, intrinsics: Intrinsics) -> bool:
        """Keep this frame's view of the face if it fills or clearly improves a slot; True if it did."""
        o = self.options
        face = result.faces[face_index]
        fit = face.fit
        if fit is None or fit.confidence < o.min_confidence:
            return False
        yaw, pitch, _ = fit.pose.euler_deg()
        if abs(pitch) > o.max_pitch_deg:
            return False
        slot = self._slot(yaw)
        if slot is None:
            return False
        expr = float(np.asarray(fit.expression)[self.face_expressions].max(initial=0.0))
        if expr > o.max_expression:
            return False
        score = expr + slot[1]
        kept = self.views.get(slot[0])
        if kept is not None and score > kept.score - o.improve_margin:
            return False
        self.views[slot[0]] = IdentityView(result.frame.image.copy(), intrinsics, face.track, slot[0],
                                           float(yaw), score, result.frame.index)
        return True

    def ordered(self) -> tuple[IdentityView, ...]:
        """The kept views, the front one first (the photometric fit starts from the most frontal one)."""
        return tuple(sorted(self.views.values(), key=lambda v: (v.slot != SLOT_FRONT, v.slot)))

    def reset(self) -> None:
        self.views.clear()


# --------------------------------------------------------------------------------------------- the stage

@dataclass
class _SlotState:
    collector: ViewCollector
    generation: int = 0
    landmark_identity: np.ndarray | None = None
    dirty: bool = False
    jobs: int = 0
    last_submit_s: float = -1e9
    adopted: IdentityRefineResult | None = None


class IdentityRefineStage:
    """Pipeline stage "identity_refine", right after the fit stage (see the module docstring).

    Per frame: adopt finished refinements of the current lock (``lock_identity``), keep better views, submit
    a job when warranted. Adds "identity-refined" to the frame's events when a refined identity is adopted.
    """

    name = "identity_refine"

    def __init__(self, fit_stage: FitStage, executor: Executor | None = None,
                 options: IdentityRefineOptions | None = None, idle_policy: bool = True) -> None:
        self.fit_stage = fit_stage
        self.options = options or IdentityRefineOptions()
        model = fit_stage.model
        self.executor: Executor = executor if executor is not None else IdentityRefineWorker(
            model.name, self.options.photo, idle_policy=idle_policy)
        self._face_expressions = np.array([i for i, n in enumerate(model.expression_names)
                                           if not n.startswith("eyeLook")], np.int64)
        self._slots: list[_SlotState] = []
        self._next_generation = 1
        self.adopted: list[IdentityRefineResult] = []
        """Every adopted result, in order (for the benchmark and tests)."""
        self.rejected: list[IdentityRefineResult] = []
        """Results of the current lock not adopted because of ``max_residual_ratio``."""

    def _state(self, slot: int) -> _SlotState:
        while len(self._slots) <= slot:
            self._slots.append(_SlotState(ViewCollector(self.options, self._face_expressions)))
        return self._slots[slot]

    def _new_generation(self, st: _SlotState) -> None:
        st.generation = self._next_generation
        self._next_generation += 1
        st.dirty = bool(st.collector.views)
        st.jobs = 0
        st.adopted = None
        st.landmark_identity = None

    def process(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        fitters: Sequence[FaceFitter] = self.fit_stage.fitters
        events = result.events
        restart = "reset-identity" in events
        finished = self.executor.poll()
        for slot, fitter in enumerate(fitters):
            st = self._state(slot)
            if restart or "new-face" in fitter.events:
                # another person (or the user asked): the views and the work for the old lock are void
                st.collector.reset()
                self._new_generation(st)
                st.dirty = False
                self.executor.cancel_before(min(s.generation for s in self._slots))
            if "identity-locked" in fitter.events:
                self._new_generation(st)
                st.landmark_identity = fitter.reid_reference
            self._adopt(st, fitter, finished, result)
            if slot < len(result.faces):
                intr = fitter.intrinsics
                if st.collector.consider(result, slot, intr):
                    st.dirty = True
                self._maybe_submit(st, fitter, result)
        result.timings_ms[self.name] = (time.perf_counter() - t0) * 1000.0

    def _adopt(self, st: _SlotState, fitter: FaceFitter, finished: list[IdentityRefineResult],
               result: FrameResult) -> None:
        for r in finished:
            if r.generation != st.generation:
                continue
            if r.identity is None:
                log.warning("identity refinement failed: %s", r.error)
                continue
            if not fitter.identity_locked or fitter.identity_verifying or st.landmark_identity is None:
                continue   # the lock is being re-checked: this result is void (a new job follows the lock)
            lock_px, refined_px = r.landmark_residual_px
            if refined_px > self.options.max_residual_ratio * lock_px:
                self.rejected.append(r)
                log.warning("refined identity not adopted (%s): the landmarks fit it %.0f %% worse than the lock",
                            "+".join(r.slots), 100 * (refined_px / max(lock_px, 1e-9) - 1))
                continue
            fitter.lock_identity(r.identity, reid_reference=st.landmark_identity)
            st.adopted = r
            self.adopted.append(r)
            if "identity-refined" not in result.events:
                result.events.append("identity-refined")
            log.info("refined identity adopted (%s, requested at frame %d)", "+".join(r.slots), r.frame_index)

    def _maybe_submit(self, st: _SlotState, fitter: FaceFitter, result: FrameResult) -> None:
        o = self.options
        if (not st.dirty or st.landmark_identity is None or not fitter.identity_locked
                or fitter.identity_verifying or st.jobs >= o.max_jobs or SLOT_FRONT not in st.collector.views):
            return
        t = result.frame.timestamp_s
        if t - st.last_submit_s < o.min_interval_s:
            return
        req = IdentityRefineRequest(st.generation, st.landmark_identity.copy(), st.collector.ordered(),
                                    result.frame.index)
        st.dirty = False
        st.jobs += 1
        st.last_submit_s = t
        log.info("frame %d: identity refinement requested (%s)", result.frame.index,
                 "+".join(v.slot for v in req.views))
        self.executor.submit(req)

    def close(self) -> None:
        self.executor.close()
        self._slots.clear()
