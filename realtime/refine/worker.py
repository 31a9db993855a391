"""Background refinement: a low-priority worker process, a bounded priority queue, cancellation, and the
pipeline sink that feeds it keyframes and snapshots.

The refinement runs in a separate *spawned* process (its own interpreter: no GIL or BLAS pool shared with
the live loop) at ``os.nice(19)`` and, on Linux, the ``SCHED_IDLE`` policy (it only gets CPU time nothing
else wants), with one BLAS/OpenMP thread, so the capture/processing loop keeps its frame rate. The parent
keeps the queue: at most ``max_pending`` jobs wait; a full queue evicts its
lowest-priority, oldest job for a more urgent one (a manual snapshot always gets in). One job is in the
child at a time; a dispatcher thread hands it the next one and collects the result. Cancelling a waiting
job removes it; cancelling the running job discards its result when it finishes (the child is not killed
mid-write, so an export folder is never left half-written).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime.camera import Intrinsics
from realtime.refine.job import RefineOutcome, RefineRequest
from realtime.refine.keyframes import KeyframeDecision, KeyframeOptions, KeyframeSelector
from realtime.results import FrameResult
from realtime.spawn import start_single_threaded

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: int
    status: str
    """"done", "error" or "cancelled"."""
    reason: str
    frame_index: int
    outcome: RefineOutcome | None = None
    error: str = ""
    queued_s: float = 0.0
    """Time from submission to the start of the job."""


def _child_main(inbox: Any, outbox: Any, model_name: str, nice: int, idle_policy: bool,
                log_level: int, pin_cpu: bool = True) -> None:
    """Worker process: load the model once, then refine requests until a ``None`` arrives."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s[worker]: %(message)s")
    # Everything below is set before any library starts a thread: Linux applies nice, the scheduling
    # policy and the CPU mask per thread, and threads inherit them from their creator.
    with contextlib.suppress(OSError):  # some platforms forbid it
        os.nice(nice)
    # Linux: SCHED_IDLE runs the worker only on CPU time nothing else wants (weaker than any nice level)
    if idle_policy and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    # one core only: the worker's caches and memory traffic then touch one of the live loop's cores, not all
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin_cpu and len(cpus) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpus[-1]})
    import cv2

    cv2.setNumThreads(1)  # resize/solvePnP in the job: cv2's own pool would ignore OMP_NUM_THREADS
    from realtime.correspondence import load_correspondence
    from realtime.errors import UserError
    from realtime.facemodel import load_face_model
    from realtime.refine.job import RefineEngine

    model = load_face_model(model_name)
    with RefineEngine(model, load_correspondence(model)) as engine:
        outbox.put(("ready", -1, None))
        while True:
            item = inbox.get()
            if item is None:
                break
            job_id, req = item
            try:
                outcome, _ = engine.run(req)
                outbox.put(("done", job_id, outcome))
            except UserError as exc:
                outbox.put(("error", job_id, str(exc)))
            except Exception as exc:  # the worker must survive any single bad job
                logging.getLogger(__name__).exception("refinement job %d failed", job_id)
                outbox.put(("error", job_id, f"{type(exc).__name__}: {exc}"))


@dataclass(order=True)
class _Pending:
    priority: int
    seq: int
    job_id: int = field(compare=False)
    request: RefineRequest = field(compare=False)
    submitted: float = field(compare=False, default=0.0)


