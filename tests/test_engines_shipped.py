"""The shipped engines (engines/*.onnx): they load on the CPU path, carry their metadata, and give sane
coefficients on a real video frame — compared with the landmark fit of the same frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.engines.regressors import ENGINE_FILES, Regressor
from realtime.paths import engines_dir

# Sanity bounds against the landmark fit on real frames. The shipped CPU-trained engines are weak (synthetic
# training only; see the model cards): measured worst cases on these frames were 14° yaw, 10° pitch, a depth
# ratio of 0.90-1.22 and a landmark distance of 16 % of the face size. A wrong decode (axis flip, crop
# mix-up, unit error) is off by far more.
YAW_TOL_DEG = {"mobile-facernet": 25.0, "deep3d": 25.0}
PITCH_TOL_DEG = {"mobile-facernet": 20.0, "deep3d": 20.0}
LANDMARK_TOL = {"mobile-facernet": 0.25, "deep3d": 0.25}


@pytest.fixture(scope="module")
def frames(videos_dir: Path):
    """Three (image, track) pairs from two shared videos."""
    import av

    from realtime.landmarks import FaceMeshTracker

    out = []
    with FaceMeshTracker(static=True) as tracker:
        for name, picks in (("talking_720p.mp4", (0, 150)), ("wink_blink_gaze.mp4", (100,))):
            with av.open(str(videos_dir / name)) as c:
                for k, frame in enumerate(c.decode(video=0)):
                    if k in picks:
                        img = frame.to_ndarray(format="rgb24")
                        tracks = tracker.track(img)
                        assert tracks
                        out.append((img, tracks[0]))
                    if k >= max(picks):
                        break
    return out


@pytest.mark.parametrize("name", list(ENGINE_FILES))
def test_shipped_engine_is_sane_on_real_frames(name: str, frames, face_model) -> None:
    from realtime.correspondence import load_correspondence
    from realtime.fitting import FaceFitter, FitOptions
    from realtime.results import Pose

    path = engines_dir() / ENGINE_FILES[name]
    assert path.is_file(), f"{path} is not shipped"
    assert path.stat().st_size < 15e6
    corr = load_correspondence(face_model)
    with Regressor(name, path=path, prefer="cpu") as reg:
        assert reg.runner.metadata["realtime_face.engine"] == name
        assert reg.backend == "onnxruntime-cpu"
        for img, track in frames:
            intr = Intrinsics.from_fov(img.shape[1], img.shape[0])
            est = reg.predict(img, track, intr)
            assert np.isfinite(est.identity).all() and np.isfinite(est.translation_mm).all()
            assert est.expression.min() >= 0.0 and est.expression.max() <= 1.0
            assert np.abs(est.identity).mean() < 2.0
            assert np.allclose(est.rotation @ est.rotation.T, np.eye(3), atol=1e-5)
            fit = FaceFitter(face_model, corr, intr, FitOptions(lock_identity=False)).fit(track)
            yaw, pitch, _ = Pose(est.rotation, est.translation_mm).euler_deg()
            fyaw, fpitch, _ = fit.pose.euler_deg()
            assert abs(yaw - fyaw) < YAW_TOL_DEG[name] and abs(pitch - fpitch) < PITCH_TOL_DEG[name]
            assert 0.6 < est.translation_mm[2] / fit.pose.translation_mm[2] < 1.6
            # The engine's 68 landmarks land on the face: mean distance to the fit's, relative to the box.
            v = face_model.shape(est.identity, est.expression)[face_model.landmarks68]
            lm = intr.project(v @ est.rotation.T + est.translation_mm)
            size = np.sqrt(np.prod(np.ptp(fit.landmarks68_px, axis=0)))
            assert np.linalg.norm(lm - fit.landmarks68_px, axis=1).mean() / size < LANDMARK_TOL[name]


def test_build_engines_command_reports_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    from realtime.cli import main

    assert main(["models", "build-engines", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ENGINE_FILES:
        assert f"{name}: onnxruntime-cpu (" in out


def test_run_with_engine_records_its_timing(tmp_path: Path, talking_video: Path) -> None:
    import pyarrow.parquet as pq

    from realtime.cli import main

    rc = main(["run", "--headless", "--video", str(talking_video), "--max-frames", "4",
               "--engine", "mobile-facernet", "--export", str(tmp_path)])
    assert rc == 0
    table = pq.read_table(tmp_path / "frames.parquet").to_pydict()
    assert len(table["frame_index"]) == 4
    assert all(t is not None and t > 0 for t in table["t_engine_ms"])
    assert all(y is not None for y in table["yaw_deg"])


@pytest.mark.gpu
def test_tensorrt_path_matches_cpu(tmp_path: Path) -> None:
    """On an NVIDIA machine with tensorrt + pycuda/cuda-python: FP16 engine built once, cached, close to CPU."""
    pytest.importorskip("tensorrt")
    from realtime.engines.runtime import EngineRunner, probe_backend

    if probe_backend("tensorrt").backend != "tensorrt":
        pytest.skip("no usable GPU for TensorRT")
    path = engines_dir() / ENGINE_FILES["mobile-facernet"]
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with EngineRunner(path, prefer="cpu") as cpu:
        ref = cpu.run(x)
    with EngineRunner(path, prefer="tensorrt", engine_cache=tmp_path) as gpu:
        assert gpu.backend == "tensorrt" and "engine built" in gpu.reason
        out = gpu.run(x)
    assert np.abs(out - ref).max() < 0.05 * (np.abs(ref).max() + 1.0)
    assert len(list(tmp_path.glob("*.plan"))) == 1
    with EngineRunner(path, prefer="tensorrt", engine_cache=tmp_path) as again:
        assert "cached engine" in again.reason
