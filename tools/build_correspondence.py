"""Build and measure the MediaPipe-478 <-> face-model correspondence table.

Method: render the model (synthetic.py: varied identities, mild expressions, poses with |yaw| <= 40°,
lighting, skin tones, eyeball proxies), run real MediaPipe FaceMesh (static, refined) on each render,
back-project every landmark through the renderer's triangle-id buffer (exact ray/triangle intersection at the
sub-pixel landmark position) and express the hit in the model's *mean* parametrisation (same triangle and
barycentric coordinates on the mean shape). Per landmark the consensus is the sample that minimises the summed
distance to the others (medoid), first from near-frontal renders, then again from every render where that
consensus point is visible (a depth test, which drops landmarks that MediaPipe hallucinates behind the
nose). Iris landmarks hit the eyeball proxies; they are stored in eye-local coordinates.

Quality (printed, and `--json`): per-landmark spread (median distance of the samples to the consensus, mm)
and the reprojection error (px) of the consensus points against MediaPipe on held-out renders, by region,
next to the trivial baseline of a table built from one frontal neutral render.

    .venv/bin/python tools/build_correspondence.py --renders 240 [--out realtime/data/...] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from realtime.correspondence import (
    IRIS_LANDMARKS,
    Correspondence,
    landmark_regions,
    save_correspondence,
    topology_hash,
    weights_from_spread,
)
from realtime.facemodel import MorphableModel, eye_rig, load_face_model
from realtime.render import OffscreenRenderer
from realtime.synthetic import SyntheticGenerator, SyntheticSample

log = logging.getLogger("build_correspondence")

N_LANDMARKS = 478
SNAP_RADIUS_PX = 4
"""Landmarks on the lid margin / inner lip can fall just inside the opening (on an eyeball or the mouth
cavity proxy): they are snapped to the nearest face pixel within this radius."""
VISIBLE_TOLERANCE_MM = 2.0


@dataclass
class RenderObservation:
    """One render's MediaPipe landmarks back-projected to the model."""

    tri: np.ndarray
    """(478,) face triangle id per landmark (-1: no face hit; iris landmarks: -1)."""
    bary: np.ndarray
    """(478, 3) barycentric coordinates of the hit."""
    eye_local: np.ndarray
    """(478, 3) hit on the own eyeball, eye-local model-axes mm (NaN if none; only iris landmarks)."""
    landmarks_px: np.ndarray
    """(478, 2) MediaPipe landmarks (x = normalised x · width, as realtime.landmarks)."""
    sample: SyntheticSample
    scene_cam: np.ndarray
    depth: np.ndarray


