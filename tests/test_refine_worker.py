"""Keyframe selection and the background refinement worker (a real spawned process on a real photo)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from realtime.capture import load_rgb
from realtime.refine.job import RefineRequest
from realtime.refine.keyframes import PRIORITY_POSE, PRIORITY_SNAPSHOT, KeyframeOptions, KeyframeSelector
from realtime.results import FaceFit, FaceResult, FaceTrack, Frame, FrameResult, Pose

NAMES = ("a", "b", "c")


def _frame(t: float, yaw: float, expr: tuple[float, ...] = (0.0, 0.0, 0.0), sharp: bool = True,
           events: list[str] | None = None, conf: float = 0.9) -> FrameResult:
    rng = np.random.default_rng(int(t * 10))
    img = np.full((120, 120, 3), 100, np.uint8)
    if sharp:
        img = (rng.random((120, 120, 3)) * 255).astype(np.uint8)
    a = np.radians(yaw)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pose = Pose(np.diag([1.0, -1.0, -1.0]) @ turn, np.array([0.0, 0.0, 500.0]))
    fit = FaceFit(pose, np.array(expr, np.float32), np.zeros(3, np.float32), np.zeros((1, 3), np.float32),
                  np.zeros((68, 2)), np.zeros((68, 3)), 1.0, conf)
    track = FaceTrack(np.zeros((478, 3), np.float32), 1.0, (10.0, 10.0, 110.0, 110.0))
    return FrameResult(Frame(img, int(t * 30), t, 0.0), [FaceResult(track, fit)], events=events or [])


def test_keyframe_selector_pose_bins_expressions_and_snapshots() -> None:
    sel = KeyframeSelector(NAMES, KeyframeOptions(min_interval_s=1.0))
    d = sel.consider(_frame(0.0, 1.0))
    assert d is not None and d.reason == "pose:+0" and d.priority == PRIORITY_POSE
    assert sel.consider(_frame(2.0, 2.0)) is None                 # bin already filled, not clearly better
    assert sel.consider(_frame(2.5, 29.0, sharp=False)) is None   # blurred
    assert sel.consider(_frame(2.6, 29.0, conf=0.2)) is None      # poorly fitted
    d = sel.consider(_frame(3.0, 31.0))
    assert d is not None and d.reason == "pose:+30"
    assert sel.consider(_frame(3.2, -50.0)) is None               # rate limit (1 s)
    assert sel.consider(_frame(4.5, -49.0)).reason == "pose:-50"  # type: ignore[union-attr]
    assert sel.consider(_frame(5.0, 15.0)) is None                # between bins
    d = sel.consider(_frame(6.0, 15.0, expr=(0.1, 0.8, 0.0)))
    assert d is not None and d.reason == "expression:b"
    assert sel.consider(_frame(7.5, 15.0, expr=(0.1, 0.9, 0.0))) is None   # same peak, not re-armed
    sel.consider(_frame(9.0, 15.0, expr=(0.0, 0.1, 0.0)))                  # released
    assert sel.consider(_frame(10.5, 15.0, expr=(0.0, 0.7, 0.0))).reason == "expression:b"  # type: ignore[union-attr]
    d = sel.consider(_frame(10.6, 15.0, sharp=False, events=["snapshot"]))  # manual: always, top priority
    assert d is not None and d.priority == PRIORITY_SNAPSHOT


@pytest.mark.slow
def test_worker_refines_in_a_spawned_process_with_priorities(images_dir: Path, tmp_path: Path) -> None:
    from realtime.refine.worker import RefineWorker

    img = load_rgb(images_dir / "takeo.jpg")
    # idle_policy=False: on a CI box whose cores are always busy an idle-class worker would never run
    with RefineWorker(max_pending=3, nice=10, idle_policy=False) as w:
        first = w.submit(RefineRequest(image=img, out_dir=str(tmp_path / "a"), reason="pose:+0"),
                         PRIORITY_POSE)
        low1 = w.submit(RefineRequest(image=img, reason="expression:x"), 2)
        low2 = w.submit(RefineRequest(image=img, reason="expression:y"), 2)
        # the queue is full (or holds 2 while the first job runs): a snapshot always gets in, evicting a
        # lower-priority job when needed; another low-priority job is refused once the queue is full
        snap = w.submit(RefineRequest(image=img, out_dir=str(tmp_path / "s"), reason="snapshot"),
                        PRIORITY_SNAPSHOT)
        assert None not in (first, low1, low2, snap)
        while w.pending < 3:
            assert w.submit(RefineRequest(image=img, reason="expression:w"), 2) is not None
        assert w.submit(RefineRequest(image=img, reason="expression:z"), 2) is None
        w.cancel(low1)  # type: ignore[arg-type]
        w.cancel(low2)  # type: ignore[arg-type]
        for r in w.results():
            assert r.status == "cancelled"
        results = []
        while len([r for r in results if r.status in ("done", "error")]) < 2 or w.busy:
            r = w.wait_result(timeout=180)
            assert r is not None, "worker produced no result"
            results.append(r)
        done = {r.reason: r for r in results if r.status == "done"}
        assert "snapshot" in done and "pose:+0" in done, [(r.reason, r.status, r.error) for r in results]
        # the snapshot jumped the queue: it finished right after the job that was already running
        order = [r.reason for r in results if r.status == "done"]
        assert order.index("snapshot") <= 1, order
        out = done["snapshot"].outcome
        assert out is not None and out.export is not None
        assert (tmp_path / "s" / "face.obj").is_file()
        assert out.photometric_error[1] < out.photometric_error[0]
        assert out.detailed_vertices_mm.shape[1] == 3


@pytest.mark.slow
def test_refine_sink_in_the_live_pipeline(videos_dir: Path, tmp_path: Path) -> None:
    """Snapshot event in the real pipeline → worker process → refined mesh back to the caller, and on disk."""
    from realtime.capture import VideoSource
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline
    from realtime.refine.worker import build_refine_sink

    source = VideoSource(videos_dir / "wink_blink_gaze.mp4")
    source.open()
    stages = [LandmarkStage(), FitStage()]
    sink = build_refine_sink(stages, tmp_path, automatic=False, idle_policy=False)
    with Pipeline(source, stages, [sink], max_frames=12) as pipeline:
        pipeline.post_event("snapshot")
        pipeline.run()
        assert [d.reason for _, d in sink.submitted] == ["snapshot"]
        done = None
        for _ in range(120):
            done = sink.latest()
            if done is not None:
                break
            time.sleep(1.0)
        assert done is not None and done.outcome is not None, "no refined mesh came back"
        out = done.outcome
        assert out.detailed_vertices_mm.shape == out.coarse_vertices_mm.shape
        assert out.export is not None and (out.export.directory / "face.glb").is_file()
