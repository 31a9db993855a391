#!/usr/bin/env python
"""Benchmark: what session recording costs the live pipeline at 720p / 30 FPS.

Runs the application's own pipeline (the stages ``realtime-face run`` builds) on
``../shared/data/videos/talking_720p.mp4`` paced at its frame rate (``--realtime``, like a camera), once
without and once with a ``SessionRecorder`` sink (H.264 fragmented MP4 + Parquet chunks + manifest; no
audio device here), alternating ``--repeats`` times. Reports the per-frame processing time (all stages +
sinks, the pipeline's ``frame`` timing) for both, the overhead in percent (target <= 15 %), and what the
recorder wrote: video frames written/dropped by the writer (target 0 dropped) and table rows.

    .venv/bin/python tools/bench_recording.py [--repeats 2] [--video PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")


def build(video: str) -> tuple[Any, list[Any]]:
    from realtime.cli import run

    parser = argparse.ArgumentParser()
    run.register(parser.add_subparsers())
    args = parser.parse_args(["run", "--video", video, "--realtime", "--headless"])
    build_source, build_stages = run.build_source, run.build_stages
    source = build_source(args)
    source.open()
    return source, build_stages(args, source)


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

    source, stages = build(video)
    sinks: list[Any] = []
    recorder = None
    if record_dir is not None:
        recorder = SessionRecorder(RecorderConfig(record_dir, subject_id="bench",
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", help="720p input video (default: ../shared/data/videos/talking_720p.mp4)")
    ap.add_argument("--repeats", type=int, default=2, help="baseline/recording pairs (default 2)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from realtime.paths import shared_dir

    video = args.video or str(shared_dir() / "data" / "videos" / "talking_720p.mp4")
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
