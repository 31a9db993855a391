"""Synthetic renders: generation speed, MediaPipe detection rate by yaw, landmark agreement.

For each render (random identity, expression, lighting, skin tone, background, blur/noise/JPEG; yaw uniform
in ±--yaw degrees) real MediaPipe FaceMesh (static, refined) runs once. Reported by |yaw| bin: detection
rate, and the median distance (px) between MediaPipe's landmarks and the correspondence table's points on
the true mesh (weight > 0.3), next to the trivial baseline of the same table on the *mean* face (true pose,
identity and expression ignored).

    .venv/bin/python tools/bench_synthetic.py [--renders 200] [--yaw 70] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BINS = ((0, 15), (15, 30), (30, 45), (45, 60), (60, 90))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", type=int, default=200)
    ap.add_argument("--yaw", type=float, default=70.0, help="max |yaw| in degrees")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--samples", type=int, default=4, help="MSAA samples of the renderer")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import mediapipe as mp

    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.synthetic import SyntheticGenerator

    model = load_face_model()
    corr = load_correspondence(model)
    usable = np.nonzero(corr.weights[:468] > 0.3)[0]
    mean_pts = corr.points(model.mean_mm)[usable]
    rows = []
    gen_s = 0.0
    mp_s = 0.0
    with SyntheticGenerator(model, args.size, args.size, seed=args.seed, samples=args.samples,
                            yaw_deg=args.yaw) as gen, \
            mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                            max_num_faces=1) as fm:
        gen.sample()  # warm-up (shader compilation, first buffers)
        for k in range(args.renders):
            t0 = time.perf_counter()
            s = gen.sample()
            t1 = time.perf_counter()
            res = fm.process(s.image)
            t2 = time.perf_counter()
            gen_s += t1 - t0
            mp_s += t2 - t1
            yaw = abs(s.pose.euler_deg()[0])
            row = {"yaw": yaw, "found": bool(res.multi_face_landmarks), "err": np.nan, "base": np.nan}
            if res.multi_face_landmarks:
                pts = res.multi_face_landmarks[0].landmark
                lm = np.array([(p.x * args.size, p.y * args.size) for p in pts])
                true_px = s.intrinsics.project(corr.points(s.vertices_mm)[usable])
                base_px = s.intrinsics.project(mean_pts @ s.pose.rotation.T + s.pose.translation_mm)
                row["err"] = float(np.median(np.linalg.norm(true_px - lm[usable], axis=1)))
                row["base"] = float(np.median(np.linalg.norm(base_px - lm[usable], axis=1)))
            rows.append(row)
            if (k + 1) % 50 == 0:
                print(f"{k + 1}/{args.renders}", file=sys.stderr)
    yaws = np.array([r["yaw"] for r in rows])
    found = np.array([r["found"] for r in rows])
    err = np.array([r["err"] for r in rows])
    base = np.array([r["base"] for r in rows])
    table = []
    for lo, hi in BINS:
        sel = (yaws >= lo) & (yaws < hi)
        if not sel.any():
            continue
        ok = sel & found
        table.append({"yaw_bin": f"{lo}-{min(hi, int(args.yaw))}", "n": int(sel.sum()),
                      "detection_rate": float(found[sel].mean()),
                      "landmark_px_median": float(np.median(err[ok])) if ok.any() else None,
                      "mean_face_baseline_px_median": float(np.median(base[ok])) if ok.any() else None})
    report = {"renders": args.renders, "size": args.size,
              "renders_per_s": args.renders / gen_s, "mediapipe_ms": 1000 * mp_s / args.renders,
              "detection_rate": float(found.mean()), "by_yaw": table}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.renders} renders {args.size}x{args.size}: {report['renders_per_s']:.1f} renders/s "
          f"(one process), MediaPipe {report['mediapipe_ms']:.1f} ms/image, "
          f"detected {100 * report['detection_rate']:.1f} %")
    print(f"{'|yaw| deg':<10}{'n':>5}{'detected':>10}{'table px':>10}{'mean-face px':>14}")
    for r in table:
        e = "-" if r["landmark_px_median"] is None else f"{r['landmark_px_median']:.2f}"
        b = "-" if r["mean_face_baseline_px_median"] is None else f"{r['mean_face_baseline_px_median']:.2f}"
        print(f"{r['yaw_bin']:<10}{r['n']:>5}{100 * r['detection_rate']:>9.1f}%{e:>10}{b:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
