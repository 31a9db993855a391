"""``realtime-face bench --video PATH``: tracking speed of the app, and its overhead over bare MediaPipe.

Two measurements in one run:

1. End to end: the real pipeline on the file (decode thread + processing thread), every frame, as fast
   as possible: per-stage median/p95 ms, FPS, dropped frames.
2. Overhead: the first ``--overhead-frames`` frames are decoded into memory once; then bare MediaPipe
   (``mp.solutions.face_mesh.FaceMesh``, refine_landmarks, tracking mode) and the app's pipeline (memory
   source -> LandmarkStage) process the same frames, alternating for ``--rounds`` rounds so that machine
   load affects both alike. Decode is excluded on both sides.

   Overhead = median app cycle / median bare ``FaceMesh.process`` call - 1, where the app cycle is
   everything the processing thread does per frame (hand-off, result, tracking, landmark conversion,
   statistics). Medians, because on a shared machine the means follow other processes' bursts; the
   wall-clock means (frames / total time) are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from realtime.errors import BadInputError

TARGET_OVERHEAD_PCT = 20.0
TARGET_FPS = 120.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure tracking speed on a video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--video", required=True, metavar="PATH", help="video file to benchmark on")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--max-frames", type=int, metavar="N", help="end-to-end run: stop after N frames")
    p.add_argument(
        "--overhead-frames",
        type=int,
        default=150,
        metavar="N",
        help="frames held in memory for the overhead comparison (default 150)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating bare/app rounds (default 3)")
    p.add_argument("--max-faces", type=int, default=1, metavar="N")
    p.set_defaults(func=main)


def _decode_frames(path: str, n: int) -> list[np.ndarray]:
    from realtime.capture import VideoSource

    frames: list[np.ndarray] = []
    with VideoSource(path) as src:
        while len(frames) < n:
            item = src.get(timeout=30.0)
            if item is None:
                if src.ended:
                    break
                continue
            frames.append(item[0].image)
    if not frames:
        raise BadInputError(f"no frames decoded from {path}")
    return frames


def bare_facemesh(frames: list[np.ndarray], max_faces: int) -> tuple[float, list[float], int]:
    """Bare ``FaceMesh.process`` on every frame: (wall ms/frame, per-call ms, frames with a face)."""
    import mediapipe as mp

    per_call = []
    found = 0
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True
    ) as fm:
        fm.process(frames[0])  # warm-up, like the app's tracker does at construction
        fm.reset()
        t0 = time.perf_counter()
        for image in frames:
            t = time.perf_counter()
            r = fm.process(image)
            per_call.append((time.perf_counter() - t) * 1000.0)
            found += bool(r.multi_face_landmarks)
        wall = time.perf_counter() - t0
    return wall * 1000.0 / len(frames), per_call, found


def app_pipeline(frames: list[np.ndarray], max_faces: int, fps: float) -> tuple[float, Any]:
    """The app's pipeline on in-memory frames: (wall ms/frame, stats)."""
    from realtime.capture import ArraySource
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline

    stage = LandmarkStage(max_faces=max_faces)
    with Pipeline(ArraySource(frames, fps=fps), [stage]) as pipeline:
        t0 = time.perf_counter()
        stats = pipeline.run()
        wall = time.perf_counter() - t0
    return wall * 1000.0 / len(frames), stats


def end_to_end(path: str, max_faces: int, max_frames: int | None) -> Any:
    from realtime.capture import VideoSource
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline

    source = VideoSource(path)
    source.open()
    with Pipeline(source, [LandmarkStage(max_faces=max_faces)], max_frames=max_frames) as pipeline:
        pipeline.run()
    return pipeline.stats, source


