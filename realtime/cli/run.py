"""``realtime-face [run]``: live tracking from a camera, video file/URL or image(s).

The pipeline is assembled by three small functions so that later modules add theirs with a short edit:
``build_stages`` (tracking, then fitting, smoothing, engines…), ``build_sinks`` (table export, annotated
video, recorder…) and ``table_columns`` (the per-frame table's columns).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from typing import Any

from realtime.errors import UserError

log = logging.getLogger(__name__)

EXIT_CODES_HELP = """exit codes:
  0  done
  1  other error (e.g. no display without --headless)
  2  bad input: missing/unreadable/corrupt file, unreachable URL, camera not found or lost
     (a truncated file is processed up to where it breaks, outputs are written, then exit 2)
  3  output cannot be written (--output / --export), checked before processing starts
  4  a model/engine file is missing
  130  interrupted (Ctrl+C, SIGTERM, SIGHUP): the outputs written so far are closed and complete

"""


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--camera", type=int, metavar="N", help="camera index (default 0 when no input is given)"
    )
    src.add_argument("--video", metavar="PATH|URL", help="video file or stream URL (decoded with FFmpeg)")
    src.add_argument("--image", metavar="PATH", help="an image file or a folder of images")
    p.add_argument("--width", type=int, help="camera: requested capture width")
    p.add_argument("--height", type=int, help="camera: requested capture height")
    p.add_argument("--fps", type=float, help="camera: requested frame rate")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="video files: pace at the file's frame rate and drop frames when processing is late"
        " (default: every frame, as fast as possible)",
    )
    p.add_argument("--max-faces", type=int, default=1, metavar="N", help="faces to track (default 1)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="track faces live (default command)",
        description="Track faces from a camera, video or images; show them live or process headless.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(p)
    p.add_argument("--headless", action="store_true", help="no window: process and write outputs only")
    p.add_argument("--output", metavar="OUT.mp4", help="write an annotated video (H.264)")
    p.add_argument("--export", metavar="DIR", help="write the per-frame table DIR/frames.parquet")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    p.add_argument("--refine", metavar="DIR",
                   help="refine keyframes and snapshots (s key) in a background worker; exports go to DIR")
    p.add_argument("--no-identity-refine", action="store_true",
                   help="keep the landmark-only identity lock (default: once the identity locks, a background "
                        "process refines it against the shading of a front and two side frames and the live "
                        "fit adopts the result)")
    from realtime.cli.reconstruct import add_fit_arguments
    from realtime.engines.options import add_engine_arguments

    add_fit_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=main)


def build_source(args: argparse.Namespace) -> Any:
    from realtime.capture import open_source

    camera = args.camera
    if camera is None and args.video is None and args.image is None:
        camera = 0
    return open_source(
        camera=camera,
        video=args.video,
        image=args.image,
        realtime=args.realtime,
        width=args.width,
        height=args.height,
        fps=args.fps,
    )


def build_stages(args: argparse.Namespace, source: Any) -> list[Any]:
    """The per-frame stages in order. Images are unrelated frames: track them in static mode (and no
    background identity refinement: nothing locks an identity across unrelated images)."""
    from realtime.capture import ImageSource
    from realtime.cli.reconstruct import fit_stages_from_args
    from realtime.engines.options import engine_stages_from_args
    from realtime.landmarks import LandmarkStage

    static = isinstance(source, ImageSource)
    stages = [LandmarkStage(max_faces=args.max_faces, static=static),
              *engine_stages_from_args(args), *fit_stages_from_args(args)]
    fit = next((i for i, s in enumerate(stages) if getattr(s, "name", "") == "fit"), None)
    if fit is not None and not static and not getattr(args, "no_identity_refine", False):
        from realtime.identity_refine import IdentityRefineStage

        # right after the fit: adopts refined identities between frames (realtime.identity_refine)
        stages.insert(fit + 1, IdentityRefineStage(stages[fit]))
    return stages


def table_columns(args: argparse.Namespace, stages: list[Any]) -> list[Any]:
    from realtime.export import frame_columns

    names = next((s.model.expression_names for s in stages if s.name == "fit"), None)
    return frame_columns([s.name for s in stages], expression_names=names)


def check_outputs(args: argparse.Namespace) -> None:
    """Cheap early checks of every output destination (``OutputError``, exit 3)."""
    if args.output:
        from realtime.videoout import check_output_file

        check_output_file(args.output)
    if args.export:
        from realtime.export import check_output_dir

        check_output_dir(args.export)
    if getattr(args, "refine", None):
        from realtime.export import check_output_dir

        check_output_dir(args.refine)


def build_sinks(args: argparse.Namespace, source: Any, stages: list[Any]) -> list[Any]:
    """Output sinks; each checks its destination when built (``OutputError``, exit 3)."""
    sinks: list[Any] = []
    if args.export:
        from realtime.export import ParquetSink

        meta = {
            "source": source.description,
            "width": source.width,
            "height": source.height,
            "fps": source.fps,
            "stages": [s.name for s in stages],
        }
        sinks.append(ParquetSink(args.export, table_columns(args, stages), meta))
    if args.output:
        from realtime.overlay import mesh_overlay_for
        from realtime.videoout import VideoWriterSink

        # With fits, the video shows the fitted face in place and a 3D view (rendered headless, EGL).
        sinks.append(VideoWriterSink(args.output, fps=source.fps, draw=mesh_overlay_for(stages)))
    if getattr(args, "refine", None):
        from realtime.refine.worker import build_refine_sink

        if not any(getattr(s, "name", "") == "fit" for s in stages):
            raise UserError("--refine needs the fit stage (drop --no-fit)")
        # A batch run finishes the keyframes it queued; a live window that quits cancels them.
        sinks.append(build_refine_sink(stages, args.refine, finish_pending_s=120.0 if args.headless else 0.0))
    if not args.headless:
        # the window's r key starts/stops a free session recording into ./sessions (realtime.session)
        from realtime.session.controller import free_recording_sink

        sinks.append(free_recording_sink(source, stages, table_columns(args, stages)))
    return sinks


class ProgressSink:
    """Logs progress every few seconds for long headless runs."""

    def __init__(self, total: int | None, every_s: float = 5.0) -> None:
        self.total = total
        self.every_s = every_s
        self.count = 0
        self._t0 = time.perf_counter()
        self._next = self._t0 + every_s

    def consume(self, result: Any) -> None:
        self.count += 1
        now = time.perf_counter()
        if now >= self._next:
            self._next = now + self.every_s
            of = f"/{self.total}" if self.total else ""
            log.info("frame %d%s (%.1f fps)", self.count, of, self.count / (now - self._t0))

    def close(self) -> None:
        pass


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def load_window_class() -> Any:
    """``realtime.window.LiveWindow``, or a one-line error when the window cannot work here."""
    if not has_display():
        raise UserError("no display; use --headless")
    try:
        from realtime.window import LiveWindow
    except ImportError as exc:
        raise UserError(f"the live window is not available ({exc}); use --headless") from None
    return LiveWindow


def run_window(window_class: Any, pipeline: Any, args: argparse.Namespace) -> None:
    """Show the live window on the main thread while the pipeline processes in the background.

    ``LiveWindow(pipeline)`` polls ``pipeline.latest()``; its ``run()`` returns when the window closes.
    """
    pipeline.start()
    window = window_class(pipeline)
    window.run()


def main(args: argparse.Namespace) -> int:
    from realtime.pipeline import interrupt_on_termination

    # Ctrl+C, kill (SIGTERM) or a closed terminal (SIGHUP) stop the run; the sinks still close their files.
    with interrupt_on_termination():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from realtime.landmarks import quiet_native_logs
    from realtime.pipeline import Pipeline

    quiet_native_logs()
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1", exit_code=2)
    window_class = None if args.headless else load_window_class()  # before anything is opened
    with contextlib.ExitStack() as stack:
        source = build_source(args)
        source.open()  # bad paths / missing cameras fail here, before anything slow
        stack.callback(source.close)
        check_outputs(args)  # unwritable outputs fail before models load
        stages = build_stages(args, source)
        for stage in stages:
            stack.callback(stage.close)
        sinks = build_sinks(args, source, stages)
        for sink in sinks:
            stack.callback(sink.close)
        if args.headless:
            sinks.append(ProgressSink(source.stats.expected))
        stack.pop_all()  # from here on the pipeline owns (and closes) source, stages and sinks
    pipeline = Pipeline(source, stages, sinks, max_frames=args.max_frames)
    interrupted = False
    try:
        with pipeline:
            if args.headless:
                pipeline.run()
            else:
                try:
                    run_window(window_class, pipeline, args)
                finally:
                    pipeline.stop()
    except KeyboardInterrupt:
        interrupted = True
    stats = pipeline.stats
    extra = f", {stats.dropped} dropped" if stats.dropped else ""
    extra += ", interrupted" if interrupted else ""
    print(
        f"processed {stats.frames} frames ({stats.frames_with_face} with a face){extra}"
        f" in {stats.wall_s:.1f} s ({stats.fps:.1f} fps)"
    )
    for sink in sinks:
        path = getattr(sink, "path", None)
        if path is not None:
            print(f"wrote {path}")
    if interrupted:
        raise KeyboardInterrupt
    if stats.source_error is not None:
        raise stats.source_error
    return 0
