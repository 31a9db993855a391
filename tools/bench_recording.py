#!/usr/bin/env python
"""Benchmark: what session recording costs the live pipeline at 720p / 30 FPS.

The application's own pipeline (the stages ``realtime-face run`` builds: MediaPipe, fit, smoothing) runs
on ``../shared/data/videos/talking_720p.mp4`` paced at 30 FPS like a camera (newest frame wins). Two
methods:

* ``interleaved`` (default): one long live run over the video's first seconds, played forwards and
  backwards, with recording switched on and off every ``--period`` seconds through the ``"record"``
  event (the window's r key). Frames within ``--settle`` s after a switch are left out (encoder process
  start, final merge: once per session, not per frame);
  the rest are compared on/off. Interleaving cancels the slow drift of other processes' load on a
  shared machine.
* ``runs``: separate whole-video runs without and with a ``SessionRecorder``, alternating ``--repeats``
  times after a warm-up run.

Reports the per-frame processing time (stages + sinks) with and without recording, the overhead in percent
(target <= 15 %), the recorder's own time on the processing thread, the encoder process's CPU per frame,
and what was written: video frames written / dropped by the writer (target 0 dropped at 30 FPS), table
rows. No audio device here (audio off).

    .venv/bin/python tools/bench_recording.py [--method interleaved|runs] [--seconds 64] [--json]

On a machine shared with other jobs, the figures mostly measure their load; as root, run it as
``chrt -f 10 .venv/bin/python tools/bench_recording.py`` (real-time priority for the ~80 s it takes, the
encoder process inherits it) to measure this machine's own cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")


def build(video: str) -> tuple[Any, list[Any], list[Any]]:
    """The source, the stages and the table columns exactly as ``realtime-face run/record`` build them."""
    from realtime.cli import run

    parser = argparse.ArgumentParser()
    run.register(parser.add_subparsers())
    args = parser.parse_args(["run", "--video", video, "--realtime", "--headless"])
    build_source, build_stages = run.build_source, run.build_stages
    source = build_source(args)
    source.open()
    stages = build_stages(args, source)
    return source, stages, run.table_columns(args, stages)


class _Timed:
    """Times the wrapped sink's ``consume`` (the recorder's cost on the processing thread itself)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.ms: list[float] = []

    def consume(self, result: Any) -> None:
        t0 = time.perf_counter()
        self.sink.consume(result)
        self.ms.append((time.perf_counter() - t0) * 1000.0)

    def close(self) -> None:
        self.sink.close()


def one_run(video: str, record_dir: Path | None) -> dict[str, Any]:
    from realtime.pipeline import Pipeline
    from realtime.session.protocol import load_protocol
    from realtime.session.recorder import RecorderConfig, SessionRecorder

    source, stages, columns = build(video)
    sinks: list[Any] = []
    recorder = None
    if record_dir is not None:
        recorder = SessionRecorder(RecorderConfig(record_dir, subject_id="bench", columns=columns,
                                                  protocol=load_protocol("palsy-basic"), audio=False,
                                                  source=video))
        sinks.append(_Timed(recorder))
    t0 = time.perf_counter()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Pipeline(source, stages, sinks) as pipeline:
        stats = pipeline.run()
    wall = time.perf_counter() - t0  # includes closing (the recorder's finalisation)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the encoder process, once it has exited
    child_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    frame = stats.stages["frame"]
    out: dict[str, Any] = {
        "frames": stats.frames, "handoff_dropped": stats.dropped, "frame_mean_ms": frame.mean_ms,
        "frame_median_ms": frame.median_ms, "frame_p95_ms": frame.p95_ms, "wall_s": wall,
        "stages_mean_ms": {k: v.mean_ms for k, v in stats.stages.items() if k not in ("frame", "latency")},
    }
    if recorder is not None:
        from realtime.session import load_session

        st = recorder.status()
        session = load_session(recorder.folder)
        v = session.manifest["video"]
        out.update(state=st.state, table_rows=session.num_frames, video_written=v["frames_written"],
                   encoder_cpu_ms_per_frame=1000.0 * child_cpu / max(1, v["frames_written"]),
                   consume_ms_mean=statistics.mean(sinks[0].ms) if sinks[0].ms else 0.0,
                   video_dropped=v["frames_dropped"], video_codec=v["codec"],
                   video_bytes=(recorder.folder / "video.mp4").stat().st_size)
    return out


