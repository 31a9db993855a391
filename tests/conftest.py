"""Shared fixtures: the shared data folder (real videos, photos, the ICT face model) and the face model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# MediaPipe/TFLite log through glog; keep test output readable.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from realtime.paths import shared_dir

VIDEO_NAMES = ("talking_720p.mp4", "wink_blink_gaze.mp4", "expressions_cheekpuff_pucker_eyeroll.mp4")
IMAGE_NAMES = ("lfpw_image_0010", "einstein", "takeo")


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "data").is_dir():
        pytest.fail(f"shared data folder not found at {path} (set REALTIME_FACE_SHARED)")
    return path


@pytest.fixture(scope="session")
def videos_dir(shared: Path) -> Path:
    return shared / "data" / "videos"


@pytest.fixture(scope="session")
def images_dir(shared: Path) -> Path:
    return shared / "data" / "images"


@pytest.fixture(scope="session")
def talking_video(videos_dir: Path) -> Path:
    return videos_dir / "talking_720p.mp4"


@pytest.fixture(scope="session")
def talking_tracks(talking_video: Path) -> list:
    """Real MediaPipe (video mode, iris measured) on the first 60 frames of talking_720p.mp4: one FaceTrack
    per frame (every frame has the face)."""
    import av

    from realtime.landmarks import FaceMeshTracker

    tracks = []
    with av.open(str(talking_video)) as box, FaceMeshTracker(static=False) as tracker:
        for i, frame in enumerate(box.decode(video=0)):
            if i >= 60:
                break
            found = tracker.track(frame.to_ndarray(format="rgb24"))
            assert found, f"MediaPipe lost the face in frame {i}"
            tracks.append(found[0])
    return tracks


@pytest.fixture(scope="session")
def face_model():
    from realtime.facemodel import load_face_model

    return load_face_model()


@pytest.fixture(scope="session")
def xvfb_server():
    """One private Xvfb server for the whole test run; yields its DISPLAY name.

    Session-scoped on purpose: pyglet keeps its X connection for the life of the process, and Xlib exits
    the process when that server goes away, so in-process window tests must all share one server.
    """
    import shutil
    import subprocess
    import time

    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.fail("Xvfb is not installed (Debian package xvfb; tools/bootstrap.sh installs it)")
    number = next(n for n in range(140, 400) if not Path(f"/tmp/.X{n}-lock").exists()
                  and not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen([exe, f":{number}", "-screen", "0", "1600x900x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("Xvfb did not start")
        time.sleep(0.05)
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def xvfb_display(xvfb_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """DISPLAY points at the shared Xvfb for this test only (other tests must see no display)."""
    monkeypatch.setenv("DISPLAY", xvfb_server)
    return xvfb_server