def ray_triangle_bary(rays: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (w_a, w_b, w_c) of where rays from the origin cross the triangles' planes."""
    e1, e2 = b - a, c - a
    p = np.cross(rays, e2)
    det = (e1 * p).sum(-1)
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    tvec = -a
    u = (tvec * p).sum(-1) / det
    q = np.cross(tvec, e1)
    v = (rays * q).sum(-1) / det
    w = np.stack([1 - u - v, u, v], axis=-1)
    w = np.clip(w, 0.0, None)
    return w / np.maximum(w.sum(-1, keepdims=True), 1e-9)


def observe(gen: SyntheticGenerator, renderer, tracker, sample: SyntheticSample) -> RenderObservation | None:  # type: ignore[no-untyped-def]
    res = tracker.process(sample.image)
    if not res.multi_face_landmarks:
        return None
    h, w = sample.image.shape[:2]
    lm = np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], dtype=np.float64)
    layout = gen.layout
    scene = gen.scene_camera_vertices(sample)
    tri_img, _ = renderer.render_ids(scene, layout.triangles, sample.intrinsics)
    depth = renderer.render_depth(scene, layout.triangles, sample.intrinsics)
    part_img = layout.part_of_triangles(tri_img)
    px = np.clip(np.rint(lm).astype(int), 0, [w - 1, h - 1])
    tri = tri_img[px[:, 1], px[:, 0]].copy()
    part = part_img[px[:, 1], px[:, 0]].copy()
    # Snap non-iris landmarks that are not on the face to the nearest face pixel.
    not_iris = np.ones(N_LANDMARKS, bool)
    not_iris[IRIS_LANDMARKS] = False
    r = SNAP_RADIUS_PX
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    order = np.argsort((dx**2 + dy**2).ravel(), kind="stable")
    offs = np.stack([dx.ravel()[order], dy.ravel()[order]], 1)
    for i in np.nonzero(not_iris & (part != 0))[0]:
        cand = np.clip(px[i] + offs, 0, [w - 1, h - 1])
        ok = part_img[cand[:, 1], cand[:, 0]] == 0
        if ok.any():
            j = int(np.argmax(ok))
            tri[i] = tri_img[cand[j, 1], cand[j, 0]]
            part[i] = 0
        else:
            tri[i] = -1
    k = sample.intrinsics
    rays = np.stack([(lm[:, 0] - k.cx) / k.fx, (lm[:, 1] - k.cy) / k.fy, np.ones(N_LANDMARKS)], 1)
    t_safe = np.where(tri >= 0, tri, 0)
    corners = scene[layout.triangles[t_safe]].astype(np.float64)
    bary = ray_triangle_bary(rays, corners[:, 0], corners[:, 1], corners[:, 2])
    face_tri = np.where((tri >= 0) & (part == 0) & not_iris, tri, -1)
    # Iris landmarks: the hit on the eyeball, in the eye's local frame (model axes, gaze-corrected).
    eye_local = np.full((N_LANDMARKS, 3), np.nan)
    hit = (bary[:, :, None] * corners).sum(1)
    rot, tr = sample.pose.rotation, sample.pose.translation_mm
    centres_model = (sample.eye_centres_mm - tr) @ rot
    from realtime.synthetic import gaze_rotation

    for i in IRIS_LANDMARKS:
        eye = 0 if i < 473 else 1
        if part[i] == 3 + eye:
            p_model = (hit[i] - tr) @ rot
            g = gaze_rotation(*sample.gaze_deg[eye])
            eye_local[i] = (p_model - centres_model[eye]) @ g
    return RenderObservation(tri=face_tri, bary=bary.astype(np.float32), eye_local=eye_local,
                             landmarks_px=lm, sample=sample, scene_cam=scene, depth=depth)


def medoid(points: np.ndarray) -> int:
    """Index of the point with the least summed distance to the others (points: (S, 3))."""
    d = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    return int(np.argmin(d.sum(1)))


@dataclass
class Table:
    tri: np.ndarray
    bary: np.ndarray
    spread_mm: np.ndarray
    n_samples: np.ndarray
    iris_local: np.ndarray
    iris_spread_mm: np.ndarray


def surface_points(model: MorphableModel, vertices: np.ndarray, tri: np.ndarray,
                   bary: np.ndarray) -> np.ndarray:
    t = model.triangles[np.where(tri >= 0, tri, 0)]
    return (vertices[t] * bary[..., None]).sum(-2)


