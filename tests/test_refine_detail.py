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
