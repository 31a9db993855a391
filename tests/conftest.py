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
def face_model():
    from realtime.facemodel import load_face_model

    return load_face_model()
