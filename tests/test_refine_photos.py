"""Fine stage on a real photo: the refined render against the coarse face's renders on the same pixels, and on
pixels held out of every data term (what the albedo map and the depth predict rather than copy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion


@pytest.mark.slow
def test_refined_render_beats_the_coarse_face_on_a_photo_and_on_held_out_blocks(face_model,
                                                                                 images_dir: Path) -> None:
    from realtime.capture import load_rgb
    from realtime.correspondence import load_correspondence
    from realtime.refine.job import RefineEngine, RefineRequest
    from realtime.refine.snapshot import RefineOptions

    img = load_rgb(images_dir / "takeo.jpg")
    corr = load_correspondence(face_model)
    with RefineEngine(face_model, corr) as eng, \
            RefineEngine(face_model, corr, RefineOptions(holdout_fraction=0.25)) as eng_ho:
        _, ref = eng.run(RefineRequest(image=img))
        _, ref_ho = eng_ho.run(RefineRequest(image=img))
    s, target = ref.sfs, ref.crop.image

    def err(render: np.ndarray, m: np.ndarray, image: np.ndarray = target) -> float:
        return float(np.abs(render - image)[m].mean() * 255.0)

    prior = err(s.render(prior_albedo=True), s.mask)       # region colours, no per-pixel estimate
    coarse = err(s.render(refined=False), s.mask)          # coarse geometry, same albedo/light estimation
    refined = err(s.render(refined=True), s.mask)
    assert refined < 0.7 * prior, (refined, prior)         # the "30 % lower" against the coarse face
    assert refined < 0.95 * coarse, (refined, coarse)      # the new geometry's own share
    # held out: 25 % of 6 px blocks never seen by the light, colour, albedo or depth terms
    sh = ref_ho.sfs
    assert sh.holdout is not None
    ho = sh.holdout & binary_erosion(sh.mask, iterations=2)
    assert ho.sum() > 0.15 * sh.mask.sum()
    ho_prior = err(sh.render(prior_albedo=True), ho, ref_ho.crop.image)
    ho_refined = err(sh.render(refined=True), ho, ref_ho.crop.image)
    assert ho_refined < 0.9 * ho_prior, (ho_refined, ho_prior)
