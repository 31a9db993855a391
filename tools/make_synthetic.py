"""Write a synthetic ground-truth set (images + parameters) for training and offline benchmarks.

    .venv/bin/python tools/make_synthetic.py --count 5000 --out DIR [--size 256] [--seed 0] [--yaw 70]

DIR/images/NNNNNN.jpg (or .png) and DIR/params.npz with, per image: ``identity`` (N, 100), ``expression``
(N, 53), ``rotation`` (N, 3, 3) and ``translation_mm`` (N, 3) (model -> OpenCV camera), ``intrinsics``
(N, 6: fx, fy, cx, cy, width, height), ``sh`` (N, 9, 3), ``eye_centres_mm`` (N, 2, 3), ``gaze_deg``
(N, 2, 2), ``landmarks478_px`` (N, 478, 2: the MediaPipe landmarks on the true mesh and eyes),
``landmarks68_px`` (N, 68, 2), ``seed`` (N,); DIR/meta.json names the model, its topology hash and the
generator settings. Vertices are not stored: ``model.shape(identity, expression)`` and the pose give them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("make_synthetic")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--yaw", type=float, default=70.0, help="max |yaw| in degrees")
    ap.add_argument("--samples", type=int, default=4, help="MSAA samples (0 is faster)")
    ap.add_argument("--png", action="store_true", help="lossless images (default JPEG quality 95)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import cv2

    from realtime.correspondence import load_correspondence, topology_hash
    from realtime.facemodel import load_face_model
    from realtime.synthetic import SyntheticGenerator, true_landmarks

    if args.count <= 0:
        print("make_synthetic: --count must be positive", file=sys.stderr)
        return 2
    images = args.out / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"make_synthetic: cannot create {images}: {exc}", file=sys.stderr)
        return 3
    model = load_face_model()
    corr = load_correspondence(model)
    n, s = args.count, args.size
    out: dict[str, np.ndarray] = {
        "identity": np.zeros((n, model.n_identity), np.float32),
        "expression": np.zeros((n, model.n_expressions), np.float32),
        "rotation": np.zeros((n, 3, 3), np.float32), "translation_mm": np.zeros((n, 3), np.float32),
        "intrinsics": np.zeros((n, 6), np.float32), "sh": np.zeros((n, 9, 3), np.float32),
        "eye_centres_mm": np.zeros((n, 2, 3), np.float32), "gaze_deg": np.zeros((n, 2, 2), np.float32),
        "landmarks478_px": np.zeros((n, 478, 2), np.float32),
        "landmarks68_px": np.zeros((n, 68, 2), np.float32),
        "seed": np.zeros(n, np.int64),
    }
    ext = ".png" if args.png else ".jpg"
    started = time.perf_counter()
    with SyntheticGenerator(model, s, s, seed=args.seed, samples=args.samples, yaw_deg=args.yaw) as gen:
        for i in range(n):
            smp = gen.sample()
            bgr = np.ascontiguousarray(smp.image[..., ::-1])
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if args.png else [cv2.IMWRITE_JPEG_QUALITY, 95]
            if not cv2.imwrite(str(images / f"{i:06d}{ext}"), bgr, params):
                print(f"make_synthetic: cannot write into {images}", file=sys.stderr)
                return 3
            k = smp.intrinsics
            out["identity"][i], out["expression"][i] = smp.identity, smp.expression
            out["rotation"][i], out["translation_mm"][i] = smp.pose.rotation, smp.pose.translation_mm
            out["intrinsics"][i] = (k.fx, k.fy, k.cx, k.cy, k.width, k.height)
            out["sh"][i], out["gaze_deg"][i] = smp.sh_coeffs, smp.gaze_deg
            out["eye_centres_mm"][i] = smp.eye_centres_mm
            out["landmarks478_px"][i] = k.project(true_landmarks(smp, corr))
            out["landmarks68_px"][i] = k.project(smp.vertices_mm[model.landmarks68])
            out["seed"][i] = smp.seed
            if (i + 1) % 100 == 0 or i + 1 == n:
                rate = (i + 1) / (time.perf_counter() - started)
                log.info("%d/%d (%.1f/s, %.0f s left)", i + 1, n, rate, (n - i - 1) / rate)
    np.savez(args.out / "params.npz", **out)  # type: ignore[arg-type]
    meta = {"model": model.name, "topology": topology_hash(model.triangles), "count": n, "size": s,
            "seed": args.seed, "max_yaw_deg": args.yaw, "image_ext": ext,
            "ranges": dict(vars(gen.ranges))}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {n} images and params to {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
