"""``realtime-face models install/list``: offline message, local conversion, download from a local server."""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_facemodel import write_facex_folder

from realtime.cli import main
from realtime.facemodel import MorphableModel, load_face_model

EXPRESSIONS = ["eyeBlink_L", "mouthSmile_R"]


@pytest.fixture()
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REALTIME_FACE_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("REALTIME_FACE_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_install_without_network_is_one_clear_line(dirs: Path) -> None:
    env = {"REALTIME_FACE_MODELS": str(dirs / "models"), "REALTIME_FACE_CACHE": str(dirs / "cache"),
           "PATH": "/usr/bin:/bin"}
    try:  # This machine has no network; where one exists, a dead proxy keeps the test from downloading.
        socket.getaddrinfo("github.com", 443)
        env["https_proxy"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"
    except OSError:
        pass
    started = time.monotonic()
    cmd = [sys.executable, "-m", "realtime", "models", "install", "ict-facekit", "--timeout", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 45
    assert proc.returncode == 4
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("realtime-face: error:")]
    assert len(lines) == 1 and "cannot download" in lines[0] and "--from DIR" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (dirs / "models" / "ict-facekit").exists()


def test_install_from_local_folder_then_list(dirs: Path, face_model: MorphableModel,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    write_facex_folder(face_model, dirs / "kit" / "FaceXModel", 2, EXPRESSIONS)
    (dirs / "kit" / "LICENSE").write_text("MIT")
    assert main(["models", "install", "ict-facekit", "--from", str(dirs / "kit")]) == 0
    target = dirs / "models" / "ict-facekit" / "ict_face_model.npz"
    assert target.is_file() and (target.parent / "LICENSE").is_file()
    assert "installed ict-facekit: 11248 vertices, 2 identity modes, 2 expressions" in capsys.readouterr().out
    # The installed model is now the default one.
    m = load_face_model()
    assert m.source == str(target) and m.expression_names == tuple(EXPRESSIONS)
    np.testing.assert_allclose(m.mean_mm, face_model.mean_mm, atol=1e-3)
    assert main(["models", "install", "ict-facekit", "--from", str(dirs / "kit")]) == 0
    assert "already installed" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "* ict-facekit    installed" in out and "shared data" in out


def test_install_bad_folder(dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (dirs / "empty").mkdir()
    assert main(["models", "install", "ict-facekit", "--from", str(dirs / "empty")]) == 2
    assert "no FaceXModel/ folder" in capsys.readouterr().err


@pytest.fixture()
def archive_server(dirs: Path, face_model: MorphableModel) -> Iterator[str]:
    """A local HTTP server with a GitHub-style archive (ICT-FaceKit-master/FaceXModel/...)."""
    write_facex_folder(face_model, dirs / "src", 2, EXPRESSIONS)
    www = dirs / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "master.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in sorted((dirs / "src").iterdir()):
            zf.write(f, f"ICT-FaceKit-master/FaceXModel/{f.name}")
        zf.writestr("ICT-FaceKit-master/LICENSE", "MIT")
        zf.writestr("ICT-FaceKit-master/README.md", "readme")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/master.zip"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_install_downloads_and_converts_archive(dirs: Path, archive_server: str) -> None:
    assert main(["models", "install", "ict-facekit", "--url", archive_server, "--timeout", "10"]) == 0
    m = load_face_model()
    assert m.n_identity == 2 and m.expression_names == tuple(EXPRESSIONS)
    assert (dirs / "models" / "ict-facekit" / "LICENSE").is_file()
    # Nothing of the download is left behind in the cache.
    assert not list((dirs / "cache").glob("install-*"))