def visible(obs: RenderObservation, model: MorphableModel, tri: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(478,) whether each table point is visible (depth test) in this render."""
    cam = surface_points(model, obs.sample.vertices_mm.astype(np.float64), tri, bary)
    with np.errstate(invalid="ignore", divide="ignore"):  # rows without a point (tri -1) are NaN
        uv = np.nan_to_num(obs.sample.intrinsics.project(cam), nan=-1.0, posinf=-1.0, neginf=-1.0)
    h, w = obs.depth.shape
    px = np.rint(uv).astype(int)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h) & (tri >= 0)
    pc = np.clip(px, 0, [w - 1, h - 1])
    zbuf = obs.depth[pc[:, 1], pc[:, 0]]
    return inside & (zbuf > 0) & (cam[:, 2] - zbuf < VISIBLE_TOLERANCE_MM)


def consensus(model: MorphableModel, obs: list[RenderObservation], use: np.ndarray) -> Table:
    """Per-landmark medoid of the mean-space hits over the observations selected by ``use`` (R, 478)."""
    tri_all = np.stack([o.tri for o in obs])
    bary_all = np.stack([o.bary for o in obs])
    pts = surface_points(model, model.mean_mm.astype(np.float64), tri_all, bary_all)
    out_tri = np.full(N_LANDMARKS, -1, np.int32)
    out_bary = np.zeros((N_LANDMARKS, 3), np.float32)
    spread = np.full(N_LANDMARKS, np.inf, np.float32)
    count = np.zeros(N_LANDMARKS, np.int32)
    for i in range(N_LANDMARKS):
        sel = np.nonzero(use[:, i] & (tri_all[:, i] >= 0))[0]
        count[i] = len(sel)
        if len(sel) == 0:
            continue
        j = sel[medoid(pts[sel, i])]
        out_tri[i], out_bary[i] = tri_all[j, i], bary_all[j, i]
        spread[i] = float(np.median(np.linalg.norm(pts[sel, i] - pts[j, i], axis=1)))
    eye = np.stack([o.eye_local for o in obs])[:, IRIS_LANDMARKS]
    iris_local = np.zeros((len(IRIS_LANDMARKS), 3), np.float32)
    iris_spread = np.full(len(IRIS_LANDMARKS), np.inf, np.float32)
    for k in range(len(IRIS_LANDMARKS)):
        ok = np.isfinite(eye[:, k, 0])
        if ok.any():
            p = eye[ok, k]
            j = medoid(p)
            iris_local[k] = p[j]
            iris_spread[k] = float(np.median(np.linalg.norm(p - p[j], axis=1)))
    return Table(out_tri, out_bary, spread, count, iris_local, iris_spread)


def reprojection_choice(model: MorphableModel, obs: list[RenderObservation], use: np.ndarray,
                        table: Table, clip_px: float = 6.0) -> Table:
    """Per landmark, among its back-projected samples pick the surface point that best reprojects onto
    MediaPipe's landmark over all renders where it is visible (truncated squared pixel error)."""
    tri_all = np.stack([o.tri for o in obs])
    bary_all = np.stack([o.bary for o in obs]).astype(np.float64)
    verts = np.stack([o.sample.vertices_mm for o in obs]).astype(np.float64)  # (R, N, 3)
    lm = np.stack([o.landmarks_px for o in obs])  # (R, 478, 2)
    k = np.array([[o.sample.intrinsics.fx, o.sample.intrinsics.fy, o.sample.intrinsics.cx,
                   o.sample.intrinsics.cy] for o in obs])
    out_tri, out_bary = table.tri.copy(), table.bary.copy()
    mean = model.mean_mm.astype(np.float64)
    spread = table.spread_mm.copy()
    for i in range(N_LANDMARKS):
        cand = np.nonzero(use[:, i] & (tri_all[:, i] >= 0))[0]
        if len(cand) == 0:
            continue
        ct, cb = tri_all[cand, i], bary_all[cand, i]
        # Candidates' points in every render using this landmark: (R_i, C, 3).
        rs = cand
        corners = verts[rs][:, model.triangles[ct]]  # (R_i, C, 3, 3)
        p = (corners * cb[None, :, :, None]).sum(2)
        u = k[rs, 0, None] * p[..., 0] / p[..., 2] + k[rs, 2, None]
        v = k[rs, 1, None] * p[..., 1] / p[..., 2] + k[rs, 3, None]
        err2 = (u - lm[rs, i, 0, None]) ** 2 + (v - lm[rs, i, 1, None]) ** 2
        cost = np.minimum(err2, clip_px**2).mean(0)
        j = int(np.argmin(cost))
        out_tri[i], out_bary[i] = ct[j], cb[j].astype(np.float32)
        pts = (mean[model.triangles[ct]] * cb[:, :, None]).sum(1)
        spread[i] = float(np.median(np.linalg.norm(pts - pts[j], axis=1)))
    return Table(out_tri, out_bary, spread, table.n_samples, table.iris_local, table.iris_spread_mm)


def reprojection_errors(model: MorphableModel, corr: Correspondence,
                        obs: list[RenderObservation]) -> np.ndarray:
    """(R, 478) px distance between projected table points and MediaPipe (NaN where not visible)."""
    errs = np.full((len(obs), N_LANDMARKS), np.nan)
    for r, o in enumerate(obs):
        cam = corr.points(o.sample.vertices_mm)
        ok = visible(o, model, corr.triangle, corr.barycentric)
        uv = o.sample.intrinsics.project(cam)
        e = np.linalg.norm(uv - o.landmarks_px, axis=1)
        errs[r, ok] = e[ok]
        # Iris: eye-local points through the sample's eye centres and gaze.
        rot = o.sample.pose.rotation
        iris_cam = corr.iris_points(o.sample.eye_centres_mm, rot)
        errs[r, IRIS_LANDMARKS] = np.linalg.norm(o.sample.intrinsics.project(iris_cam)
                                                 - o.landmarks_px[IRIS_LANDMARKS], axis=1)
    return errs


def to_correspondence(model: MorphableModel, table: Table, source: str) -> Correspondence:
    tri = np.where(table.tri >= 0, table.tri, 0)
    vertex_ids = model.triangles[tri].astype(np.int32)
    bary = table.bary.astype(np.float32).copy()
    # Iris landmarks are not on the face: give them (weight 0) the middle of their eye opening, so that
    # ``points`` stays finite for all 478; their real positions are ``iris_points``.
    rig = eye_rig(model)
    for k, i in enumerate(IRIS_LANDMARKS):
        loop = rig.loops[0 if k < 5 else 1]
        vertex_ids[i] = loop[[0, len(loop) // 3, 2 * len(loop) // 3]]
        bary[i] = 1.0 / 3.0
    weights = weights_from_spread(table.spread_mm)
    weights[table.tri < 0] = 0.0
    weights[IRIS_LANDMARKS] = 0.0
    return Correspondence(
        vertex_ids=vertex_ids, barycentric=bary,
        weights=weights.astype(np.float32), triangle=tri.astype(np.int32),
        spread_mm=table.spread_mm.astype(np.float32), iris_local_mm=table.iris_local.astype(np.float32),
        model_name=model.name, n_model_vertices=model.n_vertices, source=source,
        topology=topology_hash(model.triangles))


def summarise(errs: np.ndarray, spread: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, idx in landmark_regions().items():
        e = errs[:, idx]
        row = {"reproj_px_median": float(np.nanmedian(e)), "reproj_px_mean": float(np.nanmean(e)),
               "reproj_px_p90": float(np.nanpercentile(e, 90))}
        if spread is not None:
            s = spread[idx]
            finite = s[np.isfinite(s)]
            row["spread_mm_median"] = float(np.median(finite)) if len(finite) else float("nan")
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", type=int, default=240, help="renders used to build the table")
    ap.add_argument("--held-out", type=int, default=60, help="extra renders used only for measuring")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None, help="write the table here (default: the package's)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--model", default="ict-facekit", help="face model loader name (docs/face_models.md)")
    ap.add_argument("--model-path", type=Path, default=None, help="the model's file or folder")
    ap.add_argument("--expression-max", type=float, default=0.6, help="max blendshape weight in the renders")
    ap.add_argument("--expression-active", type=int, default=2, help="max active blendshapes per render")
    ap.add_argument("--compare", type=Path, default=None, help="also measure this table on the held-out set")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import mediapipe as mp

    from realtime.correspondence import default_path

    model = load_face_model(args.model, args.model_path)
    start = time.perf_counter()
    with OffscreenRenderer(args.size, args.size) as renderer, mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1) as tracker:
        gen = SyntheticGenerator(model, args.size, args.size, seed=args.seed, renderer=renderer,
                                 identity_scale=0.8, expression_active=(0, args.expression_active),
                                 expression_max=args.expression_max,
                                 one_sided_fraction=0.2, neutral_fraction=0.35, yaw_deg=40.0, pitch_deg=15.0,
                                 roll_deg=10.0, distance_mm=(320.0, 420.0), offset_fraction=0.04,
                                 blur_sigma=(0.0, 0.6), noise_sigma=(0.0, 3.0), jpeg_probability=0.3)
        look = np.array([i for i, n in enumerate(model.expression_names) if n.startswith("eyeLook")])
        obs: list[RenderObservation] = []
        held: list[RenderObservation] = []
        total = args.renders + args.held_out
        misses = 0
        for k in range(total):
            expr = gen.random_expression(np.random.default_rng(args.seed * 100003 + k))
            expr[look] = 0.0  # gaze stays straight: eyeLook* would only move the lids
            # Renders: one in four near-frontal so that the first-pass consensus has support.
            over: dict[str, object] = {"expression": expr, "gaze_deg": np.zeros((2, 2)),
                                       "seed": args.seed * 7919 + k}
            if k % 4 == 0:
                over["yaw_deg"] = float(np.random.default_rng(k).uniform(-12, 12))
            if k == 0:
                over.update(identity=np.zeros(model.n_identity), expression=np.zeros(model.n_expressions),
                            yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, clean=True)
            sample = gen.sample(**over)
            o = observe(gen, renderer, tracker, sample)
            if o is None:
                misses += 1
                continue
            (obs if k < args.renders else held).append(o)
            if (k + 1) % 20 == 0:
                log.info("%d/%d renders (%.0f s)", k + 1, total, time.perf_counter() - start)
        # MediaPipe's own per-image noise: the held-out geometry again with other lighting, skin, iris,
        # background and degradations. No table can fit MediaPipe better than this floor.
        repeats: list[np.ndarray | None] = []
        for k, o in enumerate(held):
            again = gen.sample(identity=o.sample.identity, expression=o.sample.expression, pose=o.sample.pose,
                               intrinsics=o.sample.intrinsics, gaze_deg=o.sample.gaze_deg,
                               seed=args.seed * 104729 + k)
            res = tracker.process(again.image)
            h, w = again.image.shape[:2]
            repeats.append(np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])
                           if res.multi_face_landmarks else None)
    yaws = np.array([o.sample.pose.euler_deg()[0] for o in obs])
    frontal = np.abs(yaws) <= 15.0
    use0 = np.zeros((len(obs), N_LANDMARKS), bool)
    use0[frontal] = True
    first = consensus(model, obs, use0)
    use = np.stack([visible(o, model, first.tri, first.bary) for o in obs])
    table = consensus(model, obs, use)
    medoid_corr = to_correspondence(model, table, "medoid")
    table = reprojection_choice(model, obs, use, table)
    corr = to_correspondence(model, table, f"tools/build_correspondence.py --renders {args.renders} "
                                           f"--seed {args.seed}")
    # Baseline: the table from the first (frontal, neutral, mean identity) render alone.
    base_use = np.zeros_like(use)
    base_use[0] = True
    base = to_correspondence(model, consensus(model, obs[:1], base_use[:1]), "baseline")
    eval_obs = held if held else obs
    errs = reprojection_errors(model, corr, eval_obs)
    errs_base = reprojection_errors(model, base, eval_obs)
    errs_medoid = reprojection_errors(model, medoid_corr, eval_obs)
    compared = None
    if args.compare is not None:
        from realtime.correspondence import read_correspondence

        other = read_correspondence(args.compare)
        compared = float(np.nanmedian(reprojection_errors(model, other, eval_obs)))
    floor = np.full_like(errs, np.nan)
    if held:
        for r, (o, rep) in enumerate(zip(held, repeats, strict=True)):
            if rep is not None:
                floor[r] = np.linalg.norm(o.landmarks_px - rep, axis=1) / np.sqrt(2.0)
        floor[np.isnan(errs)] = np.nan
    iris_diam = float(np.mean([np.linalg.norm(corr.iris_local_mm[a] - corr.iris_local_mm[b])
                               for a, b in ((1, 3), (2, 4), (6, 8), (7, 9))]))
    yaw_eval = np.abs([o.sample.pose.euler_deg()[0] for o in eval_obs])
    bins = ((0, 15), (15, 30), (30, 45))
    by_yaw = {f"{lo}-{hi}": {"n": int(((yaw_eval >= lo) & (yaw_eval < hi)).sum()),
                             "table_px_median": float(np.nanmedian(errs[(yaw_eval >= lo) & (yaw_eval < hi)])),
                             "baseline_px_median": float(np.nanmedian(errs_base[(yaw_eval >= lo)
                                                                                & (yaw_eval < hi)]))}
              for lo, hi in bins if ((yaw_eval >= lo) & (yaw_eval < hi)).any()}
    iod = [float(np.linalg.norm(o.landmarks_px[468] - o.landmarks_px[473])) for o in eval_obs]
    report = {
        "renders_used": len(obs), "held_out": len(held), "mediapipe_misses": misses,
        "seconds": round(time.perf_counter() - start, 1),
        "spread_mm_median": float(np.median(table.spread_mm[np.isfinite(table.spread_mm)])),
        "weights_mean": float(corr.weights.mean()),
        "iris_ring_diameter_mm": iris_diam,
        "interpupillary_px_median": float(np.median(iod)),
        "by_yaw": by_yaw,
        "iris_spread_mm_median": float(np.median(table.iris_spread_mm)),
        "regions": summarise(errs, table.spread_mm),
        "noise_floor_regions": summarise(floor) if held else {},
        "baseline_single_frontal_render": summarise(errs_base),
        "all_px_median": float(np.nanmedian(errs)), "baseline_all_px_median": float(np.nanmedian(errs_base)),
        "mediapipe_noise_floor_px_median": float(np.nanmedian(floor)) if held else None,
        "medoid_all_px_median": float(np.nanmedian(errs_medoid)),
        "compared_table": str(args.compare) if args.compare else None, "compared_all_px_median": compared,
    }
    if not args.no_save:
        out = args.out or default_path(model)
        save_correspondence(corr, out)
        report["written"] = str(out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"renders {len(obs)} (+{len(held)} held out, {misses} without a MediaPipe face), "
              f"{report['seconds']} s")
        print(f"spread median {report['spread_mm_median']:.2f} mm; iris ring diameter "
              f"{iris_diam:.2f} mm (disc 11.7), iris spread {report['iris_spread_mm_median']:.2f} mm")
        print(f"{'region':<12}{'n':>4}{'spread mm':>11}{'reproj px med':>15}{'p90':>7}"
              f"{'baseline med':>14}{'p90':>7}{'MP noise':>10}")
        regions = landmark_regions()
        floor_rows: dict[str, dict[str, float]] = report["noise_floor_regions"]
        for name, row in report["regions"].items():
            b = report["baseline_single_frontal_render"][name]
            print(f"{name:<12}{len(regions[name]):>4}{row.get('spread_mm_median', float('nan')):>11.2f}"
                  f"{row['reproj_px_median']:>15.2f}{row['reproj_px_p90']:>7.2f}"
                  f"{b['reproj_px_median']:>14.2f}{b['reproj_px_p90']:>7.2f}"
                  f"{floor_rows.get(name, {}).get('reproj_px_median', float('nan')):>10.2f}")
        print(f"{'all':<12}{N_LANDMARKS:>4}{'':>11}{report['all_px_median']:>15.2f}{'':>7}"
              f"{report['baseline_all_px_median']:>14.2f}")
        if compared is not None:
            print(f"table {args.compare} on the same held-out renders: all {compared:.2f} px")
        if report["mediapipe_noise_floor_px_median"] is not None:
            print(f"MediaPipe's own per-image noise (same geometry, other appearance): "
                  f"{report['mediapipe_noise_floor_px_median']:.2f} px median")
        print(f"(3D-medoid table without the reprojection choice: all "
              f"{report['medoid_all_px_median']:.2f} px)")
        print("by |yaw|: " + ", ".join(
            f"{k}°: {v['table_px_median']:.2f} px (baseline {v['baseline_px_median']:.2f}, n={v['n']})"
            for k, v in by_yaw.items()))
        print(f"(faces {report['interpupillary_px_median']:.0f} px between the pupils)")
        if "written" in report:
            print(f"written {report['written']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
