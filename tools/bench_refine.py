#!/usr/bin/env python
"""Benchmark of the keyframe refinement (issue 7): detail, photos, two-view, speed, live-loop cost.

Sections (each prints a table; ``--json`` prints everything as one JSON object):

* detail   — synthetic renders of the model with wrinkles/bumps of known position
             (``realtime.refine.detail_synth``): correlation of the recovered fine normal detail with the
             truth, in image space and in the UV normal map, interior of the face (6 px / 4 texels in
             from the mask border); baselines: the coarse mesh (no detail) and "dark is deep" (the
             high-passed image luminance taken as height).
* detaildiag — where the fine stage loses the synthetic detail (fine stage on the true coarse face): the
             stage-1 light against the true one, how much of the detail's shading the albedo map and the
             refined depth take, how much the image carries, and the bench's depth-map truth against the
             renderer's interpolated normals (``bench_detail_diag``).
* photos   — the real photos in ../shared/data/images: photometric error (mean |I - render|, grey levels)
             of the coarse renders (region colours; the same albedo-map estimation) and the refined render
             on the same pixels (all and interior), the error on held-out blocks, stage times (wall and CPU
             seconds of this process).
* twoview  — synthetic front (|yaw| < 5°) + side (40-55°) renders of the same identity (MediaPipe landmarks
             on the renders): mean face-area vertex error (mm, after rigid alignment) of the best single
             view, the joint fit, and the mean face.
* live     — the application's pipeline (``realtime-face run`` stages, 720p video paced at 30 FPS): p95
             frame time without and with the refinement worker busy (alternating runs).
* network  — the DECA-style detail network (``engines/detail_uv.onnx``) if present: CPU latency via
             onnxruntime and correlation of its displacement maps with the SFS maps on held-out samples.

    .venv/bin/python tools/bench_refine.py [--sections detail,detaildiag,photos,twoview,live,network] [--json]
        [--seed 7] [--detail-samples 3] [--lights studio,key45] [--sfs FIELD=VALUE ...] [--medium-weight W]

``--sfs FIELD=VALUE`` overrides a ``SfsOptions`` field in the detail, detaildiag and photos sections;
``--medium-weight W`` scales the medium stage's landmark weights (``RefineOptions.medium_weight``) in detail
and photos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

LIGHT_SKIN = np.array([0.82, 0.64, 0.54], np.float32)


def studio_sh(rng: np.random.Generator) -> np.ndarray:
    """Ambient plus one key light from the upper left/right front (a common portrait set-up)."""
    side = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.4)
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 0.5 / 0.282095
    sh[1] = -rng.uniform(0.15, 0.3) / 0.488603
    sh[2] = -0.5 / 0.488603
    sh[3] = side / 0.488603
    return sh


def interior(mask: np.ndarray, px: int) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return np.asarray(binary_erosion(mask, iterations=px))


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if a.size < 10 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------------------------- detail
def key_light_sh(rng: np.random.Generator) -> np.ndarray:
    """Ambient plus a portrait key light 45° to the side and 35° up (±10°): stronger oblique components than
    ``studio_sh``, whose key is ~30° to the side and ~20° up (shading sees a bump's tilt only along the
    light's sideways component)."""
    side = rng.choice([-1.0, 1.0])
    a, e = np.radians(45.0 + rng.uniform(-10, 10)), np.radians(35.0 + rng.uniform(-10, 10))
    d = np.array([side * np.sin(a) * np.cos(e), -np.sin(e), -np.cos(a) * np.cos(e)])  # toward the light
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 0.4 / 0.282095
    sh[1], sh[2], sh[3] = (0.6 * d[1], 0.6 * d[2], 0.6 * d[0])
    sh[1:4] /= 0.488603
    return sh


LIGHTS = {"studio": studio_sh, "key45": key_light_sh}


def _options(sfs: Any = None, medium_weight: float | None = None) -> Any:
    """The product's refinement options with the bench's overrides (``--sfs``, ``--medium-weight``)."""
    from realtime.refine.snapshot import RefineOptions

    opts = RefineOptions() if sfs is None else RefineOptions(sfs=sfs)
    return opts if medium_weight is None else dataclasses.replace(opts, medium_weight=medium_weight)


def _detail_sample(gen: Any, model: Any, atlas: Any, seed: int, i: int, light: str) -> tuple[Any, np.ndarray, Any]:
    """The bench's synthetic detail render ``i`` of ``seed`` under ``light``: the sample, its true SH light
    and the true coarse fit (pose and undisplaced vertices, as the fine stage alone is given it)."""
    from realtime.refine.detail_synth import render_detail_sample
    from realtime.results import FaceFit, Pose

    rng = np.random.default_rng(seed * 1000 + i)
    sh_true = np.asarray(LIGHTS[light](rng), np.float64)
    ds = render_detail_sample(gen, model, atlas, seed * 1000 + i, distance_mm=330.0,
                              albedo=np.tile(LIGHT_SKIN, (model.n_vertices, 1)), sh_coeffs=sh_true)
    v = np.asarray(ds.vertices_mm)
    lm = v[model.landmarks68]
    true_fit = FaceFit(Pose(ds.rotation, ds.translation_mm), np.zeros(model.n_expressions),
                       np.zeros(model.n_identity), v, ds.intrinsics.project(lm), lm, 0.0, 1.0)
    return ds, sh_true, true_fit


def _texel_mm(atlas: Any, model: Any) -> float:
    """Median edge length of the face-area triangles in mm (mean shape) over their length in texels."""
    tri = atlas.triangles
    v = model.mean_mm.astype(np.float64)
    uv = np.asarray(atlas.uv, np.float64)[atlas.triangle_uv] * atlas.size
    mm = np.linalg.norm(v[tri[:, 1]] - v[tri[:, 0]], axis=1)
    tx = np.linalg.norm(uv[:, 1] - uv[:, 0], axis=1)
    ok = tx > 1e-6
    return float(np.median(mm[ok] / tx[ok]))


def bench_detail(n: int, seed: int, lights: list[str], sfs: Any = None,
                 medium_weight: float | None = None) -> dict[str, Any]:
    """Normals are compared as deviations from the *true* undisplaced surface, all from depth maps through
    one operator (``depth_normals``, forward differences), on the same crop pixels: the truth is
    n(displaced) - n(smooth); the refined mesh scores n(refined) - n(smooth), so a perfect reconstruction
    scores 1 and the coarse mesh about 0. (Comparing n(refined) - n(medium) instead, as the first version
    did, caps even a perfect reconstruction at ~0.4: the medium mesh's own shape error, twice the bumps'
    normal amplitude, then counts as "detail"; it is printed as ``old``.) Two runs per sample: end to end
    (landmarks → fit → medium → fine) and the fine stage alone on the true coarse face."""
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.detail_synth import (
        DETAIL_BAND_MM,
        highpass,
        normal_detail_correlation,
        own_base_detail_correlation,
    )
    from realtime.refine.job import RefineEngine, RefineRequest
    from realtime.refine.sfs import SfsOptions, depth_normals
    from realtime.refine.snapshot import RefineOptions
    from realtime.synthetic import SyntheticGenerator

    sfs = sfs or SfsOptions()
    model = load_face_model()
    corr_tab = load_correspondence(model)
    rows = []
    with SyntheticGenerator(model, 512, 512, seed=seed) as gen, \
            RefineEngine(model, corr_tab, _options(sfs, medium_weight)) as eng, \
            RefineEngine(model, corr_tab, RefineOptions(medium=False, photometric=False, sfs=sfs)) as eng_true:
        for light in lights:
            for i in range(n):
                ds, _, true_fit = _detail_sample(gen, model, eng.atlas, seed, i, light)
                k0 = ds.intrinsics
                row: dict[str, Any] = {"light": light, "sample": i}
                for run, engine, fit in (("e2e", eng, None), ("stage", eng_true, true_fit)):
                    try:
                        out, ref = engine.run(RefineRequest(image=ds.image, intrinsics=k0, fit=fit))
                    except Exception as exc:  # a failed sample is reported, not hidden
                        row[f"{run}_error"] = str(exc)
                        continue
                    s = ref.sfs
                    k = ref.crop.intrinsics
                    # the shared definition (tests use it too); the baselines below repeat it inline
                    row[f"{run}_refined"] = normal_detail_correlation(ds, s.depth, s.mask, k)
                    n_true = ds.depth_map_normals(k)
                    n_smooth = ds.depth_map_normals(k, displaced=False)
                    defined = (np.abs(n_true).sum(-1) > 0) & (np.abs(n_smooth).sum(-1) > 0)
                    m = interior(s.mask & defined, 6)
                    truth = n_true - n_smooth
                    n_ref = depth_normals(s.depth, k)
                    n_coarse = depth_normals(s.depth0, k)
                    lum = ref.crop.image @ np.array([0.299, 0.587, 0.114])
                    height = highpass(lum, s.mask, 3.0) * 10.0  # dark = deep, 10 mm per unit of intensity
                    n_dark = depth_normals(s.depth0 - height, k)
                    row[f"{run}_coarse"] = corr((n_coarse - n_smooth)[m], truth[m])
                    row[f"{run}_dark_is_deep"] = corr((n_dark - n_smooth)[m], truth[m])
                    row[f"{run}_refined_hp5"] = corr(highpass(n_ref - n_smooth, m, 5.0)[m],
                                                     highpass(truth, m, 5.0)[m])
                    # the product's own detail (refined minus its base) against the true detail (displaced
                    # minus undisplaced), both band-split alike at DETAIL_BAND_MM; and the same for the UV
                    # displacement map against the true height map (texels of the face's size in mm)
                    mm_px = float(np.median(s.depth0[s.mask])) / k.fx
                    row[f"{run}_detail"] = own_base_detail_correlation(ds, s.depth, s.depth0, s.mask, k, mm_px)
                    sig = DETAIL_BAND_MM / mm_px
                    row[f"{run}_dark_detail"] = corr(highpass(n_dark - n_coarse, m, sig)[m],
                                                     highpass(truth, m, sig)[m])
                    uvm = interior(ref.uv_valid, 4)
                    sig_uv = DETAIL_BAND_MM / _texel_mm(eng.atlas, model)
                    row[f"{run}_disp"] = corr(highpass(ref.displacement_uv.astype(np.float64), uvm, sig_uv)[uvm],
                                              highpass(ds.height_uv.astype(np.float64), uvm, sig_uv)[uvm])
                    row[f"{run}_s"] = out.timings_ms["total"] / 1e3
                    # UV: the refined model-space normal map (back to camera space with the fitted
                    # rotation, into the truth's model space with the true one) minus the true smooth map
                    vv = interior(ref.uv_valid & (np.abs(ds.smooth_normal_uv).sum(-1) > 0), 4)
                    fit_rot = np.asarray(out.pose.rotation if out.pose is not None else ds.rotation)
                    n_uv = ref.normal_uv.astype(np.float64) @ fit_rot.T @ ds.rotation
                    row[f"{run}_uv"] = corr((n_uv - ds.smooth_normal_uv)[vv],
                                            (ds.normal_uv - ds.smooth_normal_uv)[vv])
                    if run == "e2e":
                        nt, covered = ds.camera_normals(k)
                        ns, _ = ds.camera_normals(k, displaced=False)
                        mo = interior(s.mask & covered, 6)
                        row["e2e_old"] = corr((s.normals - s.normals0)[mo], (nt - ns)[mo])
                        row["photometric_coarse"], row["photometric_refined"] = ref.photometric_errors()
                        row["pixels"] = int(m.sum())
                rows.append(row)
    means: dict[str, dict[str, float]] = {}
    for light in lights:
        sel = [r for r in rows if r["light"] == light]
        keys = [k for k in sel[0] if k not in ("light", "sample") and not k.endswith("_error")] if sel else []
        means[light] = {k: statistics.mean(r[k] for r in sel if k in r) for k in keys
                        if any(k in r for r in sel)}
    return {"samples": rows, "mean": means}


def bench_detail_diag(n: int, seed: int, lights: list[str], sfs: Any = None) -> list[dict[str, Any]]:
    """Where the fine stage loses the synthetic detail (the same samples as ``bench_detail``, fine stage on the
    true coarse face). t = the true detail's relative shading (Y(n_displaced) - Y(n_smooth)) · sh_true /
    Y(n_smooth) · sh_true from the renderer's interpolated normals; every map high-passed at DETAIL_BAND_MM.
    Columns: the stage-1 light's band-1 direction against the true light (cosine) and its band-1/band-0
    strength (fitted, true); slope and correlation against t of the albedo map's relative luminance (does
    the albedo take the detail's shading?), of the refined depth's own detail shading, and of the input image
    over the true smooth shading (how much of t the image carries); the bench's truth (forward differences
    of the dense mesh's depth map) against the interpolated normals' detail (the ceiling a perfect recovery of
    the shaded normals would score); the refined detail against both truths on the same pixels."""
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.detail_synth import DETAIL_BAND_MM, highpass
    from realtime.refine.job import RefineEngine, RefineRequest
    from realtime.refine.sfs import SfsOptions, depth_normals, sh_basis
    from realtime.refine.snapshot import RefineOptions
    from realtime.synthetic import SyntheticGenerator

    lum = np.array([0.299, 0.587, 0.114])
    model = load_face_model()
    corr_tab = load_correspondence(model)
    opts = RefineOptions(medium=False, photometric=False, sfs=sfs or SfsOptions())

    def slope_corr(a: np.ndarray, t: np.ndarray) -> tuple[float, float]:
        return float((a * t).sum() / max(float((t * t).sum()), 1e-12)), corr(a, t)

    def band1(sh: np.ndarray) -> tuple[np.ndarray, float]:
        g = np.asarray(sh, np.float64) @ lum
        return g[[3, 1, 2]], float(g[0])

    rows = []
    with SyntheticGenerator(model, 512, 512, seed=seed) as gen, RefineEngine(model, corr_tab, opts) as eng:
        for light in lights:
            for i in range(n):
                ds, sh_true, fit = _detail_sample(gen, model, eng.atlas, seed, i, light)
                _, ref = eng.run(RefineRequest(image=ds.image, intrinsics=ds.intrinsics, fit=fit))
                s, k = ref.sfs, ref.crop.intrinsics
                nt, ns = ds.depth_map_normals(k), ds.depth_map_normals(k, displaced=False)
                ni, cov = ds.camera_normals(k)
                nsi, _ = ds.camera_normals(k, displaced=False)
                s_true = (sh_basis(nsi) @ sh_true) @ (LIGHT_SKIN * lum)
                t_full = ((sh_basis(ni) @ sh_true) @ (LIGHT_SKIN * lum) - s_true) / np.maximum(s_true, 1e-3)
                # pixels where the true smooth shading is well above 0 (relative shading is defined there)
                m = interior(s.mask & cov & (np.abs(nt).sum(-1) > 0) & (np.abs(ns).sum(-1) > 0)
                             & (s_true > 0.1), 6)
                sig = DETAIL_BAND_MM / (float(np.median(s.depth0[s.mask])) / k.fx)
                t = highpass(t_full, m, sig)[m]
                albedo = s.albedo @ lum
                rel_albedo = highpass(albedo / np.median(albedo[m]) - 1.0, m, sig)[m]
                n_ref, n_base = depth_normals(s.depth, k), depth_normals(s.depth0, k)
                sr, s0 = (sh_basis(n_ref) @ s.sh) @ lum, (sh_basis(n_base) @ s.sh) @ lum
                depth_shading = highpass((sr - s0) / np.maximum(s0, 1e-3), m, sig)[m]
                image_ratio = highpass((ref.crop.image @ lum) / np.maximum(s_true, 1e-3), m, sig)[m]
                v_fit, a_fit = band1(s.sh0)
                v_true, a_true = band1(sh_true)
                truth_dm = highpass(nt - ns, m, sig)[m]
                truth_interp = highpass(ni - nsi, m, sig)[m]
                detail = highpass(n_ref - n_base, m, sig)[m]
                rows.append({
                    "light": light, "sample": i,
                    "light_cos": float(v_fit @ v_true / np.linalg.norm(v_fit) / np.linalg.norm(v_true)),
                    "b1_b0_fit": float(np.linalg.norm(v_fit) / a_fit),
                    "b1_b0_true": float(np.linalg.norm(v_true) / a_true),
                    "albedo_slope_corr": slope_corr(rel_albedo, t),
                    "depth_shading_slope_corr": slope_corr(depth_shading, t),
                    "image_corr": corr(image_ratio, t),
                    "truth_dm_vs_interp": corr(truth_dm, truth_interp),
                    "detail_vs_interp": corr(detail, truth_interp),
                    "detail_vs_dm": corr(detail, truth_dm),
                })
    return rows


# ---------------------------------------------------------------------------------------------- photos
def resample_crop(values: np.ndarray, src: Any, dst: Any, nearest: bool = False) -> np.ndarray:
    """``values`` on the crop ``src`` (a ``refine.snapshot.Crop``) resampled onto the pixels of ``dst``: both
    crops are scaled windows of the same photo, so a ``dst`` pixel maps to ``src`` through the photo's
    coordinates (``u_src = (u_dst - cx_dst) / fx_dst * fx_src + cx_src``, the same for v)."""
    import cv2

    kd, ks = dst.intrinsics, src.intrinsics
    v, u = np.mgrid[0 : kd.height, 0 : kd.width].astype(np.float32)
    mx = ((u - kd.cx) / kd.fx * ks.fx + ks.cx).astype(np.float32)
    my = ((v - kd.cy) / kd.fy * ks.fy + ks.cy).astype(np.float32)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.remap(np.asarray(values, np.float32), mx, my, interp, borderMode=cv2.BORDER_CONSTANT)
    return np.asarray(out)


def bench_photos(images: list[Path], holdout_fraction: float = 0.25, sfs: Any = None,
                 medium_weight: float | None = None) -> dict[str, Any]:
    """Each photo through the product (landmark fit -> photometric identity/pose refinement -> medium -> fine)
    and through the pipeline without the photometric step (the landmark fit's own mesh, which the live path
    shows). Every error (mean |I - render|, grey levels) is over the same pixels: the product's refined face
    intersected with the landmark-fit run's face resampled into the product's crop (never across the crops'
    borders), against the product crop's image. Renders:

    * ``lm_prior``: the landmark fit's medium mesh with the per-region mean colours (γ_avg of Eq. 6) and the
      stage-1 light (least squares on its normals): the coarse face before anything is estimated per pixel
      (the paper's coarse render, with region colours in place of a 3DMM mean texture);
    * ``lm_coarse``: the landmark fit's medium mesh with the *same* per-pixel albedo and light estimation as
      the refined render (albedo map of Eq. 6 fitted on its normals): what the albedo explains without new
      geometry, so the refined render's gain over it is the geometry's share;
    * ``coarse``: the same for the product's own coarse mesh (after the photometric step);
    * ``refined``: the product's render (refined depth, its albedo map and light).

    Guard against an albedo/depth that copies the image: the product again with ``holdout_fraction`` of
    6 px blocks left out of every data term of the fine stage (light, region colours, albedo, depth,
    gradient term); its refined render and its region-colour render are scored on those unseen blocks only
    (2 px in from the mask border)."""
    from realtime.capture import load_rgb
    from realtime.correspondence import load_correspondence
    from realtime.errors import UserError
    from realtime.facemodel import load_face_model
    from realtime.refine.job import RefineEngine, RefineRequest

    model = load_face_model()
    corr_tab = load_correspondence(model)
    rows = []
    base = _options(sfs, medium_weight)
    with RefineEngine(model, corr_tab, base) as eng, \
            RefineEngine(model, corr_tab, dataclasses.replace(base, photometric=False)) as eng_lm, \
            RefineEngine(model, corr_tab, dataclasses.replace(base, holdout_fraction=holdout_fraction)) as eng_ho:
        eng.run(RefineRequest(image=load_rgb(images[0])))  # warm-up (imports, tracker graph)
        for path in images:
            img = load_rgb(path)
            try:
                _, ref_lm = eng_lm.run(RefineRequest(image=img, out_dir=None))
                t0, c0 = time.perf_counter(), time.process_time()
                out, ref = eng.run(RefineRequest(image=img, out_dir=None))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                _, ref_ho = eng_ho.run(RefineRequest(image=img, out_dir=None))
            except UserError as exc:
                rows.append({"image": path.name, "error": str(exc)})
                continue
            s, sl = ref.sfs, ref_lm.sfs
            target = ref.crop.image
            lm_mask = resample_crop(sl.mask.astype(np.float32), ref_lm.crop, ref.crop, nearest=True) > 0.5
            same = s.mask & interior(lm_mask, 1)

            def err(render: np.ndarray, m: np.ndarray, target: np.ndarray = target) -> float:
                return float(np.abs(render - target)[m].mean() * 255.0)

            lm_prior_img = resample_crop(sl.render(prior_albedo=True), ref_lm.crop, ref.crop)
            lm_coarse_img = resample_crop(sl.render(refined=False), ref_lm.crop, ref.crop)
            lm_refined_img = resample_crop(sl.render(refined=True), ref_lm.crop, ref.crop)
            e = {name: err(r, same) for name, r in (
                ("lm_prior", lm_prior_img), ("lm_coarse", lm_coarse_img), ("lm_refined", lm_refined_img),
                ("prior", s.render(prior_albedo=True)), ("coarse", s.render(refined=False)),
                ("refined", s.render(refined=True)))}
            m_in = interior(same, 6)
            e_in = {name: err(r, m_in) for name, r in (("lm_prior", lm_prior_img), ("lm_coarse", lm_coarse_img),
                                                       ("refined", s.render(refined=True)))}
            sh = ref_ho.sfs
            ho = sh.holdout & interior(sh.mask, 2) if sh.holdout is not None else np.zeros_like(sh.mask)
            ho_prior = float(np.abs(sh.render(prior_albedo=True) - ref_ho.crop.image)[ho].mean() * 255.0)
            ho_coarse = float(np.abs(sh.render(refined=False) - ref_ho.crop.image)[ho].mean() * 255.0)
            ho_refined = float(np.abs(sh.render(refined=True) - ref_ho.crop.image)[ho].mean() * 255.0)
            # the same run's error on the pixels it did see (same border margin): far below the held-out
            # figure would mean the fit copies what it sees
            seen = interior(sh.mask, 2) & ~ho
            ho_seen = float(np.abs(sh.render(refined=True) - ref_ho.crop.image)[seen].mean() * 255.0)
            row: dict[str, Any] = (
                {
                    "image": path.name,
                    "size": f"{img.shape[1]}x{img.shape[0]}",
                    "crop": f"{ref.crop.image.shape[1]}x{ref.crop.image.shape[0]}",
                    "pixels": int(same.sum()),
                    "pixels_own_mask": int(s.mask.sum()),
                    **{f"err_{k}": v for k, v in e.items()},
                    "reduction_vs_lm_prior_pct": 100.0 * (1.0 - e["refined"] / e["lm_prior"]),
                    "reduction_vs_lm_coarse_pct": 100.0 * (1.0 - e["refined"] / e["lm_coarse"]),
                    "reduction_own_coarse_pct": 100.0 * (1.0 - e["refined"] / e["coarse"]),
                    "reduction_without_photometric_fit_pct": 100.0 * (1.0 - e["lm_refined"] / e["lm_coarse"]),
                    "interior_reduction_vs_lm_prior_pct": 100.0 * (1.0 - e_in["refined"] / e_in["lm_prior"]),
                    "interior_reduction_vs_lm_coarse_pct": 100.0 * (1.0 - e_in["refined"] / e_in["lm_coarse"]),
                    "heldout_pixels": int(ho.sum()),
                    "heldout_prior": ho_prior,
                    "heldout_coarse": ho_coarse,
                    "heldout_refined": ho_refined,
                    "heldout_reduction_pct": 100.0 * (1.0 - ho_refined / ho_prior),
                    "heldout_run_seen_refined": ho_seen,
                    "photometric_fit_rms": out.photometric_fit_rms,
                    "landmark_px_coarse": ref.landmark_error_px[0],
                    "landmark_px_medium": ref.landmark_error_px[1],
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "stages_ms": {k: round(v, 1) for k, v in out.timings_ms.items()},
                }
            )
            rows.append(row)
    return {"images": rows}


def bench_export(image: Path, out_dir: Path) -> dict[str, Any]:
    """One snapshot end to end through the CLI path (landmarks → fit → SFS → export), wall + CPU."""
    from realtime.capture import load_rgb
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.export import render_preview
    from realtime.refine.job import RefineEngine, RefineRequest

    model = load_face_model()
    img = load_rgb(image)
    with RefineEngine(model, load_correspondence(model)) as eng:
        eng.run(RefineRequest(image=img))  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        out, _ = eng.run(RefineRequest(image=img, out_dir=str(out_dir)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    import trimesh

    assert out.export is not None
    coarse = trimesh.load(out.export.files["coarse_ply"], force="mesh")
    fine = trimesh.load(out.export.files["ply"], force="mesh")
    textured = trimesh.load(out.export.files["obj"], force="mesh")
    picture = out_dir / "coarse_vs_refined.png"
    render_preview([(coarse.vertices, coarse.faces), (fine.vertices, fine.faces)], picture, size=512)
    return {
        "image": image.name,
        "wall_s": wall,
        "cpu_s": cpu,
        "picture": str(picture),
        "files": {k: str(v) for k, v in out.export.files.items()},
        "obj_vertices": len(textured.vertices),
        "stages_ms": {k: round(v, 1) for k, v in out.timings_ms.items()},
    }


# ---------------------------------------------------------------------------------------------- two-view
REGIONS = ("forehead", "brow", "eye", "nose", "cheeks", "mouth", "jaw/chin")


def face_region_labels(model: Any) -> np.ndarray:
    """Label of each face-area vertex: the refinement's semantic regions, skin split at the brows and the
    mouth into forehead / cheeks / jaw-chin (mean-shape heights)."""
    from realtime.refine.medium import vertex_regions

    fa = model.face_area_vertices
    reg = vertex_regions(model)[:fa]
    mean = model.mean_mm[:fa]
    lm = model.mean_mm[model.landmarks68]
    brow_y, mouth_y = lm[17:27, 1].mean(), lm[48:68, 1].mean()
    names = {0: "cheeks", 1: "brow", 2: "eye", 3: "nose", 4: "mouth"}
    lab = np.array([names[int(r)] for r in reg], dtype=object)
    lab[(reg == 0) & (mean[:, 1] > brow_y)] = "forehead"
    lab[(reg == 0) & (mean[:, 1] < mouth_y)] = "jaw/chin"
    return lab


def bench_twoview(n: int, seed: int) -> dict[str, Any]:
    """Besides the real MediaPipe landmarks, each pair is fitted once more with *perfect* landmarks (the
    model's own correspondence points of the true face, projected): that row separates what the joint
    solve can do from what the landmark detector lets it do."""
    import dataclasses

    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.landmarks import FaceMeshTracker
    from realtime.refine.photometric import PhotometricFitter, PhotoView
    from realtime.refine.twoview import JointFitter, ViewInput, rotated_view
    from realtime.synthetic import SyntheticGenerator

    model = load_face_model()
    corr_tab = load_correspondence(model)
    photo = PhotometricFitter(model, corr_tab)
    fa = model.face_area_vertices
    zero = np.zeros(model.n_expressions)
    labels = face_region_labels(model)

    def aligned_error(identity: np.ndarray, truth: np.ndarray) -> np.ndarray:
        v = model.shape(identity, zero)[:fa].astype(np.float64)
        t = truth[:fa].astype(np.float64)
        vc, tc = v - v.mean(0), t - t.mean(0)
        u, _, wt = np.linalg.svd(vc.T @ tc)
        d = np.sign(np.linalg.det(u @ wt))
        r = (u @ np.diag([1.0, 1.0, d]) @ wt).T
        return np.asarray(vc @ r.T - tc)

    def err(identity: np.ndarray, truth: np.ndarray) -> float:
        return float(np.linalg.norm(aligned_error(identity, truth), axis=1).mean())

    def regions(identity: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        e = np.linalg.norm(aligned_error(identity, truth), axis=1)
        return {r: float(e[labels == r].mean()) for r in REGIONS}

    rows = []
    region_rows: dict[str, list[dict[str, float]]] = {"front": [], "side": [], "joint": [], "front+photo": [],
                                                      "two-view photo": [], "mean face": []}
    joint = JointFitter(model, corr_tab)
    # perfect landmarks: no MediaPipe bias table, and no learned landmark regressor in the fitter where it
    # has one (both model MediaPipe's errors, which these points do not have)
    from realtime.fitting import FitOptions

    exact_opts = FitOptions(lock_identity=False, cold_iterations=20)
    if any(f.name == "landmark_prior" for f in dataclasses.fields(exact_opts)):
        exact_opts = dataclasses.replace(exact_opts, landmark_prior=False)
    joint_exact = JointFitter(model, corr_tab, options=exact_opts, bias=False)
    with SyntheticGenerator(model, 512, 512, seed=seed) as gen, FaceMeshTracker(static=True) as tracker:
        for i in range(n):
            rng = np.random.default_rng(seed * 7919 + i)
            ident = rng.normal(0.0, 1.0, model.n_identity).astype(np.float32)
            yaws = (float(rng.uniform(-5, 5)), float(rng.choice([-1.0, 1.0]) * rng.uniform(40, 55)))
            views = []
            perfect = []
            images = []
            for j, yaw in enumerate(yaws):
                smp = gen.sample(
                    identity=ident,
                    expression=zero,
                    yaw_deg=yaw,
                    pitch_deg=float(rng.uniform(-5, 5)),
                    roll_deg=0.0,
                    seed=int(seed * 100 + 10 * i + j),
                )
                tracks = tracker.track(smp.image)
                if not tracks:
                    break
                views.append(ViewInput(tracks[0], smp.intrinsics))
                lm = np.asarray(tracks[0].landmarks_px, np.float32).copy()
                lm[:, :2] = smp.intrinsics.project(corr_tab.points(np.asarray(smp.vertices_mm, np.float64)))
                perfect.append(ViewInput(dataclasses.replace(tracks[0], landmarks_px=lm), smp.intrinsics))
                images.append(smp.image)
            if len(views) < 2:
                rows.append({"pair": i, "error": "no face found in a view"})
                continue
            truth = model.shape(ident)
            t0 = time.perf_counter()
            jf = joint.fit(views)
            dt = time.perf_counter() - t0
            singles = [err(np.asarray(f.identity), truth) for f in jf.single_fits]
            # analysis by synthesis from the single-view landmark fits: both images, and the front one alone
            t1 = time.perf_counter()
            locked = joint.fit(views, iterations=0).fits  # both views with the frontal view's identity locked
            ph2 = photo.fit_views([PhotoView(img, v.intrinsics, f, v.track)
                                   for img, v, f in zip(images, views, locked, strict=True)])
            dt_photo = time.perf_counter() - t1
            ph1 = photo.fit_views([PhotoView(images[0], views[0].intrinsics, jf.single_fits[0], views[0].track)])
            jp = joint_exact.fit(perfect)
            perfect_singles = [err(np.asarray(f.identity), truth) for f in jp.single_fits]
            # the paper's one-input scheme: the front view plus its reconstruction rendered turned by 30°
            rendered, _ = rotated_view(images[0], jf.single_fits[0], model, views[0].intrinsics)
            rtracks = tracker.track(rendered)
            rot_err = float("nan")
            if rtracks:
                rot = joint.fit([views[0], ViewInput(rtracks[0], views[0].intrinsics)])
                rot_err = err(rot.identity, truth)
            for name, idv in (("front", jf.single_fits[0].identity), ("side", jf.single_fits[1].identity),
                              ("joint", jf.identity), ("front+photo", ph1.identity),
                              ("two-view photo", ph2.identity), ("mean face", np.zeros(model.n_identity))):
                region_rows[name].append(regions(np.asarray(idv), truth))
            rows.append(
                {
                    "pair": i,
                    "side_yaw": yaws[1],
                    "front_single_mm": singles[0],
                    "side_single_mm": singles[1],
                    "best_single_mm": min(singles),
                    "joint_mm": err(jf.identity, truth),
                    "front_photo_mm": err(ph1.identity, truth),
                    "twoview_photo_mm": err(ph2.identity, truth),
                    "front_plus_rendered_30_mm": rot_err,
                    "mean_face_mm": err(np.zeros(model.n_identity), truth),
                    "perfect_lm_best_single_mm": min(perfect_singles),
                    "perfect_lm_joint_mm": err(jp.identity, truth),
                    "joint_s": dt,
                    "twoview_photo_s": dt_photo,
                }
            )
    ok = [r for r in rows if "error" not in r]
    summary = (
        {k: float(np.nanmean([r[k] for r in ok])) for k in ok[0] if k not in ("pair", "side_yaw")} if ok else {}
    )
    if ok:
        summary["joint_vs_best_single_pct"] = 100.0 * (1.0 - summary["joint_mm"] / summary["best_single_mm"])
        summary["twoview_photo_vs_best_single_pct"] = 100.0 * (
            1.0 - summary["twoview_photo_mm"] / summary["best_single_mm"])
        summary["front_photo_vs_front_pct"] = 100.0 * (
            1.0 - summary["front_photo_mm"] / summary["front_single_mm"])
        summary["perfect_lm_joint_vs_best_single_pct"] = 100.0 * (
            1.0 - summary["perfect_lm_joint_mm"] / summary["perfect_lm_best_single_mm"])
    per_region = {name: {r: statistics.mean(d[r] for d in lst) for r in REGIONS}
                  for name, lst in region_rows.items() if lst}
    return {"pairs": rows, "mean": summary, "regions_mm": per_region}


# ---------------------------------------------------------------------------------------------- live
def _live_run(video: str, frames: int, worker: Any, image: np.ndarray) -> dict[str, Any]:
    """One paced run of the ``realtime-face run`` stages; with ``worker``, its queue is filled first and the
    pipeline also carries the ``RefineSink`` (keyframe selection on every frame), as ``run --refine`` does."""
    from realtime.cli import run
    from realtime.pipeline import Pipeline
    from realtime.refine.job import RefineRequest
    from realtime.refine.worker import RefineSink

    parser = argparse.ArgumentParser()
    run.register(parser.add_subparsers())
    args = parser.parse_args(["run", "--video", video, "--realtime", "--headless"])
    source = run.build_source(args)
    source.open()
    stages = run.build_stages(args, source)
    jobs = 0
    sinks: list[Any] = []
    if worker is not None:
        for _ in range(worker.max_pending):
            if worker.submit(RefineRequest(image=image, reason="bench"), 1) is not None:
                jobs += 1
        fit_stage = next(st for st in stages if getattr(st, "name", "") == "fit")
        sinks.append(RefineSink(worker, fit_stage.intrinsics.for_size,
                                tuple(fit_stage.model.expression_names)))
    t0 = time.perf_counter()
    with Pipeline(source, stages, sinks, max_frames=frames) as pipeline:
        stats = pipeline.run()
    wall = time.perf_counter() - t0
    busy = worker.busy if worker is not None else False
    done = 0
    if worker is not None:
        done = sum(1 for r in worker.results() if r.status == "done")
        worker.cancel_all()
        worker.wait_idle(120.0)
        worker.results()
    f = stats.stages["frame"]
    return {
        "frames": stats.frames,
        "p95_ms": f.p95_ms,
        "median_ms": f.median_ms,
        "mean_ms": f.mean_ms,
        "worker_busy_at_end": busy,
        "jobs_submitted": jobs,
        "jobs_done": done,
        "wall_s": wall,
        "loadavg": os.getloadavg()[0],
    }


def bench_live(video: str, frames: int, repeats: int, image: np.ndarray) -> dict[str, Any]:
    """Alternating runs without / with the worker busy. The machine is shared, so other people's load moves
    single p95 figures by tens of percent: the summary is the median over pairs of the per-pair growth
    (neighbouring runs see similar outside load), next to the growth of the mean p95 and the load average."""
    from realtime.refine.job import RefineRequest
    from realtime.refine.worker import RefineWorker

    base, loaded = [], []
    with RefineWorker(max_pending=6) as worker:
        worker.submit(RefineRequest(image=image, reason="warm-up"), 1)
        worker.wait_result(timeout=120)  # the child has loaded the model and tracked once
        for i in range(repeats):
            # alternate which condition goes first, so a load trend does not favour one of them
            order = ((None, base), (worker, loaded)) if i % 2 == 0 else ((worker, loaded), (None, base))
            for w, out in order:
                out.append(_live_run(video, frames, w, image))
    b = statistics.mean(r["p95_ms"] for r in base)
    w = statistics.mean(r["p95_ms"] for r in loaded)
    pair = [100.0 * (lw["p95_ms"] / lb["p95_ms"] - 1.0) for lb, lw in zip(base, loaded, strict=True)]
    med = [100.0 * (lw["median_ms"] / lb["median_ms"] - 1.0) for lb, lw in zip(base, loaded, strict=True)]
    return {
        "baseline": base,
        "with_worker": loaded,
        "p95_baseline_ms": b,
        "p95_with_worker_ms": w,
        "p95_growth_pct": 100.0 * (w / b - 1.0),
        "p95_growth_pct_median_of_pairs": statistics.median(pair),
        "median_growth_pct_median_of_pairs": statistics.median(med),
        "loadavg": os.getloadavg()[0],
    }


# ---------------------------------------------------------------------------------------------- network
def bench_network() -> dict[str, Any]:
    from realtime.paths import engines_dir
    from realtime.refine.detail import DETAIL_ENGINE, DetailNetwork

    path = engines_dir() / DETAIL_ENGINE
    if not path.is_file():
        return {"available": False, "path": str(path)}
    net = DetailNetwork(path)
    report = net.card_metrics()
    rng = np.random.default_rng(0)
    x = (rng.random((1, 3, net.input_size, net.input_size)) * 255).astype(np.uint8)
    net.predict(x[0].transpose(1, 2, 0))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        net.predict(x[0].transpose(1, 2, 0))
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "available": True,
        "path": str(path),
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p95": float(np.percentile(times, 95)),
        "card": report,
    }


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="detail,photos,export,twoview,live,network")
    ap.add_argument("--detail-samples", type=int, default=3)
    ap.add_argument("--lights", default="studio,key45", help="detail section: lighting set-ups")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--live-frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sfs", action="append", default=[], metavar="FIELD=VALUE",
                    help="detail, detaildiag and photos sections: override a realtime.refine.sfs.SfsOptions field "
                         "(Python literal), e.g. --sfs photometric_scale=4 --sfs depth0_smoothing_px=2")
    ap.add_argument("--medium-weight", type=float, default=None,
                    help="detail and photos sections: scale of the medium stage's landmark weights "
                         "(RefineOptions.medium_weight)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-refine"), help="where the export goes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from realtime.capture import load_rgb
    from realtime.paths import shared_dir

    sections = set(args.sections.split(","))
    images = sorted((shared_dir() / "data" / "images").glob("*.jpg"))
    res: dict[str, Any] = {"loadavg_start": os.getloadavg()[0]}
    sfs = None
    if args.sfs:
        import ast

        from realtime.refine.sfs import SfsOptions

        fields = {f.name for f in dataclasses.fields(SfsOptions)}
        overrides: dict[str, Any] = {}
        for item in args.sfs:
            key, sep, val = item.partition("=")
            if not sep or key not in fields:
                ap.error(f"--sfs {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
            try:
                overrides[key] = ast.literal_eval(val)
            except (ValueError, SyntaxError):
                ap.error(f"--sfs {item!r}: the value is not a Python literal")
        sfs = dataclasses.replace(SfsOptions(), **overrides)
        res["sfs_overrides"] = args.sfs
    if "detaildiag" in sections:
        res["detaildiag"] = bench_detail_diag(args.detail_samples, args.seed, args.lights.split(","), sfs)
        if not args.json:
            print("\n== detaildiag: fine stage on the true coarse face; t = true relative detail shading "
                  "(see bench_detail_diag)")
            print(f"{'light':>7} {'#':>3} {'lightcos':>8} {'b1/b0 fit':>9} {'true':>5} {'albedo s/r':>11} "
                  f"{'depth s/r':>11} {'image r':>7} {'dm~interp':>9} {'det~interp':>10} {'det~dm':>6}")
            for r in res["detaildiag"]:
                print(f"{r['light']:>7} {r['sample']:>3} {r['light_cos']:8.3f} {r['b1_b0_fit']:9.2f} "
                      f"{r['b1_b0_true']:5.2f} {r['albedo_slope_corr'][0]:5.2f}/{r['albedo_slope_corr'][1]:5.2f} "
                      f"{r['depth_shading_slope_corr'][0]:5.2f}/{r['depth_shading_slope_corr'][1]:5.2f} "
                      f"{r['image_corr']:7.2f} {r['truth_dm_vs_interp']:9.2f} {r['detail_vs_interp']:10.2f} "
                      f"{r['detail_vs_dm']:6.2f}")
    if "detail" in sections:
        res["detail"] = bench_detail(args.detail_samples, args.seed, args.lights.split(","), sfs,
                                     args.medium_weight)
        if not args.json:
            print("\n== detail: synthetic wrinkles/bumps, correlation of the recovered normal detail with the truth")
            print("   (deviation from the true smooth surface; e2e = landmarks -> fit -> medium -> fine, "
                  "stage = fine stage on the true coarse face)")
            print("   det = the product's detail n(refined) - n(its own base) vs n(displaced) - n(undisplaced), "
                  "both high-passed at 5 mm; dark det = 'dark is deep' the same way; disp = UV displacement "
                  "map vs true height map, both high-passed at 5 mm")
            cols = ("e2e_refined", "e2e_coarse", "e2e_dark_is_deep", "e2e_refined_hp5", "stage_refined",
                    "stage_coarse", "stage_refined_hp5", "e2e_old", "e2e_uv", "stage_uv", "e2e_detail",
                    "stage_detail", "e2e_dark_detail", "e2e_disp", "stage_disp", "e2e_s")
            heads = ("e2e", "coarse", "dark=deep", "e2e hp5", "stage", "coarse", "st hp5", "old", "e2e uv",
                     "stage uv", "e2e det", "st det", "dark det", "e2e disp", "st disp", "s")
            print(f"{'light':>7} {'#':>4} " + " ".join(f"{h:>9}" for h in heads))
            for r in res["detail"]["samples"]:
                print(f"{r['light']:>7} {r['sample']:>4} " + " ".join(
                    f"{r[c]:9.3f}" if c in r else f"{'err':>9}" for c in cols))
            for light, m in res["detail"]["mean"].items():
                print(f"{light:>7} {'mean':>4} " + " ".join(f"{m[c]:9.3f}" if c in m else f"{'-':>9}"
                                                          for c in cols))
    if "photos" in sections:
        res["photos"] = bench_photos(images, sfs=sfs, medium_weight=args.medium_weight)
        if not args.json:
            print("\n== photos: photometric error (grey levels), all renders on the same pixels (product's refined "
                  "face within the landmark-fit run's face)")
            print("   lm = landmark fit only (no photometric step); prior = region-mean colours + stage-1 light "
                  "(no per-pixel estimate); coarse = coarse geometry + the same albedo-map/light estimation as "
                  "the refined render; refined = the product")
            print("   held-out: 25 % of 6 px blocks left out of every fine-stage data term, error there "
                  "(region colours / coarse geometry + albedo map / refined; % = refined vs region colours)")
            print(
                f"{'image':>20} {'lm prior':>8} {'lm coar':>7} {'lm ref':>6} {'coarse':>6} {'refined':>7} "
                f"{'vs prior':>8} {'vs coar':>7} {'int.%':>11} {'held-out p/c/r':>20} {'ho %':>6} "
                f"{'wall s':>6} {'cpu s':>6}"
            )
            for r in res["photos"]["images"]:
                if "error" in r:
                    print(f"{r['image']:>20} error: {r['error']}")
                    continue
                print(
                    f"{r['image']:>20} {r['err_lm_prior']:8.2f} {r['err_lm_coarse']:7.2f} {r['err_lm_refined']:6.2f} "
                    f"{r['err_coarse']:6.2f} {r['err_refined']:7.2f} {r['reduction_vs_lm_prior_pct']:7.1f}% "
                    f"{r['reduction_vs_lm_coarse_pct']:6.1f}% "
                    f"{r['interior_reduction_vs_lm_prior_pct']:5.1f}/{r['interior_reduction_vs_lm_coarse_pct']:5.1f} "
                    f"{r['heldout_prior']:6.2f}/{r['heldout_coarse']:6.2f}/{r['heldout_refined']:6.2f} "
                    f"{r['heldout_reduction_pct']:5.1f}% "
                    f"{r['wall_s']:6.2f} {r['cpu_s']:6.2f}"
                )
                print(f"{'':>20} held-out run, refined on its seen pixels {r['heldout_run_seen_refined']:.2f}; "
                      f"pixels {r['pixels']} (own mask {r['pixels_own_mask']}); stages ms: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in r["stages_ms"].items()))
    if "export" in sections:
        res["export"] = bench_export(images[-1] if images else Path("missing"), args.out)
        if not args.json:
            e = res["export"]
            print(
                f"\n== export: one snapshot end to end ({e['image']}): wall {e['wall_s']:.2f} s, "
                f"CPU {e['cpu_s']:.2f} s; picture {e['picture']}"
            )
            print("   stages ms: " + ", ".join(f"{k} {v:.0f}" for k, v in e["stages_ms"].items()))
    if "twoview" in sections:
        res["twoview"] = bench_twoview(args.pairs, args.seed)
        if not args.json:
            print(
                "\n== two-view: face-area vertex error (mm, rigid alignment), synthetic front + side renders"
            )
            print(
                f"{'pair':>4} {'side yaw':>8} {'front':>6} {'side':>6} {'best 1':>6} {'joint':>6} "
                f"{'mean face':>9} {'front+30° render':>16} {'front+photo':>11} {'2-view photo':>12} {'photo s':>7}"
            )
            for r in res["twoview"]["pairs"]:
                if "error" in r:
                    print(f"{r['pair']:>4} error: {r['error']}")
                    continue
                print(
                    f"{r['pair']:>4} {r['side_yaw']:8.1f} {r['front_single_mm']:6.2f} "
                    f"{r['side_single_mm']:6.2f} "
                    f"{r['best_single_mm']:6.2f} {r['joint_mm']:6.2f} {r['mean_face_mm']:9.2f} "
                    f"{r['front_plus_rendered_30_mm']:16.2f} {r['front_photo_mm']:11.2f} {r['twoview_photo_mm']:12.2f} "
                    f"{r['twoview_photo_s']:7.2f}"
                )
            m = res["twoview"]["mean"]
            if m:
                print(
                    f"{'mean':>4} {'':8} {m['front_single_mm']:6.2f} {m['side_single_mm']:6.2f} "
                    f"{m['best_single_mm']:6.2f} {m['joint_mm']:6.2f} {m['mean_face_mm']:9.2f} "
                    f"{m['front_plus_rendered_30_mm']:16.2f} {m['front_photo_mm']:11.2f} {m['twoview_photo_mm']:12.2f} "
                    f"{m['twoview_photo_s']:7.2f}"
                )
                print(f"   vs best single view: joint landmark fit {m['joint_vs_best_single_pct']:+.1f} %, two-view "
                      f"photometric {m['twoview_photo_vs_best_single_pct']:+.1f} % (positive = lower error); "
                      f"front + photometric vs front: {m['front_photo_vs_front_pct']:+.1f} %")
                print(
                    f"   perfect landmarks (model points of the true face projected): best single "
                    f"{m['perfect_lm_best_single_mm']:.2f}, joint {m['perfect_lm_joint_mm']:.2f} mm "
                    f"({m['perfect_lm_joint_vs_best_single_pct']:+.1f} %)"
                )
                print("   per region (mm): " + " ".join(f"{r:>9}" for r in REGIONS))
                for name, reg in res["twoview"]["regions_mm"].items():
                    print(f"   {name:>15} " + " ".join(f"{reg[r]:9.2f}" for r in REGIONS))
    if "live" in sections:
        video = str(shared_dir() / "data" / "videos" / "talking_720p.mp4")
        photo = load_rgb(images[-1]) if images else np.zeros((480, 640, 3), np.uint8)
        res["live"] = bench_live(video, args.live_frames, args.repeats, photo)
        if not args.json:
            lv = res["live"]
            print(
                "\n== live loop (720p, 30 FPS pacing): frame time p95 without / with the worker busy"
            )
            for b, w in zip(lv["baseline"], lv["with_worker"], strict=True):
                print(
                    f"   p95 {b['p95_ms']:6.1f} ms / {w['p95_ms']:6.1f} ms   median {b['median_ms']:5.1f} / "
                    f"{w['median_ms']:5.1f}   jobs done while running: {w['jobs_done']}   "
                    f"load {b['loadavg']:.1f} / {w['loadavg']:.1f}"
                )
            print(
                f"   mean p95: {lv['p95_baseline_ms']:.1f} -> {lv['p95_with_worker_ms']:.1f} ms "
                f"({lv['p95_growth_pct']:+.1f} %); median of pairs: p95 {lv['p95_growth_pct_median_of_pairs']:+.1f} %, "
                f"median frame {lv['median_growth_pct_median_of_pairs']:+.1f} %; load average {lv['loadavg']:.1f}"
            )
    if "network" in sections:
        res["network"] = bench_network()
        if not args.json:
            n = res["network"]
            if not n["available"]:
                print(f"\n== detail network: not found at {n['path']}")
            else:
                print(
                    f"\n== detail network: onnxruntime CPU latency median {n['latency_ms_median']:.1f} ms, "
                    f"p95 {n['latency_ms_p95']:.1f} ms; card: {json.dumps(n['card'])}"
                )
    res["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        json.dump(res, sys.stdout, indent=1, default=float)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