class _LoopSource:
    """Decoded frames played forwards and backwards at ``fps`` for ``seconds``, like a live camera."""

    @staticmethod
    def make(frames: list[Any], fps: float, seconds: float) -> Any:
        from realtime.capture import FrameSource

        class LoopSource(FrameSource):
            kind = "loop"
            live = True

            def __init__(self) -> None:
                super().__init__("loop", latest_only=True)
                self.fps = fps

            def _open(self) -> None:
                self.height, self.width = frames[0].shape[:2]

            def _produce(self) -> None:
                order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
                t0 = time.perf_counter()
                for i in range(int(seconds * fps)):
                    delay = t0 + i / fps - time.perf_counter()
                    if delay > 0 and not self._sleep(delay):
                        return
                    if not self._emit(frames[order[i % len(order)]], i / fps):
                        return

            def _release(self) -> None:
                pass

        return LoopSource()


def _block_stats(samples: list[tuple[float, bool, float, float, int]], settle_t: Any) -> list[dict[str, Any]]:
    """Per block (the frames between two switches): recording or not, median frame ms, mean CPU ms."""
    blocks: dict[int, list[tuple[float, bool, float, float, int]]] = {}
    for smp in samples:
        if settle_t(smp[0]):
            blocks.setdefault(smp[4], []).append(smp)
    out = []
    for k in sorted(blocks):
        rows = blocks[k]
        recs = {r[1] for r in rows}
        if len(recs) != 1 or len(rows) < 10:
            continue  # a block that straddles a switch the probe saw late, or too short to judge
        out.append({"block": k, "recording": recs.pop(), "frames": len(rows),
                    "median_ms": statistics.median(r[2] for r in rows),
                    "mean_ms": statistics.mean(r[2] for r in rows),
                    "thread_cpu_ms": statistics.mean(r[3] for r in rows)})
    return out


def _drop_times(sessions: list[Any]) -> list[float]:
    """Session time of every frame the video writer dropped (``video_written`` false in the table): at a
    session's start (encoder process still starting) or later (encoder starved of CPU)."""
    out: list[float] = []
    for s in sessions:
        written = s.frames.column("video_written").to_pylist()
        times = s.frames.column("session_time_s").to_pylist()
        out += [round(float(t), 2) for w, t in zip(written, times, strict=True) if not w]
    return out


def _paired_overheads(blocks: list[dict[str, Any]], key: str) -> list[float]:
    """Each recording block against the mean of the non-recording blocks just before and after it (drift in
    the machine's load between blocks cancels to first order)."""
    out = []
    for i, b in enumerate(blocks):
        if not b["recording"]:
            continue
        nb = [blocks[j][key] for j in (i - 1, i + 1)
              if 0 <= j < len(blocks) and not blocks[j]["recording"] and abs(blocks[j]["block"] - b["block"]) == 1]
        if nb:
            ref = statistics.mean(nb)
            out.append(100.0 * (b[key] - ref) / ref)
    return out


