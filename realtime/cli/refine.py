"""``realtime-face refine IMAGE [--side IMAGE2] --out DIR``: refine a snapshot offline and export it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "refine", help="detailed 3D face from a photo (+ optional side view): OBJ/MTL/PNG, PLY, GLB, JSON",
        description="Fit the face model to IMAGE (jointly with a side view when --side is given), add "
                    "shape-from-shading detail, and export the textured, detailed mesh with its displacement "
                    "and normal maps.")
    p.add_argument("image", type=Path, help="front (or only) photo")
    p.add_argument("--side", type=Path, default=None, help="a second photo of the same face turned ≥ 35°")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="camera calibration (JSON or OpenCV YAML); default: 60° horizontal field of view")
    p.add_argument("--rotated-view", action="store_true",
                   help="one image only: add a rendering of the reconstruction turned by 30° as a second "
                        "view")
    p.add_argument("--stem", default="face", help="base name of the exported files (default: face)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from realtime.camera import Intrinsics
    from realtime.capture import load_rgb
    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.refine.job import RefineEngine, RefineRequest

    image = load_rgb(args.image)
    side = load_rgb(args.side) if args.side is not None else None
    k = ks = None
    if args.calibration is not None:
        k = Intrinsics.from_file(args.calibration, image.shape[1], image.shape[0])
        if side is not None:
            ks = Intrinsics.from_file(args.calibration, side.shape[1], side.shape[0])
    model = load_face_model()
    corr = load_correspondence(model)
    req = RefineRequest(image=image, intrinsics=k, side_image=side, side_intrinsics=ks,
                        rotated_second_view=bool(args.rotated_view), out_dir=str(args.out), reason="cli")
    with RefineEngine(model, corr) as engine:
        outcome, _ = engine.run(req)
    assert outcome.export is not None
    summary = {
        "out": str(outcome.export.directory),
        "files": {k: str(v) for k, v in outcome.export.files.items()},
        "views": outcome.views,
        "yaw_deg": round(outcome.yaw_deg, 1),
        "photometric_error_grey": {"coarse": round(outcome.photometric_error[0], 2),
                                   "refined": round(outcome.photometric_error[1], 2)},
        "timings_ms": {k: round(v, 1) for k, v in outcome.timings_ms.items()},
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        print()
        return 0
    print(f"refined {args.image} ({outcome.views} view{'s' if outcome.views > 1 else ''}) -> {args.out}")
    print(f"  photometric error (grey levels): coarse {outcome.photometric_error[0]:.2f}, "
          f"refined {outcome.photometric_error[1]:.2f}")
    print("  stage times (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in outcome.timings_ms.items()
                                             if "." not in k))
    for role, path in outcome.export.files.items():
        print(f"  {role:13s} {path}")
    return 0
