"""Fusion of the engines' estimate with the landmark fit (realtime/engines/fusion.py): the yaw ramp, the
calibration files, and the shipped engine's calibrated fusion on new synthetic profile renders tracked by
real MediaPipe and run through real onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realtime.engines.fusion import (
    FusionPolicy,
    FusionStage,
    fuse_coefficients,
    load_policy,
    policy_path,
    save_policy,
)
from realtime.errors import BadInputError


def test_ramp_is_zero_below_start_and_full_at_the_end() -> None:
    p = FusionPolicy(identity_weight=0.8, expression_weight=0.5, yaw_start_deg=30.0, yaw_full_deg=60.0)
    assert p.weights(0.0) == (0.0, 0.0) and p.weights(-29.9) == (0.0, 0.0)
    assert p.weights(60.0) == pytest.approx((0.8, 0.5)) and p.weights(-75.0) == pytest.approx((0.8, 0.5))
    ramp = [p.ramp(y) for y in np.linspace(30.0, 60.0, 31)]
    assert np.all(np.diff(ramp) > 0) and p.ramp(45.0) == pytest.approx(0.5)
    with pytest.raises(BadInputError):
        FusionPolicy(identity_weight=1.5)
    with pytest.raises(BadInputError):
        FusionPolicy(yaw_start_deg=50.0, yaw_full_deg=40.0)


def test_fused_coefficients_blend_and_keep_a_locked_identity() -> None:
    rng = np.random.default_rng(0)
    fi, ei = rng.normal(size=100), rng.normal(size=100)
    fe, ee = rng.uniform(0, 1, 53), rng.uniform(0, 1, 53)
    p = FusionPolicy(0.6, 0.4, 30.0, 60.0)
    ident, expr = fuse_coefficients(fi, fe, ei, ee, 70.0, p)
    assert np.allclose(ident, 0.4 * fi + 0.6 * ei) and np.allclose(expr, 0.6 * fe + 0.4 * ee)
    assert expr.min() >= 0.0 and expr.max() <= 1.0
    locked, _ = fuse_coefficients(fi, fe, ei, ee, 70.0, p, identity_locked=True)
    assert np.array_equal(locked, fi)
    same = fuse_coefficients(fi, fe, ei, ee, 10.0, p)
    assert np.allclose(same[0], fi) and np.allclose(same[1], fe)


def test_policy_file_is_tied_to_the_engine_file(tmp_path: Path) -> None:
    onnx = tmp_path / "net.onnx"
    onnx.write_bytes(b"first network")
    save_policy(onnx, FusionPolicy(0.7, 0.3, 20.0, 50.0), {"set": "test"})
    assert load_policy(onnx) == FusionPolicy(0.7, 0.3, 20.0, 50.0)
    onnx.write_bytes(b"retrained network")          # calibrated for another file: not fused
    assert load_policy(onnx) is None
    policy_path(onnx).write_text("{not json")
    with pytest.raises(BadInputError):
        load_policy(onnx)
    assert load_policy(tmp_path / "absent.onnx") is None


def test_shipped_engines_have_a_current_calibration() -> None:
    """A retrained engine must be recalibrated (tools/calibrate_fusion.py --write) before it ships."""
    from realtime.engines.regressors import ENGINE_FILES
    from realtime.paths import engines_dir

    for name in ENGINE_FILES.values():
        policy = load_policy(engines_dir() / name)
        assert policy is not None, f"{name}: no fusion calibration for this file"
        assert policy.active


def test_fusion_stage_for_an_engine(face_model) -> None:
    from realtime.engines.fusion import fusion_stage_for
    from realtime.fitting import IntrinsicsResolver, MeshBuilder

    mesher, resolver = MeshBuilder(face_model), IntrinsicsResolver()
    stage = fusion_stage_for("mobile-facernet", mesher, resolver)
    assert stage is not None and stage.name == "fuse" and stage.policy.active
    assert fusion_stage_for("fit", mesher, resolver) is None


@pytest.mark.slow
def test_fused_fit_beats_fit_only_on_new_profile_renders(face_model) -> None:
    """Profile renders from a seed used nowhere else; shape error of the fused fit (engine + fit, the
    shipped calibration) against the fit alone. The stage leaves a frontal fit untouched."""
    from realtime.correspondence import load_correspondence
    from realtime.engines.regressors import Regressor, engine_path
    from realtime.fitting import FaceFitter, FitOptions, IntrinsicsResolver, MeshBuilder
    from realtime.landmarks import FaceMeshTracker
    from realtime.results import FaceResult, Frame, FrameResult
    from realtime.synthetic import SyntheticGenerator

    path = engine_path("mobile-facernet")
    policy = load_policy(path)
    assert policy is not None
    corr = load_correspondence(face_model)
    region = face_model.narrow_face_area_vertices or face_model.face_area_vertices
    stage = FusionStage(policy, MeshBuilder(face_model), IntrinsicsResolver())
    fit_err, fused_err = [], []
    with SyntheticGenerator(face_model, 512, 512, seed=123) as gen, FaceMeshTracker(static=True) as tracker, \
            Regressor("mobile-facernet", path=path, prefer="cpu") as reg:
        for i, yaw in enumerate((58.0, -62.0, 66.0, -55.0, 50.0, 0.0)):
            s = gen.sample(seed=1_230_000_000 + i, yaw_deg=yaw)
            tracks = tracker.track(s.image)
            if not tracks:   # MediaPipe misses some profiles (about 2 % of the renders)
                continue
            fit = FaceFitter(face_model, corr, s.intrinsics, FitOptions.single_image()).fit(tracks[0])
            face = FaceResult(track=tracks[0], fit=fit, engine=reg.predict(s.image, tracks[0], s.intrinsics))
            result = FrameResult(frame=Frame(s.image, i, 0.0, 0.0), faces=[face])
            stage.intrinsics = IntrinsicsResolver(s.intrinsics)
            stage.process(result)
            assert "fuse" in result.timings_ms
            fused = result.faces[0].fit
            assert fused is not None
            if yaw == 0.0:
                assert fused is fit   # below the ramp: the fit as it is
                continue
            assert fused is not fit and fused.vertices_mm.shape == fit.vertices_mm.shape
            assert np.array_equal(fused.pose.rotation, fit.pose.rotation)
            gt = face_model.shape(s.identity, s.expression)[:region]
            for out, errs in ((fit, fit_err), (fused, fused_err)):
                v = face_model.shape(out.identity, out.expression)[:region]
                errs.append(float(np.linalg.norm(v - gt, axis=1).mean()))
    assert len(fit_err) >= 3
    # Measured (4 of the 5 profiles tracked): fit only 7.62 mm, fused 5.63 mm with the fitter before its
    # landmark prior (weights 0.9 / 1.0); 7.01 vs 5.96 mm with it (weights 0.7 / 0.9).
    assert np.mean(fused_err) < np.mean(fit_err) - 0.3


def test_calibration_search_on_constructed_cases(face_model) -> None:
    """Cases built by hand (no rendering): an engine that is exact at large yaw must get full weight, one
    that is pure noise about the inverse-variance weight; the paired difference has the right sign."""
    from realtime.training.fusion_calib import (
        Case,
        EnginePrediction,
        ShapeError,
        calibrate,
        fused,
        paired_difference,
    )

    rng = np.random.default_rng(3)
    cases = []
    for i in range(24):
        yaw = float(rng.uniform(55.0, 75.0)) * (1 if i % 2 else -1)
        ident, expr = rng.normal(size=100), np.clip(rng.normal(0.1, 0.2, 53), 0, 1)
        fit_expr = np.clip(expr + rng.normal(0, 0.3, 53), 0, 1)
        c = Case(yaw, ident, expr, np.eye(3), tracked=True, fit_yaw_deg=yaw,
                 fit_identity=ident + rng.normal(0, 0.8, 100), fit_expression=fit_expr)
        c.engines["exact"] = EnginePrediction(ident.copy(), expr.copy(), 0.0, (ident, expr, 0.0))
        c.engines["noise"] = EnginePrediction(rng.normal(0, 2.0, 100), rng.uniform(0, 1, 53), 0.0, (ident, expr, 0.0))
        cases.append(c)
    err = ShapeError(face_model, stride=8)
    exact, e_exact = calibrate(cases, "exact", err)
    noise, _ = calibrate(cases, "noise", err)
    assert exact.identity_weight == 1.0 and exact.expression_weight == 1.0 and e_exact < 1e-3
    # Independent errors: identity variance 0.64 (fit) vs 1 + 4 (noise engine) -> optimal weight 0.64 / 5.64.
    assert noise.identity_weight <= 0.2
    better = paired_difference(cases, lambda c: (*fused(c, (c.engines["exact"].identity,
                                                             c.engines["exact"].expression), exact), 0.0),
                               lambda c: (c.fit_identity, c.fit_expression, 0.0), err)
    assert better is not None and better["a_better"] == 24 and better["mean_mm"] < 0  # type: ignore[operator]