def interleaved(video: str, seconds: float, period: float, settle: float, tmp: Path,
                encoder_nice: int | None = None) -> dict[str, Any]:
    import av

    from realtime.pipeline import Pipeline
    from realtime.session.controller import RecordingController
    from realtime.session.recorder import RecorderConfig
    from realtime.session.video import ENCODER_NICE

    nice = ENCODER_NICE if encoder_nice is None else encoder_nice
    with av.open(video) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(60), c.decode(video=0), strict=False)]
    _, stages, columns = build(video)
    names = [s.name for s in stages]
    controller = RecordingController(lambda: RecorderConfig(tmp, subject_id="bench", audio=False,
                                                            columns=columns, video_nice=nice))
    timed = _Timed(controller)
    # (media time, recording, stages + recorder ms, processing-thread CPU ms since the previous frame, block)
    samples: list[tuple[float, bool, float, float, int]] = []
    switches: list[float] = []
    loads: list[float] = [os.getloadavg()[0]]

    class Probe:
        """Last sink: collects the per-frame time and flips recording every ``period`` seconds."""

        def __init__(self) -> None:
            self.pipe: Any = None
            self.next_switch = period
            self.cpu = time.thread_time()

        def consume(self, result: Any) -> None:
            t = result.frame.timestamp_s
            ms = sum(result.timings_ms.get(n, 0.0) for n in names) + (timed.ms[-1] if timed.ms else 0.0)
            cpu = time.thread_time()  # this runs on the processing thread: its CPU time per frame
            samples.append((t, controller.recording, ms, 1000.0 * (cpu - self.cpu), len(switches)))
            self.cpu = cpu
            if t >= self.next_switch:
                self.next_switch += period
                switches.append(t)
                loads.append(os.getloadavg()[0])
                self.pipe.post_event("record")

        def close(self) -> None:
            pass

    probe = Probe()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pipe = Pipeline(_LoopSource.make(frames, 30.0, seconds), stages, [timed, probe])
    probe.pipe = pipe
    with pipe:
        stats = pipe.run()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    loads.append(os.getloadavg()[0])

    def settled(t: float) -> bool:
        return all(not (s <= t < s + settle) for s in switches) and t >= settle

    on = [ms for t, rec, ms, _, _ in samples if rec and settled(t)]
    off = [ms for t, rec, ms, _, _ in samples if not rec and settled(t)]
    on_cpu = [c for t, rec, _, c, _ in samples if rec and settled(t)]
    off_cpu = [c for t, rec, _, c, _ in samples if not rec and settled(t)]
    blocks = _block_stats(samples, settled)
    pairs = _paired_overheads(blocks, "median_ms")
    pairs_cpu = _paired_overheads(blocks, "thread_cpu_ms")
    from realtime.session import load_session

    sessions = [load_session(r.folder) for r in controller.sessions]
    written = sum(s.manifest["video"]["frames_written"] for s in sessions)
    consume_on = [timed.ms[i] for i, x in enumerate(samples) if x[1] and i < len(timed.ms)]

    def quartiles(x: list[float]) -> list[float]:
        return [float(v) for v in statistics.quantiles(x, n=4)] if len(x) >= 2 else [math.nan] * 3

    return {
        "method": "interleaved", "seconds": seconds, "period_s": period, "settle_s": settle, "stages": names,
        "encoder_nice": nice,
        "frames": stats.frames, "handoff_dropped": stats.dropped, "sessions": len(sessions),
        "off_frames": len(off), "on_frames": len(on),
        "baseline_frame_mean_ms": statistics.mean(off), "recording_frame_mean_ms": statistics.mean(on),
        "baseline_frame_median_ms": statistics.median(off),
        "recording_frame_median_ms": statistics.median(on),
        "paired_overhead_pct": pairs, "paired_overhead_median_pct": statistics.median(pairs) if pairs else math.nan,
        "paired_overhead_quartiles_pct": quartiles(pairs),
        "baseline_thread_cpu_ms": statistics.mean(off_cpu), "recording_thread_cpu_ms": statistics.mean(on_cpu),
        "paired_thread_cpu_overhead_median_pct": statistics.median(pairs_cpu) if pairs_cpu else math.nan,
        "blocks": blocks,
        "recorder_consume_ms_median": statistics.median(consume_on) if consume_on else 0.0,
        "recorder_consume_ms_mean": statistics.mean(consume_on) if consume_on else 0.0,
        "encoder_cpu_ms_per_frame": 1000.0 * child_cpu / max(1, written),
        "video_frames_written": written,
        "video_frames_dropped_by_writer": sum(s.manifest["video"]["frames_dropped"] for s in sessions),
        "writer_drop_session_times_s": _drop_times(sessions),
        "table_rows": sum(s.num_frames for s in sessions),
        "frames_recorded": sum(r.status().frames for r in controller.sessions),
        "load_average_1min_samples": loads,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", help="720p input video (default: ../shared/data/videos/talking_720p.mp4)")
    ap.add_argument("--method", choices=("interleaved", "runs"), default="interleaved")
    ap.add_argument("--seconds", type=float, default=96.0, help="interleaved: length of the live run")
    ap.add_argument("--period", type=float, default=4.0, help="interleaved: seconds between switches")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="interleaved: seconds left out after each switch (encoder start, final merge)")
    ap.add_argument("--repeats", type=int, default=2, help="runs: baseline/recording pairs (default 2)")
    ap.add_argument("--encoder-nice", type=int, default=None,
                    help="niceness increment of the encoder process (default: the recorder's, ENCODER_NICE)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from realtime.paths import shared_dir

    video = args.video or str(shared_dir() / "data" / "videos" / "talking_720p.mp4")
    if args.method == "interleaved":
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
            res = interleaved(video, args.seconds, args.period, args.settle, Path(tmp), args.encoder_nice)
        b, r = res["baseline_frame_mean_ms"], res["recording_frame_mean_ms"]
        bm, rm = res["baseline_frame_median_ms"], res["recording_frame_median_ms"]
        res.update(overhead_pct=100.0 * (r - b) / b, overhead_median_pct=100.0 * (rm - bm) / bm,
                   target_overhead_pct=15.0, load_average_1min=[load_before, os.getloadavg()[0]],
                   cpu_count=os.cpu_count(), video=video)
        if args.json:
            json.dump(res, sys.stdout, indent=2)
            print()
            return 0
        print(f"recording benchmark (interleaved): {Path(video).name} looped live at 30 FPS for "
              f"{args.seconds:.0f} s, recording switched every {args.period:.0f} s (first {args.settle:.0f} s "
              f"after each switch left out); stages {res['stages']}; encoder niceness +{res['encoder_nice']}")
        print(f"{'':<22}{'frames':>8}{'mean ms':>10}{'median ms':>11}{'thread CPU ms':>15}")
        print(f"{'without recording':<22}{res['off_frames']:>8}{b:>10.2f}{bm:>11.2f}"
              f"{res['baseline_thread_cpu_ms']:>15.2f}")
        print(f"{'with recording':<22}{res['on_frames']:>8}{r:>10.2f}{rm:>11.2f}"
              f"{res['recording_thread_cpu_ms']:>15.2f}")
        q = res["paired_overhead_quartiles_pct"]
        print(f"overhead, paired blocks (each recording block vs the blocks beside it, median frame time): "
              f"median {res['paired_overhead_median_pct']:+.1f} % over {len(res['paired_overhead_pct'])} "
              f"pairs (quartiles {q[0]:+.1f} / {q[2]:+.1f} %); target <= 15 %")
        print(f"overhead, pooled: {res['overhead_pct']:+.1f} % (mean), {res['overhead_median_pct']:+.1f} % "
              f"(median); processing-thread CPU per frame, paired: "
              f"{res['paired_thread_cpu_overhead_median_pct']:+.1f} %")
        print(f"recorder on the processing thread: {res['recorder_consume_ms_median']:.3f} ms per frame "
              f"(median; mean {res['recorder_consume_ms_mean']:.3f} ms with the session starts); "
              f"encoder process CPU: {res['encoder_cpu_ms_per_frame']:.1f} ms per frame (beside the pipeline)")
        print(f"{res['sessions']} sessions: {res['frames_recorded']} frames recorded, "
              f"{res['table_rows']} table rows, {res['video_frames_written']} video frames written, "
              f"{res['video_frames_dropped_by_writer']} dropped by the writer (target 0; at session times "
              f"{res['writer_drop_session_times_s'][:10]} s); "
              f"{res['handoff_dropped']} frames dropped by the live hand-off (processing slower than 30 FPS)")
        ld = res["load_average_1min_samples"]
        print(f"machine: {os.cpu_count()} CPUs, 1-min load average {ld[0]:.1f} at the start, "
              f"{statistics.mean(ld):.1f} mean over the switches, {ld[-1]:.1f} at the end")
        return 0
    base: list[dict[str, Any]] = []
    rec: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        one_run(video, Path(tmp) / "warmup")  # not counted: first-use costs (model load, caches, encoder)
        for i in range(args.repeats):
            base.append(one_run(video, None))
            rec.append(one_run(video, Path(tmp) / f"run{i}"))
    load_after = os.getloadavg()[0]
    b = statistics.mean(r["frame_mean_ms"] for r in base)
    r = statistics.mean(x["frame_mean_ms"] for x in rec)
    bm = statistics.mean(r["frame_median_ms"] for r in base)
    rm = statistics.mean(x["frame_median_ms"] for x in rec)
    result = {
        "video": video,
        "repeats": args.repeats,
        "baseline_frame_mean_ms": b,
        "recording_frame_mean_ms": r,
        "overhead_pct": 100.0 * (r - b) / b,
        "baseline_frame_median_ms": bm,
        "recording_frame_median_ms": rm,
        "overhead_median_pct": 100.0 * (rm - bm) / bm,
        "encoder_cpu_ms_per_frame": statistics.mean(x["encoder_cpu_ms_per_frame"] for x in rec),
        "recorder_consume_ms_mean": statistics.mean(x["consume_ms_mean"] for x in rec),
        "load_average_1min": [load_before, load_after],
        "cpu_count": os.cpu_count(),
        "target_overhead_pct": 15.0,
        "video_frames_dropped_by_writer": sum(x["video_dropped"] for x in rec),
        "frames_processed_recording": sum(x["frames"] for x in rec),
        "video_frames_written": sum(x["video_written"] for x in rec),
        "table_rows": sum(x["table_rows"] for x in rec),
        "baseline_runs": base,
        "recording_runs": rec,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"recording benchmark: {Path(video).name}, paced at its frame rate, {args.repeats} pair(s)")
    print(f"{'run':<12}{'frames':>8}{'handoff drop':>14}{'frame ms mean':>15}{'median':>9}{'p95':>9}"
          f"{'video written':>15}{'writer drop':>13}{'table rows':>12}")
    for name, runs in (("baseline", base), ("recording", rec)):
        for x in runs:
            print(f"{name:<12}{x['frames']:>8}{x['handoff_dropped']:>14}{x['frame_mean_ms']:>15.2f}"
                  f"{x['frame_median_ms']:>9.2f}{x['frame_p95_ms']:>9.2f}"
                  f"{x.get('video_written', '-'):>15}{x.get('video_dropped', '-'):>13}"
                  f"{x.get('table_rows', '-'):>12}")
    print(f"per-frame processing (mean): baseline {b:.2f} ms, recording {r:.2f} ms -> overhead "
          f"{result['overhead_pct']:+.1f} % (target <= 15 %)")
    print(f"per-frame processing (median): baseline {bm:.2f} ms, recording {rm:.2f} ms -> overhead "
          f"{result['overhead_median_pct']:+.1f} %")
    print(f"recorder on the processing thread: {result['recorder_consume_ms_mean']:.3f} ms per frame; "
          f"encoder process CPU: {result['encoder_cpu_ms_per_frame']:.1f} ms per frame (beside the pipeline)")
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before, "
          f"{load_after:.1f} after (other processes' load makes these figures noisy)")
    print(f"frames dropped by the video writer: {result['video_frames_dropped_by_writer']} (target 0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
