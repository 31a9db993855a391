"""The command line as a user runs it (subprocesses): outputs, exit codes, one-line errors, no hangs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) realtime[\w.]*: ")


def cli(
    *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "realtime", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, pattern: str) -> str:
    """Exit ``code``; stderr holds exactly one error line (matching ``pattern``) and only our log lines."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("realtime-face: error: ")]
    assert len(errors) == 1, proc.stderr
    assert re.search(pattern, errors[0]), errors[0]
    others = [line for line in lines if line not in errors]
    assert all(OUR_LOG_LINE.match(line) for line in others), proc.stderr  # no native/FFmpeg noise
    return errors[0]


def test_help_lists_commands() -> None:
    proc = cli("--help", timeout=60)
    assert proc.returncode == 0
    for command in ("run", "doctor", "bench"):
        assert command in proc.stdout
    proc = cli("run", "--help", timeout=60)
    assert proc.returncode == 0 and "--headless" in proc.stdout and "exit codes" in proc.stdout


def test_headless_run_writes_annotated_video_and_table(videos_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "videos" / "annotated.mp4"  # the folder is created
    proc = cli(
        "--headless",
        "--no-fit",  # the fit stages' own run/export test is in the fitting tests
        "--video",
        str(videos_dir / "talking_720p.mp4"),
        "--max-frames",
        "30",
        "--output",
        str(out),
        "--export",
        str(tmp_path / "table"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "processed 30 frames (30 with a face)" in proc.stdout
    assert all(OUR_LOG_LINE.match(line) for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert (stream.width, stream.height) == (1280, 720)
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(decoded) == 30
    # The annotations are drawn: the output differs from the source frame where the landmarks are.
    with av.open(str(videos_dir / "talking_720p.mp4")) as c:
        first = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    diff = abs(decoded[0].astype(int) - first.astype(int)).max(axis=2)
    assert (diff > 60).mean() > 0.001
    table = pq.read_table(tmp_path / "table" / "frames.parquet")
    assert table.num_rows == 30 and table["frame_index"].to_pylist() == list(range(30))


def test_realtime_flag_paces_the_file(videos_dir: Path, tmp_path: Path) -> None:
    proc = cli(
        "--headless", "--no-fit", "--realtime", "--max-frames", "45",
        "--video", str(videos_dir / "wink_blink_gaze.mp4"), "--export", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "frames.parquet")
    assert table.num_rows == 45
    # Paced at 30 fps: processing took about as long as the source time it covered (unpaced: ~0.3 s).
    ts = table["timestamp_s"].to_numpy()
    wall = float(re.search(r"in ([\d.]+) s", proc.stdout).group(1))  # type: ignore[union-attr]
    assert 1.3 < ts[-1] - ts[0] < 2.5 and wall > 0.8 * (ts[-1] - ts[0])
    idx = table["frame_index"].to_numpy()
    assert (idx[1:] - idx[:-1] - 1 == table["dropped_before"].to_numpy()[1:]).all()


def test_image_input(images_dir: Path, tmp_path: Path) -> None:
    proc = cli("--headless", "--no-fit", "--image", str(images_dir / "takeo.jpg"), "--export", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "frames.parquet")
    assert table["face_found"].to_pylist() == [True] and table["timestamp_s"].to_pylist() == [0.0]


def test_truncated_video_keeps_what_was_decoded(videos_dir: Path, tmp_path: Path) -> None:
    data = (videos_dir / "talking_720p.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 10])  # index first: ~80 of 282 frames survive
    proc = cli("--headless", "--no-fit", "--video", str(cut), "--export", str(tmp_path / "t"), timeout=120)
    line = assert_one_line_error(proc, 2, r"truncated or corrupt video: decoded \d+ of 282 frames")
    n = int(re.search(r"decoded (\d+) of", line).group(1))  # type: ignore[union-attr]
    assert f"processed {n} frames" in proc.stdout
    assert pq.read_table(tmp_path / "t" / "frames.parquet").num_rows == n  # nothing decoded is lost


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", r"video not found"),
        ("empty", r"video file is empty"),
        ("text", r"cannot open video .*text\.mp4: Invalid data"),
        ("http", r"cannot open video http://127\.0\.0\.1:9/x\.mp4: Connection refused"),
        ("rtsp", r"cannot open video rtsp://127\.0\.0\.1:9/x: Connection refused"),
        ("camera", r"camera 9 not found"),
        ("folder", r"no images"),
    ],
)
def test_bad_inputs_exit_2(kind: str, pattern: str, tmp_path: Path) -> None:
    args = {
        "missing": ["--video", str(tmp_path / "missing.mp4")],
        "empty": ["--video", str(tmp_path / "empty.mp4")],
        "text": ["--video", str(tmp_path / "text.mp4")],
        "http": ["--video", "http://127.0.0.1:9/x.mp4"],
        "rtsp": ["--video", "rtsp://127.0.0.1:9/x"],
        "camera": ["--camera", "9"],
        "folder": ["--image", str(tmp_path)],
    }[kind]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, I am not a video\n")
    proc = cli("--headless", *args, timeout=40)
    assert_one_line_error(proc, 2, pattern)


@pytest.mark.parametrize("what", ["output-parent-is-file", "output-extension", "export-is-file"])
def test_unwritable_outputs_exit_3_before_processing(what: str, videos_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = {
        "output-parent-is-file": ["--output", str(blocker / "out.mp4")],
        "output-extension": ["--output", str(tmp_path / "out.txt")],
        "export-is-file": ["--export", str(blocker)],
    }[what]
    proc = cli("--headless", "--video", str(videos_dir / "talking_720p.mp4"), *args, timeout=40)
    assert_one_line_error(proc, 3, r"cannot write|unsupported output type")
    assert "processed" not in proc.stdout


def start_and_terminate(args: list[str], partial: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start the app, send SIGTERM once it is writing ``partial``, return (exit code, stdout)."""
    proc = subprocess.Popen([sys.executable, "-m", "realtime", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not partial.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err
    return proc.returncode, out


def test_sigterm_closes_the_outputs(videos_dir: Path, tmp_path: Path) -> None:
    video = videos_dir / "expressions_cheekpuff_pucker_eyeroll.mp4"
    args = ["--headless", "--no-fit", "--video", str(video), "--export", str(tmp_path), "--output",
            str(tmp_path / "out.mp4")]  # fmt: skip
    code, out = start_and_terminate(args, tmp_path / "frames.parquet.partial")
    assert code == 130 and "interrupted" in out
    n = int(re.search(r"processed (\d+) frames", out).group(1))  # type: ignore[union-attr]
    assert 0 < n < 1008
    assert pq.read_table(tmp_path / "frames.parquet").num_rows == n  # complete file, footer written
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == n


def test_live_window_runs_and_stops_cleanly(videos_dir: Path, tmp_path: Path, xvfb_display: str) -> None:
    """Without --headless the window shows the pipeline; SIGTERM closes window, pipeline and outputs."""
    env = {**os.environ, "DISPLAY": xvfb_display}
    args = ["--no-fit", "--video", str(videos_dir / "wink_blink_gaze.mp4"), "--export", str(tmp_path)]
    code, out = start_and_terminate(args, tmp_path / "frames.parquet.partial", env=env)
    assert code == 130
    n = int(re.search(r"processed (\d+) frames", out).group(1))  # type: ignore[union-attr]
    assert n > 0 and pq.read_table(tmp_path / "frames.parquet").num_rows == n


def test_window_without_display_is_a_clear_error(videos_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = cli("--video", str(videos_dir / "talking_720p.mp4"), env=env, timeout=40)
    assert_one_line_error(proc, 1, r"no display; use --headless")


def test_doctor_json(xvfb_display: str) -> None:
    proc = cli("doctor", "--json", timeout=90, env={**os.environ, "DISPLAY": xvfb_display})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and checks["mediapipe face mesh"]["ok"]
    assert checks["window"]["ok"] and checks["egl (headless rendering)"]["ok"]  # a GL 3.3 window opens
    assert "CPUExecutionProvider" in checks["onnxruntime providers"]["detail"]
    for name in (
        "cameras",
        "gpu",
        "tensorrt",
        "face model",
        "engines",
        "shaders",
        "egl (headless rendering)",
        "window",
    ):
        assert name in checks


def test_bench_json(videos_dir: Path) -> None:
    proc = cli(
        "bench",
        "--video",
        str(videos_dir / "wink_blink_gaze.mp4"),
        "--max-frames",
        "40",
        "--overhead-frames",
        "20",
        "--rounds",
        "1",
        "--json",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    e2e = r["end_to_end"]
    assert e2e["frames"] == 40 and e2e["frames_with_face"] >= 38 and e2e["dropped"] == 0 and e2e["fps"] > 0
    for stage in ("landmarks", "decode", "frame"):
        assert 0 < e2e["stages"][stage]["median_ms"] <= e2e["stages"][stage]["p95_ms"]
    o = r["overhead"]
    assert o["frames"] == 20 and o["bare_facemesh_median_ms"] > 0
    assert o["app_landmarks_stage_median_ms"] > 0 and 0 < o["app_pipeline_cycle_median_ms"] < 5
    assert o["bare_frames_with_face"] == o["app_frames_with_face"] == 20
    app = o["app_landmarks_stage_median_ms"] + o["app_pipeline_cycle_median_ms"]
    assert o["app_median_ms"] == pytest.approx(app, abs=0.002)
    assert o["overhead_pct"] == pytest.approx((app / o["bare_facemesh_median_ms"] - 1) * 100, abs=0.2)
