"""``realtime-face record``: a guided, recorded rehabilitation session.

Runs the live pipeline (the stages of ``realtime-face run``) and records a session folder
(``docs/formats.md``, "Session folder") while a protocol guides the exercises. Recording starts at once
and ends when the protocol is complete, the input ends, or on Ctrl-C / SIGTERM; in the window, ``r``
stops and starts a new recording. Without a display the command runs headless and logs the prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from realtime.errors import BadInputError, OutputError

log = logging.getLogger(__name__)

EXIT_CODES_HELP = """exit codes:
  0  session recorded (complete, or stopped early by the input ending / Ctrl-C)
  2  bad input: camera/video cannot be opened, unknown protocol, invalid subject id
  3  the session folder cannot be written (or writing failed during the session: the folder keeps
     everything written before; `realtime-face session repair DIR` finalises it)
"""


def register(subparsers: Any) -> None:
    from realtime.cli.run import add_input_arguments

    p = subparsers.add_parser(
        "record",
        help="record a guided exercise session",
        description="Guide a rehabilitation exercise protocol and record the session (video, audio, "
                    "per-frame table, manifest) into a new folder under --out.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(p)
    p.add_argument("--protocol", default="palsy-basic", metavar="NAME|FILE.toml",
                   help="a shipped protocol name or a protocol file (default palsy-basic)")
    p.add_argument("--out", default="sessions", metavar="DIR", help="parent folder of session folders")
    p.add_argument("--subject", metavar="ID", help="pseudonymous subject id (never a name); default random")
    p.add_argument("--no-audio", action="store_true", help="do not record the microphone")
    p.add_argument("--headless", action="store_true", help="no window (automatic without a display)")
    p.add_argument("--max-seconds", type=float, metavar="S", help="stop recording after S seconds")
    try:  # --fov / --calibration / --no-fit ...: the same fitting options as `run`
        from realtime.cli.reconstruct import add_fit_arguments
    except ImportError:
        pass
    else:
        add_fit_arguments(p)
    p.set_defaults(func=main)


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
    """SIGTERM ends the session like the end of the input: finalised, nothing lost."""
    flag = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        flag.set()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _window_class(display: bool) -> Any:
    """The live window, or None (headless, with a log line) where there is no display or no window."""
    if not display:
        log.info("no display: recording headless")
        return None
    try:
        from realtime.window import LiveWindow
    except ImportError as exc:
        log.info("no live window (%s): recording headless", exc)
        return None
    return LiveWindow


def _run_window(window_class: Any, pipeline: Any, controller: Any) -> None:
    """The window on the main thread; it shows the controller's HUD lines when it supports overlays."""
    pipeline.start()
    window = window_class(pipeline)
    add_overlay = getattr(window, "add_text_overlay", None)
    if add_overlay is not None:
        add_overlay(controller.hud_lines)
    window.run()


def main(args: argparse.Namespace) -> int:
    from realtime.cli.run import build_source, build_stages, has_display, table_columns
    from realtime.landmarks import quiet_native_logs
    from realtime.pipeline import Pipeline
    from realtime.session.controller import RecordingController, intrinsics_from_stages
    from realtime.session.protocol import load_protocol
    from realtime.session.recorder import STATE_FAILED, RecorderConfig, check_subject_id

    if args.image is not None:
        raise BadInputError("record needs a camera (--camera N) or a video (--video PATH)")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise BadInputError("--max-seconds must be positive")
    protocol = load_protocol(args.protocol)
    subject = check_subject_id(args.subject)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from None
    window_class = None if args.headless else _window_class(has_display())
    headless = window_class is None

    with contextlib.ExitStack() as stack:
        source = build_source(args)
        source.open()
        stack.callback(source.close)
        quiet_native_logs()  # MediaPipe's native log lines go to debug logging
        stages = build_stages(args, source)
        for stage in stages:
            stack.callback(stage.close)
        intrinsics = intrinsics_from_stages(stages, source.width, source.height)
        camera = f"camera {args.camera}" if args.camera is not None else str(args.video)
        live = bool(source.live or source.latest_only)  # a camera, a stream or a --realtime file
        columns = table_columns(args, stages)

        def make_config() -> RecorderConfig:
            return RecorderConfig(out, subject_id=subject, protocol=protocol, audio=not args.no_audio,
                                  intrinsics=intrinsics, source=camera, columns=columns,
                                  video_backpressure=not live)

        controller = RecordingController(make_config)
        controller.start_now()  # the folder is created (or fails, exit 3) before any frame is processed
        stack.pop_all()
    pipeline = Pipeline(source, stages, [controller])
    t0 = time.monotonic()
    with pipeline, _sigterm_flag() as terminate:
        pipeline.start()
        if headless:
            try:
                while not pipeline.finished and not terminate.is_set():
                    time.sleep(0.05)
                    if pipeline.stats.frames > 0 and controller.idle:
                        break  # protocol complete, recording failed or could not start
                    if args.max_seconds is not None and time.monotonic() - t0 >= args.max_seconds:
                        break
            except KeyboardInterrupt:
                log.info("interrupted: finishing the session")
            finally:
                pipeline.stop()
        else:
            try:
                _run_window(window_class, pipeline, controller)
            finally:
                pipeline.stop()
    # pipeline.close() closed the controller: every recording is finalised.
    stats = pipeline.stats
    failed = None
    for rec in controller.sessions:
        st = rec.status()
        print(f"session {st.folder}: {st.state}, {st.frames} frames, {st.elapsed_s:.1f} s"
              + (f" ({st.message})" if st.message else ""))
        if st.state == STATE_FAILED:
            failed = st
    print(f"processed {stats.frames} frames ({stats.frames_with_face} with a face) in {stats.wall_s:.1f} s")
    if not controller.sessions and controller.message:
        raise OutputError(controller.message)
    if failed is not None:
        raise OutputError(f"{failed.message}; what was recorded is in {failed.folder} "
                          f"(finalise with: realtime-face session repair {failed.folder})")
    if stats.source_error is not None:
        raise stats.source_error
    return 0
