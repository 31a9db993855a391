#!/usr/bin/env python
"""Regressor engines (Mobile-FaceRNet, Deep3D): size, CPU latency, accuracy alone and as the fit's warm start.

1. Parameters and GFLOPs (torch definitions), ONNX size, backend chosen on this machine and why.
2. onnxruntime CPU latency per face: the network alone (batch 1, median of --reps runs) and crop +
   preprocessing; Mobile-FaceRNet with 1 thread, Deep3D with 2 threads.
3. Held-out synthetic set (seeds disjoint from the training data; yaw stratified up to ±75°; 512x512 renders;
   real MediaPipe in static mode provides the track both paths need). By |yaw| bin: model-space mesh error
   (mean vertex distance over the narrow face area, mm) and rotation error (deg) of the engine alone, the
   fitter alone (cold start from its own PnP) and the fitter warm-started by the engine; the trivial
   baseline is the mean face (and a frontal rotation).
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

BINS = ((0, 15), (15, 30), (30, 45), (45, 60), (60, 75))
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


def synthetic_table(engines: list[str], n: int, seed: int, size: int) -> dict[str, object]:
    from realtime.correspondence import load_correspondence
    from realtime.engines.regressors import Regressor, engine_path
    from realtime.facemodel import load_face_model
    from realtime.fitting import FaceFitter, FitOptions
    from realtime.landmarks import FaceMeshTracker
    from realtime.results import Pose
    from realtime.synthetic import SyntheticGenerator

    model = load_face_model()
    corr = load_correspondence(model)
    region = model.narrow_face_area_vertices or model.face_area_vertices
    regs = {e: Regressor(e, path=engine_path(e), prefer="cpu", threads=THREADS[e]) for e in engines}
    opts = FitOptions.single_image()  # the fitter's settings for unrelated single images
    rows: list[dict[str, float | bool]] = []
    rng = np.random.default_rng(seed)
    try:
        with SyntheticGenerator(model, size, size, seed=seed) as gen, FaceMeshTracker(static=True) as tracker:
            for i in range(n):
                lo, hi = BINS[i % len(BINS)]
                yaw = float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1)
                s = gen.sample(seed=seed * 10_000_000 + i, yaw_deg=yaw)
                gt_shape = model.shape(s.identity, s.expression)[:region]
                row: dict[str, float | bool] = {"yaw": float(s.pose.euler_deg()[0])}
                row["mean_face_mm"] = float(np.linalg.norm(model.mean_mm[:region] - gt_shape, axis=1).mean())
                row["frontal_deg"] = rotation_error_deg(np.diag([1.0, -1.0, -1.0]), s.pose.rotation)
                tracks = tracker.track(s.image)
                row["tracked"] = bool(tracks)
                if tracks:
                    track = tracks[0]

                    def err(identity: np.ndarray, expression: np.ndarray, gt: np.ndarray = gt_shape) -> float:
                        v = model.shape(identity, expression)[:region]
                        return float(np.linalg.norm(v - gt, axis=1).mean())

                    fit = FaceFitter(model, corr, s.intrinsics, opts).fit(track)
                    row["fit_mm"] = err(fit.identity, fit.expression)
                    row["fit_deg"] = rotation_error_deg(fit.pose.rotation, s.pose.rotation)
                    # Trivial baseline for the profile policy: the fitter's own yaw decides, the identity
                    # is locked to the mean face.
                    mf = fit
                    if abs(fit.pose.euler_deg()[0]) > PROFILE_DEG:
                        f2 = FaceFitter(model, corr, s.intrinsics, opts)
                        f2.lock_identity(np.zeros(model.n_identity))
                        mf = f2.fit(track)
                    row["fit|meanid_mm"] = err(mf.identity, mf.expression)
                    row["fit|meanid_deg"] = rotation_error_deg(mf.pose.rotation, s.pose.rotation)
                    for e, reg in regs.items():
                        est = reg.predict(s.image, track, s.intrinsics)
                        row[f"{e}_mm"] = err(est.identity, est.expression)
                        row[f"{e}_deg"] = rotation_error_deg(est.rotation, s.pose.rotation)
                        wf = FaceFitter(model, corr, s.intrinsics, opts).fit(track, warm_start=est)
                        row[f"{e}+fit_mm"] = err(wf.identity, wf.expression)
                        row[f"{e}+fit_deg"] = rotation_error_deg(wf.pose.rotation, s.pose.rotation)
                        # Profile policy: where the engine sees |yaw| > 45°, its identity is kept (landmarks
                        # of a profile barely constrain identity) and the fit solves pose and expression.
                        pf = FaceFitter(model, corr, s.intrinsics, opts)
                        if abs(Pose(est.rotation, est.translation_mm).euler_deg()[0]) > PROFILE_DEG:
                            pf.lock_identity(est.identity)
                        pr = pf.fit(track, warm_start=est)
                        row[f"{e}+fit|id_mm"] = err(pr.identity, pr.expression)
                        row[f"{e}+fit|id_deg"] = rotation_error_deg(pr.pose.rotation, s.pose.rotation)
                rows.append(row)
                if (i + 1) % 20 == 0:
                    print(f"  synthetic {i + 1}/{n}", file=sys.stderr)
    finally:
        for reg in regs.values():
            reg.close()
    cols = ["mean_face_mm", "frontal_deg", "fit_mm", "fit_deg", "fit|meanid_mm", "fit|meanid_deg"]
    for e in engines:
        cols += [f"{e}_mm", f"{e}_deg", f"{e}+fit_mm", f"{e}+fit_deg", f"{e}+fit|id_mm", f"{e}+fit|id_deg"]
    table = []
    for lo, hi in BINS:
        sel = [r for r in rows if lo <= abs(float(r["yaw"])) < hi + 1e-6]
        tracked = [r for r in sel if r["tracked"]]
        entry: dict[str, object] = {"bin": f"{lo}-{hi}", "renders": len(sel), "tracked": len(tracked)}
        for c in cols:
            src = sel if c in ("mean_face_mm", "frontal_deg") else tracked
            vals = [float(r[c]) for r in src if c in r]
            entry[c] = round(float(np.mean(vals)), 2) if vals else None
        table.append(entry)
    return {"bins": table, "columns": cols, "n": n, "seed": seed, "render_px": size}


def read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    pts = [list(map(float, ln.split())) for ln in lines[start : start + 68]]
    return np.asarray(pts) - 1.0  # 1-based ibug coordinates


def photo_nme(engines: list[str]) -> list[dict[str, object]]:
    import cv2

    from realtime.camera import Intrinsics
    from realtime.correspondence import load_correspondence
    from realtime.engines.regressors import Regressor, engine_path
    from realtime.facemodel import load_face_model
    from realtime.fitting import FaceFitter, FitOptions
    from realtime.landmarks import FaceMeshTracker
    from realtime.paths import shared_dir

    model = load_face_model()
    corr = load_correspondence(model)
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
                for e in engines:
                    with Regressor(e, path=engine_path(e), prefer="cpu", threads=THREADS[e]) as reg:
                        est = reg.predict(img, track, intr)
                    v = model.shape(est.identity, est.expression)[model.landmarks68]
                    lm = intr.project(v @ est.rotation.T + est.translation_mm)
                    row[f"{e}_nme"] = round(100 * float(np.linalg.norm(lm - gt, axis=1).mean() / d), 2)
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["mobile-facernet", "deep3d"])
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
    engines = {}
    for e in args.engines:
        path = engine_path(e)
        engines[e] = {**model_stats(e, path), **latency(e, path, args.reps, photo, track), "onnx": str(path)}
    report["engines"] = engines
    report["synthetic"] = synthetic_table(args.engines, args.n, args.seed, args.size)
    report["photos"] = photo_nme(args.engines)
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
    names = ["mean face", "fit", "fit|meanid"]
    keys = [("mean_face_mm", "frontal_deg"), ("fit_mm", "fit_deg"), ("fit|meanid_mm", "fit|meanid_deg")]
    for e in args.engines:
        short = "mfr" if e == "mobile-facernet" else "d3d"
        names += [short, f"{short}+fit", f"{short}+fit|id"]
        keys += [(f"{e}_mm", f"{e}_deg"), (f"{e}+fit_mm", f"{e}+fit_deg"), (f"{e}+fit|id_mm", f"{e}+fit|id_deg")]
    print(f"{'|yaw|':>7} {'n':>3} {'trk':>3} " + " ".join(f"{n:>13}" for n in names))
    for b in syn["bins"]:
        cells = [f"{b[m]!s}/{b[d]!s}" for m, d in keys]
        print(f"{b['bin']:>7} {b['renders']:>3} {b['tracked']:>3} " + " ".join(f"{c:>13}" for c in cells))
    print("fit|meanid: identity locked to the mean face where the fit's |yaw| > 45°; <e>+fit: warm start only;")
    print("<e>+fit|id: warm start, and identity kept from the engine where its |yaw| > 45°")
    print("\n68-landmark NME (%) on the annotated photos")
    for r in report["photos"]:  # type: ignore[attr-defined]
        print("  " + "  ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
