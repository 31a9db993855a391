"""The built wheel installs into a fresh venv, ships the shaders/engines and runs ``realtime-face doctor``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_doctor(tmp_path: Path, shared: Path) -> None:
    dist = tmp_path / "dist"
    # hatchling is in the dev environment: build without fetching build dependencies again.
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        cwd=tmp_path,
    )
    wheels = list(dist.glob("realtime_face-*.whl"))
    assert len(wheels) == 1

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    purelib = Path(
        run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip()
    )
    # Dependencies come from the dev environment's site-packages (a plain path entry: its .pth files, among
    # them the editable install of this checkout, are not processed), the project itself from the wheel.
    (purelib / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheels[0])], cwd=tmp_path)

    env = {**os.environ, "REALTIME_FACE_SHARED": str(shared)}
    env.pop("PYTHONPATH", None)
    probe = (
        "import json, realtime, realtime.paths as p; print(json.dumps("
        "[realtime.__file__, realtime.__version__, str(p.shaders_dir()), str(p.engines_dir())]))"
    )
    module_file, version, shaders, engines = json.loads(run([str(py), "-c", probe], cwd=tmp_path, env=env))
    assert Path(module_file).is_relative_to(purelib) and version != "0.0.0+source"
    assert Path(shaders) == purelib / "realtime" / "_assets" / "shaders"
    assert Path(engines) == purelib / "realtime" / "_assets" / "engines"
    tracked = run(["git", "ls-files", "shaders", "engines"], cwd=ROOT).split()
    assert tracked, "no tracked asset files"
    for rel in tracked:
        assert (purelib / "realtime" / "_assets" / rel).is_file(), f"{rel} missing from the wheel"

    out = run([str(venv / "bin" / "realtime-face"), "doctor", "--json", "--no-camera"], cwd=tmp_path, env=env)
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"], out
    assert checks["mediapipe face mesh"]["ok"]
    assert checks["shaders"]["detail"].startswith(shaders)
    assert checks["face model"]["ok"]
