#!/usr/bin/env python3
"""Rendering benchmark: time of the composed views at 1280x720 and headless end-to-end FPS with rendering.

1. Render time: real frames of ``talking_720p.mp4`` with their real fits (MediaPipe + landmark fit, computed
   first, not timed); each frame is drawn as the ``--output`` video draws it (fitted face over the frame +
   3D orbit inset + landmarks, read back to numpy), on Mesa llvmpipe through EGL. Median wall time, process
   CPU time (all threads, llvmpipe's raster threads included) and the calling thread's CPU time per frame,
   with the parts (camera overlay alone, 3D view alone) and the cost of 4x MSAA.
   Baseline: the 2D annotations the video had before (``realtime.annotate``: landmark dots and text).
2. End to end: ``realtime-face run --headless --video talking_720p.mp4 --output OUT.mp4`` equivalent
   (decode, MediaPipe, fit, drawing and H.264 encoding on the video writer's threads), FPS over the whole
   file and process CPU per frame, against the same run whose video only has the 2D annotations.

The machine is shared: every figure is printed with the load average (1 min) at the time it was taken, and
``--repeat`` takes them several times. Wall times scale with the load; CPU times much less (on 2 cores,
60 FPS leaves 33 ms of CPU per frame for everything).

    .venv/bin/python tools/bench_render.py [--frames 40] [--repeat 1] [--json] [--skip-e2e] [--png OUT.png]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# MediaPipe logs through glog.
os.environ.setdefault("GLOG_minloglevel", "2")


def _fits(video: Path, n: int) -> list[Any]:
    """(frame result with fit) for the first ``n`` frames of ``video``."""
    from realtime.capture import VideoSource
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.pipeline import Pipeline

    results: list[Any] = []

    class Keep:
        def consume(self, r: Any) -> None:
            results.append(r)

        def close(self) -> None:
            pass

    with Pipeline(VideoSource(str(video)), [LandmarkStage(), FitStage()], [Keep()], max_frames=n) as p:
        p.run()
    return [r for r in results if r.faces and r.faces[0].fit is not None]


def _timed(fn: Any, items: list[Any], warmup: int = 15) -> tuple[float, float, float, float]:
    """Median wall, process-CPU and calling-thread CPU milliseconds of ``fn(item)`` over ``items`` (after
    warm-up calls), and the load average when done."""
    for item in items[:warmup]:
        fn(item)
    wall, cpu, thread = [], [], []
    for item in items:
        t0, c0, th0 = time.perf_counter(), time.process_time(), time.thread_time()
        fn(item)
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
        thread.append((time.thread_time() - th0) * 1000.0)
    return statistics.median(wall), statistics.median(cpu), statistics.median(thread), os.getloadavg()[0]


def bench_render(results: list[Any], model: Any, intrinsics_for_size: Any,
                 png: Path | None = None) -> dict[str, Any]:
    from realtime.annotate import annotate
    from realtime.overlay import MeshDisplay, ViewStyle, compose_views, orbit_view_params
    from realtime.render import OffscreenRenderer

    display = MeshDisplay.from_model(model)
    style = ViewStyle()
    h, w = results[0].frame.image.shape[:2]
    intr = intrinsics_for_size(w, h)
    out = np.empty((h, w, 3), np.uint8)
    rows: dict[str, Any] = {}

    def baseline(r: Any) -> None:
        canvas = r.frame.image.copy()
        annotate(canvas, r)

    rows["2D annotations only (baseline)"] = _timed(baseline, results)
    for samples in (4, 0):
        with OffscreenRenderer(w, h, samples=samples) as renderer:
            def composed(r: Any, renderer: OffscreenRenderer = renderer) -> None:
                lm = [f.track.landmarks_px for f in r.faces]
                compose_views(renderer, r.frame.image, r.faces[0].fit.vertices_mm, display, intr, style, lm,
                              out=out)

            # The parts as compose_views draws them: simplified meshes shaded with the full ones' normals.
            def overlay(r: Any, renderer: OffscreenRenderer = renderer) -> None:
                renderer.render(r.faces[0].fit.vertices_mm, display.overlay_simplified, intr, "lit",
                                background=r.frame.image, opacity=style.overlay_opacity,
                                specular=style.specular, points_px=r.faces[0].track.landmarks_px,
                                normal_triangles=display.view_triangles, out=out)

            def orbit(r: Any, renderer: OffscreenRenderer = renderer) -> None:
                v = r.faces[0].fit.vertices_mm
                side = round(style.inset_fraction * h)
                renderer.render(v, display.view_simplified, normal_triangles=display.view_triangles,
                                **orbit_view_params(v, (w - side, h - side, side, side), style), out=out)

            msaa = f"{samples}x MSAA" if samples else "no MSAA"
            rows[f"overlay + 3D view, {msaa} (as --output)"] = _timed(composed, results)
            rows[f"  camera overlay alone, {msaa}"] = _timed(overlay, results)
            rows[f"  3D view alone ({round(style.inset_fraction * h)} px), {msaa}"] = _timed(orbit, results)
            if png is not None and not samples:
                from PIL import Image

                composed(results[len(results) // 2])
                png.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out).save(png)
    return {name: {"median_wall_ms": round(wall, 2), "median_cpu_ms": round(cpu, 2),
                   "median_thread_cpu_ms": round(thread, 2), "load_average": round(load, 1)}
            for name, (wall, cpu, thread, load) in rows.items()}


def bench_end_to_end(video: Path, model: Any) -> dict[str, Any]:
    from realtime.capture import VideoSource
    from realtime.fitting import FitStage
    from realtime.landmarks import LandmarkStage
    from realtime.overlay import MeshOverlay
    from realtime.pipeline import Pipeline
    from realtime.videoout import VideoWriterSink

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, with_mesh in (("2D annotations only (baseline)", False), ("with mesh rendering", True)):
            fit = FitStage(model)
            draw = MeshOverlay(model, fit.intrinsics.for_size) if with_mesh else None
            source = VideoSource(str(video))
            sink = VideoWriterSink(Path(tmp) / f"{with_mesh}.mp4", fps=30.0, draw=draw)
            t0, c0 = time.perf_counter(), time.process_time()
            with Pipeline(source, [LandmarkStage(), fit], [sink]) as p:
                stats = p.run()
            wall = time.perf_counter() - t0   # includes the writer draining its queue at close
            cpu = time.process_time() - c0
            out[label] = {"frames": stats.frames, "pipeline_fps": round(stats.fps, 2),
                          "end_to_end_fps": round(stats.frames / wall, 2),
                          "cpu_ms_per_frame": round(1000.0 * cpu / max(stats.frames, 1), 1),
                          "load_average": round(os.getloadavg()[0], 1),
                          "stage_median_ms": {k: round(v.median_ms, 2) for k, v in stats.stages.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=40, help="frames timed for the render time")
    parser.add_argument("--repeat", type=int, default=1, help="take every figure this many times")
    parser.add_argument("--skip-e2e", action="store_true", help="only the render time")
    parser.add_argument("--png", type=Path, help="write one composed frame (no MSAA, as --output) here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    from realtime.facemodel import load_face_model
    from realtime.fitting import IntrinsicsResolver
    from realtime.paths import shared_dir

    video = shared_dir() / "data" / "videos" / "talking_720p.mp4"
    model = load_face_model()
    results = _fits(video, args.frames)
    if len(results) < 5:
        print(f"only {len(results)} fitted frames in {video}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "video": video.name, "resolution": f"{results[0].frame.width}x{results[0].frame.height}",
        "frames_timed": len(results), "cpus": os.cpu_count(),
        "render": [bench_render(results, model, IntrinsicsResolver().for_size, args.png if i == 0 else None)
                   for i in range(max(1, args.repeat))],
    }
    if not args.skip_e2e:
        report["end_to_end"] = [bench_end_to_end(video, model) for _ in range(max(1, args.repeat))]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"render time at {report['resolution']} ({report['frames_timed']} real frames with fits, "
          f"Mesa llvmpipe via EGL, {report['cpus']} CPUs); CPU = all threads, thread = the calling thread")
    for i, render in enumerate(report["render"]):
        print(f"\nrun {i + 1}/{len(report['render'])}")
        print(f"{'':50s} {'wall ms':>8s} {'CPU ms':>7s} {'thread ms':>9s} {'load':>5s}")
        for name, row in render.items():
            print(f"{name:50s} {row['median_wall_ms']:8.2f} {row['median_cpu_ms']:7.2f} "
                  f"{row['median_thread_cpu_ms']:9.2f} {row['load_average']:5.1f}")
    for i, e2e in enumerate(report.get("end_to_end", [])):
        print(f"\nheadless end to end (decode, MediaPipe, fit, draw, H.264) over the whole video, "
              f"run {i + 1}/{len(report['end_to_end'])}")
        print(f"{'':32s} {'frames':>6s} {'fps':>6s} {'CPU ms/frame':>12s} {'load':>5s}  stage medians (ms)")
        for name, row in e2e.items():
            stages = ", ".join(f"{k} {v:.1f}" for k, v in row["stage_median_ms"].items())
            print(f"{name:32s} {row['frames']:6d} {row['end_to_end_fps']:6.1f} {row['cpu_ms_per_frame']:12.1f} "
                  f"{row['load_average']:5.1f}  {stages}")
    if args.png is not None:
        print(f"\ncomposed frame: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
