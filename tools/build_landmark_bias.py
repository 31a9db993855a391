#!/usr/bin/env python
"""Measure MediaPipe's yaw-dependent landmark bias on model renders (``realtime.refine.landmark_bias``).

    .venv/bin/python tools/build_landmark_bias.py [--identities 12] [--step 10] [--out PATH]

Writes ``realtime/data/mediapipe_yaw_bias_<model>.npz`` (a few hundred kB) and prints, per yaw bin, the
median landmark error before and after removing the mean offset.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identities", type=int, default=12)
    ap.add_argument("--step", type=float, default=10.0)
    ap.add_argument("--max-yaw", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.landmark_bias import build_landmark_bias, default_path

    model = load_face_model()
    yaws = np.arange(-args.max_yaw, args.max_yaw + 1e-6, args.step)
    table = build_landmark_bias(model, load_correspondence(model), yaws, args.identities, args.seed)
    out = args.out or default_path(model)
    table.save(out)
    print(f"{'yaw':>5} {'renders':>7} {'|offset| mm':>11} {'residual mm':>11}")
    for i, y in enumerate(table.yaw_bins_deg):
        print(
            f"{y:5.0f} {int(table.samples[i]):7d} "
            f"{np.median(np.linalg.norm(table.offset_mm[i], axis=1)):11.2f} "
            f"{np.median(table.sigma_mm[i]):11.2f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