def main(args: argparse.Namespace) -> int:
    from realtime.landmarks import quiet_native_logs

    quiet_native_logs()
    if not os.path.isfile(args.video):
        raise BadInputError(f"video not found: {args.video}")
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure: say how much
    stats, source = end_to_end(args.video, args.max_faces, args.max_frames)
    if stats.source_error is not None:
        raise stats.source_error

    frames = _decode_frames(args.video, max(1, args.overhead_frames))
    fps = source.fps or 30.0
    bare_wall, app_wall, bare_calls, app_cycle, app_stage = [], [], [], [], []
    bare_found = app_found = 0
    for _ in range(max(1, args.rounds)):
        b, calls, bare_found = bare_facemesh(frames, args.max_faces)
        a, app_stats = app_pipeline(frames, args.max_faces, fps)
        bare_wall.append(b)
        bare_calls.extend(calls)
        app_wall.append(a)
        app_cycle.append(app_stats.stages["cycle"].median_ms)
        app_stage.append(app_stats.stages["landmarks"].median_ms)
        app_found = app_stats.frames_with_face
    bare = float(np.median(bare_calls))
    app = float(np.median(app_cycle))
    overhead_pct = (app / bare - 1.0) * 100.0
    wall_overhead_pct = (float(np.median(app_wall)) / float(np.median(bare_wall)) - 1.0) * 100.0

    report = {
        "video": args.video,
        "resolution": f"{source.width}x{source.height}",
        "cpu_count": os.cpu_count(),
        "load_avg_1min_at_start": round(load_at_start, 2),
        "end_to_end": {
            "frames": stats.frames,
            "container_frames": source.stats.expected,
            "frames_with_face": stats.frames_with_face,
            "dropped": stats.dropped,
            "wall_s": round(stats.wall_s, 3),
            "fps": round(stats.fps, 1),
            "stages": {
                k: {
                    "median_ms": round(v.median_ms, 3),
                    "p95_ms": round(v.p95_ms, 3),
                    "mean_ms": round(v.mean_ms, 3),
                }
                for k, v in stats.stages.items()
            },
        },
        "overhead": {
            "frames": len(frames),
            "rounds": max(1, args.rounds),
            "bare_facemesh_call_median_ms": round(bare, 3),
            "app_cycle_median_ms": round(app, 3),
            "app_landmarks_stage_median_ms": round(float(np.median(app_stage)), 3),
            "overhead_pct": round(overhead_pct, 1),
            "bare_facemesh_wall_ms_per_frame": round(float(np.median(bare_wall)), 3),
            "app_wall_ms_per_frame": round(float(np.median(app_wall)), 3),
            "wall_overhead_pct": round(wall_overhead_pct, 1),
            "bare_frames_with_face": bare_found,
            "app_frames_with_face": app_found,
        },
        "targets": {"overhead_pct_max": TARGET_OVERHEAD_PCT, "fps_min_720p": TARGET_FPS},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    e = report["end_to_end"]
    print(f"video {args.video} ({report['resolution']}), {os.cpu_count()} CPUs, load {load_at_start:.1f}")
    print(
        f"end to end: {e['frames']} frames ({e['frames_with_face']} with a face), {e['dropped']} dropped,"
        f" {e['fps']} fps"
    )
    print(f"{'stage':<12} {'median ms':>10} {'p95 ms':>10}")
    for name, v in e["stages"].items():
        print(f"{name:<12} {v['median_ms']:>10.2f} {v['p95_ms']:>10.2f}")
    o = report["overhead"]
    print(
        f"overhead on {o['frames']} in-memory frames, {o['rounds']} rounds: bare FaceMesh"
        f" {o['bare_facemesh_call_median_ms']:.2f} ms/frame, app {o['app_cycle_median_ms']:.2f} ms/frame"
        f" (medians) -> {o['overhead_pct']:+.1f} % (target <= {TARGET_OVERHEAD_PCT:.0f} %);"
        f" wall-clock means {o['bare_facemesh_wall_ms_per_frame']:.2f} vs {o['app_wall_ms_per_frame']:.2f} ms"
        f" -> {o['wall_overhead_pct']:+.1f} %"
    )
    return 0
