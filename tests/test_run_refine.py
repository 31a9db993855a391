"""`realtime-face run --refine DIR`: keyframes of a real video are refined in the background worker and exported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trimesh


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "realtime", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_run_refines_keyframes_into_exports(talking_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "refined"
    proc = _cli("--headless", "--video", str(talking_video), "--max-frames", "60", "--refine", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    exports = sorted(p.parent for p in out.glob("*/face.obj"))
    queued = proc.stderr.count("queued for refinement")
    assert exports, f"no refined export in {out}: {proc.stderr[-1500:]}"
    # a batch run finishes every keyframe it queued before it exits
    assert len(exports) == queued, proc.stderr[-1500:]
    mesh = trimesh.load(exports[0] / "face.ply", force="mesh")
    assert len(mesh.vertices) > 1000 and mesh.is_empty is False


def test_refine_needs_the_fit_stage(talking_video: Path, tmp_path: Path) -> None:
    proc = _cli("--headless", "--video", str(talking_video), "--max-frames", "5", "--no-fit",
                "--refine", str(tmp_path / "r"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "realtime-face: error: --refine needs the fit stage (drop --no-fit)"
