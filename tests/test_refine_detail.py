"""The DECA-style detail network (engines/detail_uv.onnx via onnxruntime) on a photo it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.paths import engines_dir
from realtime.refine.detail import DETAIL_ENGINE


def test_detail_network_card_and_io() -> None:
    from realtime.refine.detail import DetailNetwork

    net = DetailNetwork()
    assert net.input_size == 128
    out = net.predict(np.full((256, 256, 3), 128, np.uint8))
    assert out.shape == (128, 128) and np.isfinite(out).all()
    metrics = net.card_metrics()
    # the card records the held-out evaluation next to the trivial baseline
    assert metrics["corr"] > metrics["corr_mean_map"]
    assert (engines_dir() / DETAIL_ENGINE).with_suffix(".md").is_file()


@pytest.mark.slow
def test_detail_network_agrees_with_sfs_on_a_new_synthetic_face() -> None:
    """On a render it was not trained on (other seed), the network's map follows the SFS map."""
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.detail import DetailNetwork, fast_detail
    from realtime.refine.detail_synth import render_detail_sample
    from realtime.refine.job import RefineEngine, RefineRequest
    from realtime.synthetic import SyntheticGenerator

    model = load_face_model()
    with SyntheticGenerator(model, 512, 512, seed=42) as gen, \
            RefineEngine(model, load_correspondence(model)) as eng:
        ds = render_detail_sample(gen, model, eng.atlas, 4242, distance_mm=360.0)
        outcome, ref = eng.run(RefineRequest(image=ds.image, intrinsics=ds.intrinsics))
        fast = fast_detail(DetailNetwork(), ds.image, ref.medium_vertices_mm, model, outcome.intrinsics,
                           eng.atlas)
    v = outcome.uv_valid
    assert fast.displacement_uv.shape == outcome.displacement_uv.shape
    corr = np.corrcoef(fast.displacement_uv[v], outcome.displacement_uv[v])[0, 1]
    assert corr > 0.3, corr
    assert set(fast.timings_ms) == {"unwrap", "network", "total"}


def _portrait_light(light: str) -> np.ndarray:
    """SH coefficients of ambient + one key light (camera axes: y down, z forward): "key45" 45° to the side and
    35° up; "studio" a softer portrait set-up, stronger ambient and a key ~30° to the side and ~15° up (the
    bench's ``studio_sh``: shading sees a bump's tilt only along the light's sideways component)."""
    sh = np.zeros((9, 3), np.float32)
    if light == "key45":
        d = np.array([np.sin(np.radians(45)) * np.cos(np.radians(35)), -np.sin(np.radians(35)),
                      -np.cos(np.radians(45)) * np.cos(np.radians(35))])
        sh[0] = 0.4 / 0.282095
        sh[1], sh[2], sh[3] = 0.6 * d[1] / 0.488603, 0.6 * d[2] / 0.488603, 0.6 * d[0] / 0.488603
    else:
        sh[0] = 0.5 / 0.282095
        sh[1], sh[2], sh[3] = -0.2 / 0.488603, -0.5 / 0.488603, 0.3 / 0.488603
    return sh


@pytest.mark.slow
@pytest.mark.parametrize("light", ["key45", "studio"])
def test_fine_stage_recovers_synthetic_wrinkles_on_the_true_coarse_face(light: str) -> None:
    """Render with wrinkles/bumps of known position; the fine stage, given the true coarse face, recovers their
    normals (under the key light correlation >= 0.5, the issue's target, both against the true surface and as
    detail relative to its own base, band-split at 5 mm as in tools/bench_refine.py; under the softer studio
    light with the floors below), far above the coarse face (about 0). The end-to-end figures (landmark fit
    first) are in tools/bench_refine.py."""
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.detail_synth import (
        normal_detail_correlation,
        own_base_detail_correlation,
        render_detail_sample,
    )
    from realtime.refine.job import RefineEngine, RefineRequest
    from realtime.refine.snapshot import RefineOptions
    from realtime.results import FaceFit, Pose
    from realtime.synthetic import SyntheticGenerator

    model = load_face_model()
    with SyntheticGenerator(model, 512, 512, seed=3) as gen, \
            RefineEngine(model, load_correspondence(model), RefineOptions(medium=False)) as eng:
        ds = render_detail_sample(gen, model, eng.atlas, 1234, distance_mm=330.0, sh_coeffs=_portrait_light(light),
                                  yaw_deg=10.0,
                                  albedo=np.tile(np.array([0.82, 0.64, 0.54], np.float32), (model.n_vertices, 1)))
        v = np.asarray(ds.vertices_mm)
        lm = v[model.landmarks68]
        fit = FaceFit(Pose(ds.rotation, ds.translation_mm), np.zeros(model.n_expressions),
                      np.zeros(model.n_identity), v, ds.intrinsics.project(lm), lm, 0.0, 1.0)
        _, ref = eng.run(RefineRequest(image=ds.image, intrinsics=ds.intrinsics, fit=fit))
    k = ref.crop.intrinsics
    s = ref.sfs
    refined = normal_detail_correlation(ds, s.depth, s.mask, k)
    coarse = normal_detail_correlation(ds, s.depth0, s.mask, k)
    own_base = own_base_detail_correlation(ds, s.depth, s.depth0, s.mask, k, float(np.median(s.depth0[s.mask])) / k.fx)
    # key light: 0.67 / 0.80 measured. Studio: 0.41 / 0.52 measured (the sixth session's fine stage; the
    # fifth's scored 0.27 / 0.30 on this render), asserted with a margin for BLAS differences between machines
    floor_true, floor_own = (0.5, 0.5) if light == "key45" else (0.35, 0.45)
    assert refined >= floor_true, (refined, own_base, coarse)
    assert own_base >= floor_own, (refined, own_base, coarse)
    assert coarse < 0.2, coarse