class RefineWorker:
    """Owns the worker process, the bounded priority queue and the dispatcher thread. Context manager."""

    def __init__(self, model_name: str = "ict-facekit", max_pending: int = 4, nice: int = 19,
                 max_results: int = 16, on_result: Callable[[JobResult], None] | None = None,
                 start_timeout_s: float = 120.0, idle_policy: bool = True, pin_cpu: bool = True) -> None:
        """``idle_policy``: SCHED_IDLE on Linux. On a machine whose cores are always busy (a shared CI box)
        an idle-class process never runs; pass False there (nice alone still yields to the live loop).
        ``pin_cpu``: keep the worker on the last CPU it may use (when there are several)."""
        self.max_pending = max_pending
        self._on_result = on_result
        ctx = mp.get_context("spawn")
        self._inbox = ctx.Queue(maxsize=1)
        self._outbox = ctx.Queue()
        self._proc = ctx.Process(target=_child_main, name="realtime-refine",
                                 args=(self._inbox, self._outbox, model_name, nice, idle_policy,
                                       logging.getLogger("realtime").getEffectiveLevel(), pin_cpu),
                                 daemon=True)
        start_single_threaded(self._proc)
        self._heap: list[_Pending] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._running: int | None = None
        self._running_started = 0.0
        self._cancelled: set[int] = set()
        self._results: deque[JobResult] = deque(maxlen=max_results)
        self._stop = False
        self._start_timeout_s = start_timeout_s
        self._thread = threading.Thread(target=self._dispatch, name="refine-dispatch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(self, request: RefineRequest, priority: int = 1) -> int | None:
        """Queue a job; returns its id, or None when the queue is full of jobs at least as urgent."""
        with self._cond:
            if self._stop:
                return None
            if len(self._heap) >= self.max_pending:
                worst = max(self._heap)
                if worst.priority <= priority:
                    log.debug("refine queue full: dropped a %s request", request.reason)
                    return None
                self._heap.remove(worst)
                heapq.heapify(self._heap)
                self._push_result(JobResult(worst.job_id, "cancelled", worst.request.reason,
                                            worst.request.frame_index, error="evicted by a more urgent job"))
            job_id = next(self._ids)
            heapq.heappush(self._heap, _Pending(priority, next(self._seq), job_id, request, time.monotonic()))
            self._cond.notify_all()
            return job_id

    def cancel(self, job_id: int) -> bool:
        """Cancel a waiting job (removed) or the running one (its result is discarded)."""
        with self._cond:
            for p in self._heap:
                if p.job_id == job_id:
                    self._heap.remove(p)
                    heapq.heapify(self._heap)
                    self._push_result(JobResult(job_id, "cancelled", p.request.reason, p.request.frame_index))
                    return True
            if self._running == job_id:
                self._cancelled.add(job_id)
                return True
        return False

    def cancel_all(self) -> None:
        with self._cond:
            ids = [p.job_id for p in self._heap] + ([self._running] if self._running is not None else [])
        for i in ids:
            self.cancel(i)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None or bool(self._heap)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is waiting or running (True), or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running is not None or self._heap:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._stop and not self._thread.is_alive()):
                    return False
                self._cond.wait(timeout=min(remaining, 0.5))
            return True

    def results(self) -> list[JobResult]:
        """Finished jobs since the last call (non-blocking)."""
        with self._cond:
            out = list(self._results)
            self._results.clear()
            return out

    def wait_result(self, timeout: float | None = None) -> JobResult | None:
        """Block until a result is available (or ``timeout`` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._results:
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or (self._stop and not self._thread.is_alive()):
                    return None
                self._cond.wait(timeout=remaining if remaining is not None else 0.5)
            return self._results.popleft()

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the running job (waiting jobs are cancelled) and end the process."""
        with self._cond:
            if self._stop:
                return
            self._stop = True
            for p in self._heap:
                self._push_result(JobResult(p.job_id, "cancelled", p.request.reason, p.request.frame_index))
            self._heap.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        with contextlib.suppress(queue.Full):
            self._inbox.put(None, timeout=1.0)
        self._proc.join(timeout)
        if self._proc.is_alive():
            log.warning("refine worker did not stop in %.0f s; terminating it", timeout)
            self._proc.terminate()
            self._proc.join(5.0)
        self._inbox.close()
        self._outbox.close()

    def __enter__(self) -> RefineWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ dispatcher thread
    def _push_result(self, r: JobResult) -> None:  # caller holds the lock
        self._results.append(r)
        self._cond.notify_all()
        if self._on_result is not None:
            try:
                self._on_result(r)
            except Exception:  # a UI callback must not kill the dispatcher
                log.exception("refine result callback failed")

    def _get(self, timeout: float) -> tuple[str, int, Any] | None:
        try:
            item: tuple[str, int, Any] = self._outbox.get(timeout=timeout)
            return item
        except queue.Empty:
            return None

    def _dispatch(self) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        while True:  # wait for the child to load the model
            item = self._get(0.5)
            if item is not None and item[0] == "ready":
                break
            if not self._proc.is_alive() or time.monotonic() > deadline or self._stop:
                log.error("refine worker failed to start")
                with self._cond:
                    self._stop = True
                    for p in self._heap:
                        self._push_result(JobResult(p.job_id, "error", p.request.reason,
                                                    p.request.frame_index,
                                                    error="refine worker failed to start"))
                    self._heap.clear()
                return
        while True:
            with self._cond:
                while not self._heap and not self._stop:
                    self._cond.wait(0.5)
                if self._stop and not self._heap:
                    return
                job = heapq.heappop(self._heap)
                self._running = job.job_id
                started = time.monotonic()
            self._inbox.put((job.job_id, job.request))
            item = None
            while item is None:
                item = self._get(0.5)
                if item is None and not self._proc.is_alive():
                    item = ("error", job.job_id, "refine worker process died")
            status, jid, payload = item
            with self._cond:
                self._running = None
                if jid in self._cancelled:
                    self._cancelled.discard(jid)
                    status, payload = "cancelled", None
                outcome = payload if status == "done" and isinstance(payload, RefineOutcome) else None
                error = payload if status == "error" else ""
                self._push_result(JobResult(jid, status, job.request.reason, job.request.frame_index, outcome,
                                            str(error or ""), started - job.submitted))
                if error == "refine worker process died":
                    self._stop = True
                    return


