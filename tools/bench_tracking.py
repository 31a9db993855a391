"""Tracking speed benchmark: the same as ``realtime-face bench`` (per-stage median/p95 ms, end-to-end FPS,
dropped frames, and the app's overhead over bare MediaPipe FaceMesh measured in the same run).

    .venv/bin/python tools/bench_tracking.py [--video PATH] [--json]

Defaults to ``../shared/data/videos/talking_720p.mp4`` (targets: >= 120 FPS at 720p, overhead <= 20 %).
"""

from __future__ import annotations

import sys

from realtime.cli import main
from realtime.paths import shared_dir


def run(argv: list[str]) -> int:
    if "--video" not in argv:
        argv = ["--video", str(shared_dir() / "data" / "videos" / "talking_720p.mp4"), *argv]
    return main(["bench", *argv])


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
