#!/usr/bin/env python
"""Regressor engines (Mobile-FaceRNet, Deep3D): size, CPU latency, accuracy alone and as the fit's warm start.

1. Parameters and GFLOPs (torch definitions), ONNX size, backend chosen on this machine and why.
2. onnxruntime CPU latency per face: the network alone (batch 1, median of --reps runs) and crop +
   preprocessing; Mobile-FaceRNet with 1 thread, Deep3D with 2 threads.
3. Held-out synthetic set (seeds disjoint from the training data; yaw stratified up to ±75°; 512x512 renders;
   real MediaPipe in static mode provides the track both paths need). By |yaw| bin: model-space mesh error
   (mean vertex distance over the narrow face area, mm) and rotation error (deg) of the engine alone, the
   fitter alone (cold start from its own PnP), the fitter warm-started by the engine, and the fit fused with
   the engine (``realtime.engines.fusion``: identity/expression blended towards the engine's with a weight
   growing with |yaw|, calibrated by ``tools/calibrate_fusion.py`` on another seed). Trivial baselines: the
   mean face (and a frontal rotation), and the same fusion towards the mean face instead of an engine.
4. 2D 68-landmark NME (% of sqrt(w·h) of the annotated box, as in the Mobile-FaceRNet paper) on the
   annotated photos in ../shared/data/images: engine, fit-only, and a trivial baseline (the mean face's
   frontal landmarks stretched to MediaPipe's landmark box).

    .venv/bin/python tools/bench_engines.py [--n 100] [--engines mobile-facernet deep3d] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

THREADS = {"mobile-facernet": 1, "deep3d": 2}
PROFILE_DEG = 45.0


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = (np.trace(a.T @ b) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0))))


def model_stats(name: str, path: Path) -> dict[str, float | str]:
    out: dict[str, float | str] = {"onnx_mb": round(path.stat().st_size / 1e6, 2)}
    try:
        import torch

        from realtime.engines.runtime import read_metadata
        from realtime.training.nets import Deep3DNet, MobileFaceRNet, count_flops, count_parameters

        torch.set_num_threads(1)
        crop = json.loads(read_metadata(path)["realtime_face.crop"])
        size = int(crop["input_size"])
        width = 64 if size == 224 else 32
        net = (
            MobileFaceRNet(input_size=size)
            if name == "mobile-facernet"
            else Deep3DNet(input_size=size, width=width)
        )
        out["params_m"] = round(count_parameters(net) / 1e6, 3)
        out["gflops"] = round(count_flops(net, size), 4)
        out["input_px"] = size
    except ImportError:
        out["params_m"] = "n/a (torch not installed)"
    return out


def latency(name: str, path: Path, reps: int, image: np.ndarray, track: object) -> dict[str, float | str]:
    from realtime.engines.regressors import Regressor

    with Regressor(name, path=path, prefer="cpu", threads=THREADS[name]) as reg:
        crop = reg.crop_for(track)  # type: ignore[arg-type]
        x = reg.preprocess(image, crop).copy()
        for _ in range(max(reps // 10, 5)):
            reg.runner.run(x)
        net_t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            reg.runner.run(x)
            net_t.append(time.perf_counter() - t0)
        pre_t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            reg.preprocess(image, reg.crop_for(track))  # type: ignore[arg-type]
            pre_t.append(time.perf_counter() - t0)
        return {
            "backend": reg.backend,
            "threads": THREADS[name],
            "net_ms_median": round(1e3 * float(np.median(net_t)), 3),
            "net_ms_p90": round(1e3 * float(np.percentile(net_t, 90)), 3),
            "preprocess_ms_median": round(1e3 * float(np.median(pre_t)), 3),
        }


def synthetic_table(files: dict[str, Path], n: int, seed: int, size: int) -> dict[str, object]:
    from realtime.engines.fusion import FusionPolicy, load_policy, policy_path
    from realtime.facemodel import load_face_model
    from realtime.results import FRONTAL_ROTATION
    from realtime.training.fusion_calib import (
        Case,
        ShapeError,
        collect_cases,
        fused,
        paired_difference,
        yaw_table,
    )

    model = load_face_model()
    engines = list(files)
    policies: dict[str, FusionPolicy | None] = {e: load_policy(p) for e, p in files.items()}
    # The no-network baseline policy (fit blended towards the mean face), calibrated on the same set.
    base: FusionPolicy | None = None
    for p in files.values():
        if policy_path(p).is_file():
            doc = json.loads(policy_path(p).read_text())
            base = FusionPolicy(**doc["calibration"]["mean_face_policy"])
            break
    cases = collect_cases(model, files, n, seed, size, THREADS)
    zero_id, zero_exp = np.zeros(model.n_identity), np.zeros(model.n_expressions)
    Out = tuple[np.ndarray, np.ndarray, float] | None

    def mean_face(c: Case) -> Out:
        return zero_id, zero_exp, rotation_error_deg(FRONTAL_ROTATION, c.rotation)

    def fit_only(c: Case) -> Out:
        return (c.fit_identity, c.fit_expression, c.fit_rotation_deg) if c.tracked else None

    def fit_meanid(c: Case) -> Out:
        return c.meanid

    def fit_to_mean(c: Case) -> Out:
        if not c.tracked or base is None:
            return None
        return (*fused(c, (zero_id, zero_exp), base), c.fit_rotation_deg)

    columns: dict[str, object] = {
        "mean_face": mean_face, "fit": fit_only, "fit|meanid": fit_meanid, "fit~mean": fit_to_mean
    }
    for e in engines:
        def alone(c: Case, e: str = e) -> Out:
            p = c.engines.get(e)
            return (p.identity, p.expression, p.rotation_deg) if p else None

        def warm(c: Case, e: str = e) -> Out:
            p = c.engines.get(e)
            return p.warm if p else None

        def fuse(c: Case, e: str = e) -> Out:
            p, pol = c.engines.get(e), policies[e]
            if p is None or pol is None:
                return None
            return (*fused(c, (p.identity, p.expression), pol), c.fit_rotation_deg)

        columns.update({e: alone, f"{e}+fit": warm, f"{e}~fit": fuse})
    err = ShapeError(model)
    table = yaw_table(cases, columns, err)
    over = yaw_table(cases, columns, err, bins=((45, 75),))[0]
    # Paired comparisons on the |yaw| >= 45 renders: each engine's fused fit against fit-only and against
    # the no-network fusion (bootstrap interval of the mean difference).
    profile = [c for c in cases if abs(c.yaw_deg) >= PROFILE_DEG]
    paired: dict[str, object] = {}
    for e in engines:
        paired[f"{e}~fit - fit"] = paired_difference(profile, columns[f"{e}~fit"], fit_only, err)
        paired[f"{e}~fit - fit~mean"] = paired_difference(profile, columns[f"{e}~fit"], fit_to_mean, err)
    return {
        "bins": table,
        "over_45": over,
        "paired_over_45": paired,
        "columns": list(columns),
        "policies": {e: (None if p is None else p.__dict__) for e, p in policies.items()},
        "mean_face_policy": None if base is None else base.__dict__,
        "n": n,
        "seed": seed,
        "render_px": size,
    }


def read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    pts = [list(map(float, ln.split())) for ln in lines[start : start + 68]]
    return np.asarray(pts) - 1.0  # 1-based ibug coordinates


def photo_nme(files: dict[str, Path]) -> list[dict[str, object]]:
    import cv2

    from realtime.camera import Intrinsics
    from realtime.correspondence import load_correspondence
    from realtime.engines.fusion import fuse_fit, load_policy
    from realtime.engines.regressors import Regressor
    from realtime.facemodel import load_face_model
    from realtime.fitting import FaceFitter, FitOptions, MeshBuilder
    from realtime.landmarks import FaceMeshTracker
    from realtime.paths import shared_dir

    model = load_face_model()
    corr = load_correspondence(model)
    mesher = MeshBuilder(model)
    frontal = model.mean_mm[model.landmarks68][:, :2] * np.array([1.0, -1.0])
    out = []
    with FaceMeshTracker(static=True) as tracker:
        for pts_path in sorted((shared_dir() / "data" / "images").glob("*.pts")):
            img = cv2.cvtColor(cv2.imread(str(pts_path.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
            gt = read_pts(pts_path)
            w, h = np.ptp(gt, axis=0)
            d = math.sqrt(w * h)
            intr = Intrinsics.from_fov(img.shape[1], img.shape[0])
            tracks = tracker.track(img)
            row: dict[str, object] = {"image": pts_path.stem, "tracked": bool(tracks)}
            if tracks:
                track = tracks[0]
                x0, y0, x1, y1 = track.box_px
                lo, span = frontal.min(0), np.ptp(frontal, axis=0)
                base = (frontal - lo) / span * np.array([x1 - x0, y1 - y0]) + np.array([x0, y0])
                row["baseline_nme"] = round(100 * float(np.linalg.norm(base - gt, axis=1).mean() / d), 2)
                fit = FaceFitter(model, corr, intr, FitOptions.single_image()).fit(track)
                row["fit_nme"] = round(
                    100 * float(np.linalg.norm(fit.landmarks68_px - gt, axis=1).mean() / d), 2
                )
                for e, path in files.items():
                    with Regressor(e, path=path, prefer="cpu", threads=THREADS[e]) as reg:
                        est = reg.predict(img, track, intr)
                    v = model.shape(est.identity, est.expression)[model.landmarks68]
                    lm = intr.project(v @ est.rotation.T + est.translation_mm)
                    row[f"{e}_nme"] = round(100 * float(np.linalg.norm(lm - gt, axis=1).mean() / d), 2)
                    policy = load_policy(path)
                    if policy is not None:
                        fz = fuse_fit(fit, est, policy, mesher, intr, mesh=False)
                        row[f"{e}~fit_nme"] = round(
                            100 * float(np.linalg.norm(fz.landmarks68_px - gt, axis=1).mean() / d), 2
                        )
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["mobile-facernet", "deep3d"])
    ap.add_argument("--engine-file", action="append", default=[], metavar="NAME=PATH",
                    help="evaluate this file for engine NAME instead of the installed one (its calibration, "
                    "if any, is PATH with the suffix .fusion.json)")
    ap.add_argument("--n", type=int, default=100, help="held-out synthetic renders (stratified by yaw)")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = ap.parse_args(argv)

    import cv2

    from realtime.engines.regressors import engine_path
    from realtime.engines.runtime import probe_backend
    from realtime.landmarks import FaceMeshTracker
    from realtime.paths import shared_dir

    choice = probe_backend()
    report: dict[str, object] = {
        "backend": {"auto": choice.backend, "reason": choice.reason},
        "tensorrt": "no GPU on this machine: TensorRT FP16 figures not measured"
        if choice.backend == "onnxruntime-cpu"
        else "see latency",
    }
    photo = cv2.cvtColor(
        cv2.imread(str(shared_dir() / "data" / "images" / "lfpw_image_0010.jpg")), cv2.COLOR_BGR2RGB
    )
    with FaceMeshTracker(static=True) as tracker:
        track = tracker.track(photo)[0]
    files = {e: engine_path(e) for e in args.engines}
    for spec in args.engine_file:
        name, _, path_s = spec.partition("=")
        files[name] = Path(path_s)
    engines = {}
    for e, path in files.items():
        engines[e] = {**model_stats(e, path), **latency(e, path, args.reps, photo, track), "onnx": str(path)}
    report["engines"] = engines
    report["synthetic"] = synthetic_table(files, args.n, args.seed, args.size)
    report["photos"] = photo_nme(files)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"backend: {choice.backend} ({choice.reason})")
    print(f"TensorRT: {report['tensorrt']}")
    print(
        f"{'engine':18} {'params M':>9} {'GFLOPs':>8} {'input':>6} {'MB':>6} {'thr':>4} {'net ms':>8} "
        f"{'p90 ms':>8} {'prep ms':>8}"
    )
    for e, s in engines.items():
        print(
            f"{e:18} {s.get('params_m')!s:>9} {s.get('gflops')!s:>8} {s.get('input_px')!s:>6} "
            f"{s['onnx_mb']:>6} {s['threads']:>4} {s['net_ms_median']:>8} {s['net_ms_p90']:>8} "
            f"{s['preprocess_ms_median']:>8}"
        )
    syn = report["synthetic"]
    assert isinstance(syn, dict)
    print(
        f"\nheld-out synthetic set ({syn['n']} renders {syn['render_px']} px, seed {syn['seed']}): "
        "model-space mesh error mm / rotation error deg"
    )
    names = ["mean face", "fit", "fit|meanid", "fit~mean"]
    cols = ["mean_face", "fit", "fit|meanid", "fit~mean"]
    for e in files:
        short = "mfr" if e == "mobile-facernet" else "d3d"
        names += [short, f"{short}+fit", f"{short}~fit"]
        cols += [e, f"{e}+fit", f"{e}~fit"]
    print(f"{'|yaw|':>7} {'n':>3} {'trk':>3} " + " ".join(f"{n:>12}" for n in names))
    for b in [*syn["bins"], {**syn["over_45"], "bin": ">=45"}]:
        cells = [f"{b[c + '_mm']!s}/{b[c + '_deg']!s}" for c in cols]
        print(f"{b['bin']:>7} {b['renders']:>3} {b['tracked']:>3} " + " ".join(f"{c:>12}" for c in cells))
    print("fit|meanid: identity locked to the mean face where the fit's |yaw| > 45° (no network);")
    print("fit~mean: fit coefficients blended towards the mean face with a weight growing with |yaw| (no network,")
    print(f"  calibrated like the engines' fusion: {syn['mean_face_policy']});")
    print("<e>: engine alone; <e>+fit: engine as the fit's warm start; <e>~fit: fit blended towards the engine's")
    print("  identity/expression by its calibrated policy (engines/<e>.fusion.json):")
    for e, pol in syn["policies"].items():
        print(f"  {e}: {pol if pol is not None else 'no calibration for this engine file: not fused'}")
    print("paired shape-error differences at |yaw| >= 45 (mm; negative = first is better; bootstrap 95 %):")
    for k, v in syn["paired_over_45"].items():
        if v:
            print(f"  {k:32} {v['mean_mm']:+.3f}  [{v['ci95_mm'][0]:+.3f}, {v['ci95_mm'][1]:+.3f}]  "
                  f"first better on {v['a_better']}/{v['n']}")
    print("\n68-landmark NME (%) on the annotated photos")
    for r in report["photos"]:  # type: ignore[attr-defined]
        print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