class RefineSink:
    """Pipeline sink: picks keyframes/snapshots from finished frames and hands them to a ``RefineWorker``.

    ``consume`` costs one face-crop Laplacian per frame (plus an image copy for a chosen frame); the
    window polls ``latest()`` for the newest refined mesh. Exports go to ``out_root/<frame>_<reason>/``.
    """

    name = "refine"

    def __init__(self, worker: RefineWorker, intrinsics: Intrinsics | Callable[[int, int], Intrinsics],
                 expression_names: tuple[str, ...],
                 out_root: str | Path | None = None, options: KeyframeOptions | None = None,
                 automatic: bool = True, own_worker: bool = False, finish_pending_s: float = 0.0) -> None:
        """``finish_pending_s``: on close, wait up to this long for queued jobs (batch runs); 0 cancels them
        (a live window quitting)."""
        self.worker = worker
        self.finish_pending_s = finish_pending_s
        self.intrinsics = intrinsics
        self.out_root = Path(out_root) if out_root is not None else None
        self.selector = KeyframeSelector(expression_names, options or KeyframeOptions())
        self.automatic = automatic
        self.own_worker = own_worker
        self.submitted: list[tuple[int, KeyframeDecision]] = []
        self._latest: JobResult | None = None

    def consume(self, result: FrameResult) -> None:
        decision = self.selector.consider(result)
        if decision is None or (not self.automatic and decision.priority != 0):
            return
        face = result.primary
        if face is None:
            return
        out_dir = None
        if self.out_root is not None:
            out_dir = str(self.out_root / f"{result.frame.index:06d}_{decision.reason.replace(':', '_')}")
        k = self.intrinsics if isinstance(self.intrinsics, Intrinsics) else self.intrinsics(
            result.frame.width, result.frame.height)
        req = RefineRequest(image=result.frame.image.copy(), intrinsics=k, track=face.track,
                            fit=face.fit, out_dir=out_dir, reason=decision.reason,
                            frame_index=result.frame.index, timestamp_s=result.frame.timestamp_s)
        job = self.worker.submit(req, decision.priority)
        if job is not None:
            self.submitted.append((job, decision))
            log.info("frame %d queued for refinement (%s)", result.frame.index, decision.reason)

    def latest(self) -> JobResult | None:
        """The newest finished refinement (done jobs only), for the window to show."""
        for r in self.worker.results():
            if r.status == "done":
                self._latest = r
            elif r.status == "error":
                log.warning("refinement of frame %d failed: %s", r.frame_index, r.error)
        return self._latest

    def close(self) -> None:
        if self.finish_pending_s > 0 and self.worker.busy:
            log.info("finishing %d queued refinement(s) (up to %.0f s)", self.worker.pending + 1,
                     self.finish_pending_s)
            if not self.worker.wait_idle(self.finish_pending_s):
                log.warning("refinement still busy after %.0f s: the remaining jobs are cancelled",
                            self.finish_pending_s)
        if self.own_worker:
            self.worker.close()


def build_refine_sink(stages: list[Any], out_root: str | Path | None = None, automatic: bool = True,
                      max_pending: int = 4, idle_policy: bool = True,
                      finish_pending_s: float = 0.0) -> RefineSink:
    """A ``RefineSink`` with its own worker, using the pipeline's fit stage for the model and the camera.

    For ``realtime-face run``: ``sinks.append(build_refine_sink(stages, args.refine_dir))``; the window
    shows ``sink.latest().outcome.detailed_vertices_mm`` (camera space of that frame, the model's triangles).
    """
    fit_stage = next((s for s in stages if getattr(s, "name", "") == "fit"), None)
    if fit_stage is None:
        raise ValueError("refinement needs the fit stage in the pipeline")
    model = fit_stage.model
    resolver = fit_stage.intrinsics
    worker = RefineWorker(model_name=model.name, max_pending=max_pending, idle_policy=idle_policy)
    return RefineSink(worker, resolver.for_size, tuple(model.expression_names), out_root, automatic=automatic,
                      own_worker=True, finish_pending_s=finish_pending_s)
