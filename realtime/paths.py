"""Where the application finds its assets, the shared data folder and its cache."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

_PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE_DIR.parent

SHARED_ENV = "REALTIME_FACE_SHARED"
CACHE_ENV = "REALTIME_FACE_CACHE"


def _asset_dir(name: str) -> Path:
    """An asset folder (``shaders``, ``engines``): inside an installed wheel, else the source tree."""
    packaged = _PACKAGE_DIR / "_assets" / name
    if packaged.is_dir():
        return packaged
    return _SOURCE_ROOT / name


def shaders_dir() -> Path:
    return _asset_dir("shaders")


def engines_dir() -> Path:
    return _asset_dir("engines")


def data_dir() -> Path:
    """Small data files that ship with the package (correspondence tables, protocols)."""
    return _PACKAGE_DIR / "data"


def shared_dir() -> Path:
    """The shared data folder: ``$REALTIME_FACE_SHARED`` or ``../shared`` beside the source tree / cwd."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env).expanduser().resolve()
    for candidate in (_SOURCE_ROOT.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"):
        if candidate.is_dir():
            return candidate.resolve()
    return (_SOURCE_ROOT.parent / "shared").resolve()


def ensure_writable_dir(path: str | Path, probe_name: str = ".write-test") -> Path:
    """Create ``path`` (a folder) and prove it is writable; ``OutputError`` (exit 3) otherwise."""
    from realtime.errors import OutputError

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / probe_name
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to {p}: {exc.strerror or exc}") from None
    return p


def cache_dir() -> Path:
    """Per-user cache (converted models, TensorRT engines); ``$REALTIME_FACE_CACHE`` overrides it."""
    env = os.environ.get(CACHE_ENV)
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("realtime-face"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Where ``realtime-face models install`` puts face models (under the user data dir)."""
    env = os.environ.get("REALTIME_FACE_MODELS")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("realtime-face")) / "models"
    return path
