"""Pipeline mechanics: run/start/stop, latest, events, sinks added and removed at run time, errors, stats."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from realtime.capture import ArraySource, VideoSource
from realtime.landmarks import LandmarkStage
from realtime.pipeline import Pipeline, Sink, Stage
from realtime.results import FrameResult


@pytest.fixture(scope="module")
def frames(videos_dir: Path) -> list[np.ndarray]:
    with av.open(str(videos_dir / "wink_blink_gaze.mp4")) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(40), c.decode(video=0), strict=False)]


class Recorder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.results: list[FrameResult] = []
        self.closed = False
        self.delay_s = delay_s

    def consume(self, result: FrameResult) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


class Failing:
    name = "failing"

    def __init__(self, at: int) -> None:
        self.at = at
        self.closed = False

    def process(self, result: FrameResult) -> None:
        if result.frame.index == self.at:
            raise RuntimeError("stage broke")
        result.timings_ms[self.name] = 0.0

    def close(self) -> None:
        self.closed = True


def test_protocols_are_satisfied() -> None:
    assert isinstance(Recorder(), Sink)
    assert isinstance(Failing(0), Stage)


def test_run_tracks_every_frame_with_stats(frames: list[np.ndarray]) -> None:
    rec = Recorder()
    stage = LandmarkStage()
    with Pipeline(ArraySource(frames), [stage], [rec]) as p:
        stats = p.run()
        assert p.latest() is rec.results[-1]
    assert rec.closed and stage.tracker._graph is None  # closed with the pipeline
    assert stats.frames == len(frames) == len(rec.results) == stats.decoded
    assert stats.frames_with_face == len(frames) and stats.dropped == 0
    assert stats.fps > 0 and stats.wall_s > 0
    assert {"landmarks", "frame", "latency"} <= set(stats.stages)
    assert stats.stages["frame"].median_ms >= stats.stages["landmarks"].median_ms
    assert stats.stages["landmarks"].p95_ms >= stats.stages["landmarks"].median_ms
    d = stats.as_dict()
    assert d["frames"] == len(frames) and "landmarks" in d["stages"]  # type: ignore[operator]


def test_max_frames_stops_the_decoder(videos_dir: Path) -> None:
    rec = Recorder()
    source = VideoSource(videos_dir / "expressions_cheekpuff_pucker_eyeroll.mp4")
    with Pipeline(source, [], [rec], max_frames=7) as p:
        stats = p.run()
    assert stats.frames == 7 and stats.stopped and [r.frame.index for r in rec.results] == list(range(7))
    assert stats.decoded < 20  # back-pressure: the decoder did not run ahead through the file
    assert stats.source_error is None
    assert stats.stages["decode"].count >= 7  # measured on the decode thread


def test_background_events_and_sinks_at_run_time(frames: list[np.ndarray]) -> None:
    slow = Recorder(delay_s=0.01)  # ~100 fps: slow enough to act while it runs
    late = Recorder()
    many = frames * 5
    with Pipeline(ArraySource(many), [], [slow]) as p:
        p.start()
        p.start()  # idempotent: still one processing thread
        while p.latest() is None:
            time.sleep(0.005)
        p.post_event("snapshot")
        for _ in range(20):  # a UI may read the statistics while frames are processed
            assert p.stats.frames >= 1
        p.add_sink(late)
        while len(late.results) < 10:
            time.sleep(0.005)
        p.remove_sink(late)
        n_late = len(late.results)
        time.sleep(0.05)
        assert len(late.results) == n_late  # never called after remove_sink returned
        assert late not in p.sinks and not late.closed  # the caller closes what it removed
        assert p.running
        p.stop()
        assert not p.running and p.finished
    events = [r.events for r in slow.results if r.events]
    assert events == [["snapshot"]]
    assert 10 <= n_late < len(many)
    first_late = late.results[0].frame.index
    assert [r.frame.index for r in late.results] == list(range(first_late, first_late + n_late))
    assert len(slow.results) < len(many)  # stopped early
    assert slow.closed


def test_stage_error_stops_and_closes_everything(frames: list[np.ndarray]) -> None:
    rec = Recorder()
    bad = Failing(at=5)
    p = Pipeline(ArraySource(frames), [bad], [rec])
    with pytest.raises(RuntimeError, match="stage broke"), p:
        p.run()
    assert len(rec.results) == 5 and rec.closed and bad.closed


def test_stage_error_in_background_is_raised_by_wait(frames: list[np.ndarray]) -> None:
    with Pipeline(ArraySource(frames), [Failing(at=3)]) as p:
        p.start()
        with pytest.raises(RuntimeError, match="stage broke"):
            p.wait(10.0)


def test_stop_from_another_thread_ends_a_live_run_promptly(videos_dir: Path) -> None:
    source = VideoSource(videos_dir / "talking_720p.mp4", realtime=True)
    with Pipeline(source, []) as p:
        threading.Timer(0.5, p.stop).start()
        t0 = time.monotonic()
        stats = p.run()
        assert time.monotonic() - t0 < 2.0
    assert stats.stopped and 5 < stats.frames < 40
