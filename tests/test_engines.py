"""Engine runtime (onnxruntime CPU path, backend choice, TensorRT cache key), crop-relative pose coding,
the regressor wrapper and the "engine" pipeline stage on real video frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realtime.camera import Intrinsics
from realtime.engines.coeffs import (
    CoefficientLayout,
    Crop,
    CropSpec,
    camera_pose_from_local,
    crop_from_points,
    local_pose_from_camera,
    rot6d_to_matrix,
)
from realtime.engines.runtime import EngineRunner, engine_cache_key, probe_backend
from realtime.errors import BadInputError, MissingResourceError


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained Mobile-FaceRNet exported like the shipped one (needs torch, which the dev extra has)."""
    torch = pytest.importorskip("torch")
    from realtime.training.export import export_onnx
    from realtime.training.nets import MobileFaceRNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("eng") / "mobile_facernet.onnx"
    return export_onnx(MobileFaceRNet(), path, "mobile-facernet", CoefficientLayout(), CropSpec(64))


@pytest.fixture(scope="module")
def video_frame_track(talking_video: Path):
    import av

    from realtime.landmarks import FaceMeshTracker

    with av.open(str(talking_video)) as c:
        img = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    with FaceMeshTracker(static=True) as tracker:
        tracks = tracker.track(img)
    assert tracks
    return img, tracks[0]


def test_runtime_imports_no_torch() -> None:
    code = (
        "import sys, realtime.engines.runtime, realtime.engines.regressors, realtime.engines.options; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_backend_probe_on_this_machine() -> None:
    import onnxruntime as ort

    choice = probe_backend()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert choice.backend in ("onnxruntime-cpu", "tensorrt")
    assert choice.reason
    assert probe_backend("cpu").backend == "onnxruntime-cpu"
    with pytest.raises(BadInputError):
        probe_backend("opencl")


def test_engine_cache_key_changes_with_each_part() -> None:
    base = engine_cache_key(b"onnx", "10.3.0", "NVIDIA H100 80GB HBM3")
    assert base != engine_cache_key(b"onnx2", "10.3.0", "NVIDIA H100 80GB HBM3")
    assert base != engine_cache_key(b"onnx", "10.4.0", "NVIDIA H100 80GB HBM3")
    assert base != engine_cache_key(b"onnx", "10.3.0", "NVIDIA H200")
    assert "/" not in base and " " not in base


def test_cpu_runner(small_engine: Path) -> None:
    with EngineRunner(small_engine, prefer="cpu", threads=1) as runner:
        assert runner.backend == "onnxruntime-cpu"
        assert "CPU" in runner.reason
        out = runner.run(np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32))
        assert out.shape == (3, CoefficientLayout().size) and np.isfinite(out).all()
        with pytest.raises(ValueError):
            runner.run(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(MissingResourceError):
        EngineRunner(small_engine.parent / "missing.onnx")
    bad = small_engine.parent / "bad.onnx"
    bad.write_bytes(b"not a network")
    with pytest.raises(BadInputError):
        EngineRunner(bad)


def test_pose_coding_round_trip_off_centre() -> None:
    from realtime.synthetic import rotation_from_euler

    intr = Intrinsics.from_fov(1280, 720, 70.0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        r = rotation_from_euler(*rng.uniform(-60, 60, 3))
        t = np.array([rng.uniform(-300, 300), rng.uniform(-200, 200), rng.uniform(300, 900)])
        crop = Crop(
            cx=float(rng.uniform(100, 1180)),
            cy=float(rng.uniform(100, 620)),
            side_px=float(rng.uniform(80, 400)),
            input_size=64,
        )
        r6, uvk = local_pose_from_camera(r, t, intr, crop)
        r2, t2 = camera_pose_from_local(r6, uvk, intr, crop)
        assert np.allclose(r2, r, atol=1e-9) and np.allclose(t2, t, atol=1e-6)
    assert np.allclose(rot6d_to_matrix(np.array([2.0, 0, 0, 0.3, -3.0, 0])), np.diag([1.0, -1.0, -1.0]))


def test_crop_geometry() -> None:
    pts = np.array([[100.0, 50.0], [200.0, 250.0]])
    c = crop_from_points(pts, CropSpec(64, scale=1.25, offset_y=0.1))
    assert c.side_px == pytest.approx(250.0) and c.cy == pytest.approx(170.0)
    back = c.to_frame(c.to_input(pts))
    assert np.allclose(back, pts)
    with pytest.raises(BadInputError):
        crop_from_points(np.full((5, 2), np.nan), CropSpec())


def test_regressor_and_stage_on_a_real_frame(small_engine: Path, video_frame_track) -> None:
    from realtime.engines.regressors import EngineStage, Regressor
    from realtime.results import FaceResult, Frame, FrameResult

    img, track = video_frame_track
    intr = Intrinsics.from_fov(img.shape[1], img.shape[0])
    with Regressor("mobile-facernet", path=small_engine, prefer="cpu") as reg:
        est = reg.predict(img, track, intr)
        assert est.identity.shape == (100,) and est.expression.shape == (53,)
        assert np.allclose(est.rotation @ est.rotation.T, np.eye(3), atol=1e-6)
        assert est.lighting_sh is not None and est.lighting_sh.shape == (9, 3)
        stage = EngineStage(regressor=reg, interval=3)
        runs = []
        for i in range(6):
            res = FrameResult(frame=Frame(img, i, i / 30, 0.0), faces=[FaceResult(track=track)])
            stage.process(res)
            runs.append(res.faces[0].engine is not None)
            assert "engine" in res.timings_ms
        assert runs == [True, False, False, True, False, False]
        res = FrameResult(frame=Frame(img, 9, 0.3, 0.0), faces=[FaceResult(track=track)], events=["keyframe"])
        stage.process(res)
        assert res.faces[0].engine is not None


def test_engine_option_decision() -> None:
    from realtime.engines.options import decide

    assert decide("fit").engine == "fit"
    d = decide("deep3d", "cpu")
    assert d.engine == "deep3d" and d.interval > 1
    assert decide("mobile-facernet", "cpu").interval == 1
    # auto on a CPU: no network (the engines bring no gain to the live fit there; see the option's docstring)
    auto = decide("auto", "cpu")
    assert auto.engine == "fit" and "CPU" in auto.reason


def test_rot6d_degenerate_input_gives_a_rotation() -> None:
    for r6 in (np.zeros(6), np.array([1e-13, 0, 0, 0, 0, 0]), np.array([0, 1.0, 0, 0, 2.0, 0])):
        r = rot6d_to_matrix(r6)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.linalg.det(r) == pytest.approx(1.0)


def test_cli_import_reports_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from realtime.cli import main

    ckpt, bfm = str(tmp_path / "epoch_20.pth"), str(tmp_path / "b.mat")
    rc = main(["models", "import", "deep3d", ckpt, "--bfm", bfm])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint not found" in err[0]
