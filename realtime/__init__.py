"""realtime-face: real-time 3D face reconstruction from a webcam."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("realtime-face")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
