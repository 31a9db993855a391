"""``realtime-face record`` and ``session info|repair``: errors, a clean recording, the kill -9 crash test."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from realtime.cli import main
from realtime.session import load_session
from realtime.session.repair import check_video


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["record", "--video", "{video}", "--protocol", "nope", "--out", "{tmp}"], 2, "unknown protocol"),
    (["record", "--video", "{video}", "--subject", "Jane Doe", "--out", "{tmp}"], 2, "pseudonym"),
    (["record", "--video", "{tmp}/missing.mp4", "--out", "{tmp}"], 2, "video not found"),
    (["record", "--image", "{video}", "--out", "{tmp}"], 2, "needs a camera"),
    (["record", "--camera", "7", "--out", "{tmp}"], 2, "camera 7 not found"),
    (["record", "--video", "{video}", "--out", "{tmp}/file/sub"], 3, "cannot create"),
    (["session", "info", "{tmp}"], 2, "not a session folder"),
    (["session", "repair", "{tmp}/nothing"], 2, "session folder not found"),
])
def test_cli_errors_are_one_line(argv: list[str], code: int, needle: str, tmp_path: Path,
                                 talking_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.format(video=talking_video, tmp=tmp_path) for a in argv]
    rc, _, err = _run(args, capsys)
    assert rc == code
    lines = [line for line in err.splitlines() if line.startswith("realtime-face: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def _env() -> dict[str, str]:
    env = dict(os.environ, GLOG_minloglevel="2", OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.mark.slow
def test_record_a_whole_video_then_info(tmp_path: Path, talking_video: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["record", "--video", str(talking_video), "--no-audio", "--out", str(tmp_path),
                       "--subject", "S01", "--headless"], capsys)
    assert rc == 0, out
    folder = next(tmp_path.glob("S01_*"))
    assert f"session {folder}: complete" in out
    s = load_session(folder)
    assert s.complete and s.num_frames == 282  # every frame of the 9.4 s file (not paced: none dropped)
    assert s.manifest["video"]["frames_written"] == 282 and s.manifest["video"]["frames_dropped"] == 0
    assert check_video(folder / "video.mp4").frames == 282
    assert s.manifest["camera"]["intrinsics"]["width"] == 1280
    assert s.manifest["audio"] == {"recorded": False, "reason": "disabled"}
    rc, out, _ = _run(["session", "info", str(folder), "--json"], capsys)
    info = json.loads(out)
    assert info["status"] == "complete" and info["frames"] == 282 and info["frames_with_face"] >= 270
    assert info["frames_per_exercise"] == {"rest": 282}


@pytest.mark.slow
def _wait_for_encoder_exit(video: Path, timeout_s: float) -> None:
    """Wait until no ``realtime.session.encoder`` process writing ``video`` is left (Linux /proc)."""
    deadline = time.monotonic() + timeout_s
    needle = str(video).encode()
    while time.monotonic() < deadline:
        alive = False
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                raw = cmdline.read_bytes()
            except OSError:
                continue
            if b"realtime.session.encoder" in raw and needle in raw:
                alive = True
                break
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"the encoder writing {video} did not finish within {timeout_s:.0f} s")


def test_kill_9_mid_session_leaves_a_loadable_folder_and_repair_finalises_it(
        tmp_path: Path, talking_video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmd = [sys.executable, "-m", "realtime", "record", "--video", str(talking_video), "--realtime",
           "--no-audio", "--out", str(tmp_path), "--subject", "crash"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        manifest = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(tmp_path.glob("crash_*/manifest.json"))
            if found:
                manifest = found[0]
                break
            time.sleep(0.05)
        assert manifest is not None, "recording did not start"
        time.sleep(5.0)
        os.kill(proc.pid, signal.SIGKILL)
        t_kill = time.time()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
    folder = manifest.parent
    video = folder / "video.mp4"
    # The encoder process outlives the app by design (it finishes what reached it): wait until it has
    # exited. It runs niced, so on a loaded machine it may make no progress for seconds: the file size
    # standing still is no sign that it is done.
    _wait_for_encoder_exit(video, timeout_s=90.0)

    s = load_session(folder)
    started = dt.datetime.fromisoformat(s.manifest["started_utc"].replace("Z", "+00:00")).timestamp()
    assert s.status == "recording" and not s.finalized and not s.problems
    t = s.frames["session_time_s"].to_numpy()
    # Recorded time runs from the first frame the pipeline processed: its capture time on the recorder's
    # clock (origin = the recorder's start, when started_utc was stamped) tells when that was.
    first_frame_wall = started + float(s.frames["capture_clock_s"].to_numpy()[0])
    elapsed = t_kill - first_frame_wall
    assert 4.0 < elapsed < 8.0
    assert t[-1] >= elapsed - 1.0, f"table ends at {t[-1]:.2f} s, killed at {elapsed:.2f} s"
    assert s.num_frames >= 10 * (elapsed - 1.0)  # paced at 30 FPS; even a starved machine keeps 10/s
    v = check_video(video)
    assert v.frames >= s.num_frames - 30 and v.duration_s is not None and v.duration_s >= elapsed - 1.0

    rc, out, err = _run(["session", "repair", str(folder)], capsys)
    assert rc == 0, err
    assert "repair: video remux 100 %" in err and "repair: frames 100 %" in err
    r = load_session(folder)
    assert r.status == "repaired" and r.complete and r.num_frames == s.num_frames
    assert not (folder / "frames").exists()
    assert r.manifest["stopped_utc"] and r.manifest["repairs"][0]["previous_status"] == "recording"
    v2 = check_video(video)
    assert v2.error is None and v2.frames == v.frames  # remuxed, nothing lost
    with av.open(str(video)) as c:
        assert c.format.name.startswith("mov") and c.streams.video[0].frames == v.frames
    rc, out, _ = _run(["session", "info", str(folder)], capsys)
    assert rc == 0 and "status    repaired" in out


def test_run_window_mode_has_the_r_key_recorder(talking_video: Path) -> None:
    import argparse

    from realtime.capture import VideoSource
    from realtime.cli import run
    from realtime.session.controller import RecordingController

    parser = argparse.ArgumentParser()
    run.register(parser.add_subparsers())
    for extra, expected in (([], 1), (["--headless"], 0)):
        args = parser.parse_args(["run", "--video", str(talking_video), "--no-fit", *extra])
        sinks = run.build_sinks(args, VideoSource(talking_video), [])
        assert sum(isinstance(s, RecordingController) for s in sinks) == expected


@pytest.mark.slow
def test_record_ends_when_the_protocol_is_complete(tmp_path: Path, talking_video: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    proto = tmp_path / "short.toml"
    proto.write_text('name = "short"\n[[exercise]]\nid = "rest"\nprompt = "Relax"\nprepare_s = 0.5\n'
                     'hold_s = 1.0\nrest_s = 0\n[[exercise]]\nid = "smile_open"\nprompt = "Smile"\n'
                     'prepare_s = 0.5\nhold_s = 0.5\nrest_s = 0.5\nrepetitions = 1\n')
    rc, out, _ = _run(["record", "--video", str(talking_video), "--no-audio", "--no-fit", "--protocol",
                       str(proto), "--out", str(tmp_path / "s"), "--subject", "short"], capsys)
    assert rc == 0
    folder = next((tmp_path / "s").glob("short_*"))
    s = load_session(folder)
    assert s.complete and s.manifest["protocol"]["completed"] is True
    assert s.num_frames == 90  # 3.0 s of the 9.4 s video at 30 FPS, then the recording (and command) ended
    assert s.frames["exercise"].to_pylist()[-1] == "smile_open"
    assert s.frames["phase"].to_pylist()[-1] == "rest"
    assert (folder / "protocol.toml").read_text() == proto.read_text()
    assert "processed" in out


@pytest.mark.slow
def test_record_into_a_full_disk_exits_3_and_keeps_the_folder(tmp_path: Path, talking_video: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    # capfd: the CLI routes file descriptor 2 through MediaPipe's log filter
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        rc, out, err = _run(["record", "--video", str(talking_video), "--no-audio", "--no-fit", "--out",
                             str(mnt), "--subject", "full"], capfd)
        assert rc == 3
        lines = [line for line in err.splitlines() if line.startswith("realtime-face: error:")]
        assert len(lines) == 1 and "recording stopped:" in lines[0] and "No space left on device" in lines[0]
        assert "session repair" in lines[0]
        folder = next(mnt.glob("full_*"))
        assert f"session {folder}: failed" in out
        s = load_session(folder)  # what fit on the disk is readable; the manifest is an intact earlier
        assert s.status in ("failed", "recording") and not s.problems  # version when no byte was left
        assert s.manifest["format"] == "realtime-face-session" and s.subject_id == "full"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
