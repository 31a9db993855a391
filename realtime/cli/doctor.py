"""``realtime-face doctor``: what this machine offers (versions, accelerators, cameras, models, display).

Every probe is bounded in time (GPU and EGL checks run in subprocesses with timeouts, cameras are probed
in a worker thread) so that a broken driver cannot hang the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

PACKAGES = (
    "mediapipe",
    "numpy",
    "opencv-contrib-python",
    "av",
    "onnxruntime",
    "onnxruntime-gpu",
    "moderngl",
    "pyglet",
    "pyarrow",
    "scipy",
    "trimesh",
    "sounddevice",
    "tensorrt",
)
REQUIRED = ("mediapipe", "numpy", "av", "onnxruntime", "pyarrow")
PROBE_TIMEOUT_S = 10.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the installation and this machine",
        description="Report versions, execution providers, GPU/TensorRT, cameras, models,"
        " EGL and window support. Exit 1 when a required part is broken.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-camera", action="store_true", help="skip the camera probe")
    p.set_defaults(func=main)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    except OSError as exc:
        return False, str(exc)
    out = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return proc.returncode == 0, (out[-1] if out else f"exit {proc.returncode}")


def check_versions() -> list[Check]:
    from realtime import __version__

    checks = [
        Check(
            "realtime-face",
            True,
            f"{__version__} (python {platform.python_version()}, {platform.system()} {platform.machine()})",
            True,
        )
    ]
    for dist in PACKAGES:
        v = _version(dist)
        checks.append(Check(dist, v is not None, v or "not installed", dist in REQUIRED))
    try:
        import av

        libs = ", ".join(
            f"{k} {'.'.join(str(x) for x in v)}"
            for k, v in av.library_versions.items()
            if k in ("libavcodec", "libavformat")
        )
        enc = "libx264 encoder available" if "libx264" in av.codecs_available else "no libx264 encoder"
        checks.append(Check("ffmpeg", "libx264" in av.codecs_available, f"{libs}; {enc}"))
    except Exception as exc:
        checks.append(Check("ffmpeg", False, f"PyAV unusable: {exc}", True))
    return checks


def check_mediapipe() -> Check:
    try:
        import numpy as np

        from realtime.landmarks import FaceMeshTracker

        with FaceMeshTracker(max_faces=1, static=True) as tracker:
            tracker.track(np.zeros((120, 160, 3), np.uint8))
        return Check("mediapipe face mesh", True, "graph loads and runs (478 landmarks)", True)
    except Exception as exc:
        return Check("mediapipe face mesh", False, f"{type(exc).__name__}: {exc}", True)


def check_accelerators() -> list[Check]:
    checks = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        checks.append(Check("onnxruntime providers", True, ", ".join(providers), True))
        has_cuda = "CUDAExecutionProvider" in providers
        has_trt = "TensorrtExecutionProvider" in providers
    except Exception as exc:
        checks.append(Check("onnxruntime providers", False, str(exc), True))
        has_cuda = has_trt = False
    smi = shutil.which("nvidia-smi")
    if smi:
        ok, detail = _run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
        checks.append(Check("gpu", ok, detail))
    else:
        checks.append(Check("gpu", False, "no NVIDIA GPU (nvidia-smi not found); networks run on the CPU"))
    checks.append(
        Check("cuda execution", has_cuda, "onnxruntime CUDA provider" + ("" if has_cuda else " missing"))
    )
    trt = _version("tensorrt")
    checks.append(
        Check(
            "tensorrt",
            has_trt and trt is not None,
            f"tensorrt {trt}" if trt else "not installed (pip install 'realtime-face[gpu]')",
        )
    )
    try:
        from realtime.engines.runtime import probe_backend

        choice = probe_backend()
        checks.append(Check("engine path", True, f"{choice.backend}: {choice.reason}"))
    except Exception as exc:
        checks.append(Check("engine path", False, f"{type(exc).__name__}: {exc}"))
    return checks


def check_cameras(timeout: float = 5.0) -> Check:
    from realtime.capture import list_cameras, quiet_opencv

    found: list[str] = []
    done = threading.Event()

    def probe() -> None:
        import cv2

        quiet_opencv()
        for index in list_cameras(max_index=8):
            cap = cv2.VideoCapture(index)
            if cap.isOpened():
                w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
                found.append(f"{index} ({w}x{h})")
            cap.release()
        done.set()

    threading.Thread(target=probe, daemon=True, name="camera-probe").start()
    if not done.wait(timeout):
        return Check(
            "cameras", bool(found), f"probe timed out after {timeout:.0f} s; opened: {found or 'none'}"
        )
    if not found:
        return Check("cameras", False, "none found (use --video PATH or --image PATH)")
    return Check("cameras", True, ", ".join(found))


def check_models() -> list[Check]:
    from realtime.paths import engines_dir, shaders_dir

    checks = []
    try:
        from realtime.facemodel import default_ict_path

        p = default_ict_path()
        checks.append(Check("face model", p.is_file(), str(p) if p.is_file() else f"not found: {p}"))
    except Exception as exc:
        checks.append(Check("face model", False, f"{type(exc).__name__}: {exc}"))
    eng = engines_dir()
    files = sorted(x.name for x in eng.glob("*") if x.suffix in (".onnx", ".engine", ".plan"))
    checks.append(
        Check("engines", eng.is_dir(), f"{eng}: {', '.join(files) if files else 'no network files'}")
    )
    sh = shaders_dir()
    shaders = sorted(
        x.name for x in sh.glob("*") if x.suffix in (".vert", ".frag", ".comp", ".geom", ".glsl")
    )
    checks.append(Check("shaders", bool(shaders), f"{sh}: {len(shaders)} files"))
    return checks


def check_display() -> list[Check]:
    code = (
        "import moderngl; c = moderngl.create_standalone_context(backend='egl'); "
        "print(c.info['GL_RENDERER'], c.info['GL_VERSION'])"
    )
    ok, detail = _run([sys.executable, "-c", code])
    checks = [Check("egl (headless rendering)", ok, detail)]
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    import importlib.util

    has_window = importlib.util.find_spec("realtime.window") is not None
    if not display and sys.platform.startswith("linux"):
        checks.append(Check("window", False, "no display (DISPLAY unset): use --headless"))
    elif not has_window:
        checks.append(Check("window", False, "realtime.window missing"))
    else:
        # Open (invisible) the kind of window the app opens: an OpenGL 3.3 core context through pyglet.
        code = (
            "import pyglet; cfg = pyglet.gl.Config(major_version=3, minor_version=3, forward_compatible=True,"
            " double_buffer=True); w = pyglet.window.Window(64, 64, visible=False, config=cfg);"
            " from pyglet.gl import gl_info; print(gl_info.get_renderer(), gl_info.get_version_string());"
            " w.close()"
        )
        ok, detail = _run([sys.executable, "-c", code])
        checks.append(Check("window", ok, f"display {display or 'native'}: {detail}"))
    return checks


def collect(cameras: bool = True) -> list[Check]:
    checks = check_versions()
    checks.append(check_mediapipe())
    checks.extend(check_accelerators())
    if cameras:
        checks.append(check_cameras())
    checks.extend(check_models())
    checks.extend(check_display())
    return checks


def main(args: argparse.Namespace) -> int:
    from realtime.landmarks import quiet_native_logs

    quiet_native_logs()
    checks = collect(cameras=not args.no_camera)
    failed = [c for c in checks if c.required and not c.ok]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "--  ")
            print(f"{mark} {c.name:<{width}}  {c.detail}")
        print("all required parts work" if not failed else f"broken: {', '.join(c.name for c in failed)}")
    return 1 if failed else 0
