"""``realtime-face models build-engines`` and ``realtime-face models import deep3d`` (registered by
``realtime.cli.models``).

    realtime-face models build-engines [--backend auto|tensorrt|onnxruntime-gpu|cpu]
    realtime-face models import deep3d CKPT --bfm BFM_model_front.mat [--out PATH]

``build-engines`` prepares every engine for this machine ahead of the first run (on NVIDIA GPUs: builds and
caches the TensorRT FP16 engines) and prints the path each one takes and why. ``import deep3d`` converts
an official Deep3DFaceRecon_pytorch checkpoint (BFM 2009 setting) into the project's engine format in the
user's engines folder, where it takes precedence over the shipped CPU-trained one (needs torch).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from realtime.errors import MissingResourceError


def register_build_engines(sub: Any) -> None:
    from realtime.engines.runtime import BACKENDS

    p = sub.add_parser(
        "build-engines", help="prepare the network engines for this machine (TensorRT on GPUs)"
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per engine (default %(default)s)")
    p.set_defaults(func=cmd_build_engines)


def cmd_build_engines(args: argparse.Namespace) -> int:
    import numpy as np

    from realtime.engines.regressors import ENGINE_FILES, engine_path
    from realtime.engines.runtime import EngineRunner

    found = 0
    for name in ENGINE_FILES:
        try:
            path = engine_path(name)
        except MissingResourceError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        found += 1
        t0 = time.perf_counter()
        with EngineRunner(path, prefer=args.backend, threads=args.threads) as runner:
            x = np.zeros((1, 3, runner.input_size, runner.input_size), np.float32)
            runner.run(x)
            ready = time.perf_counter() - t0
            t1 = time.perf_counter()
            for _ in range(20):
                runner.run(x)
            ms = (time.perf_counter() - t1) / 20 * 1e3
            print(
                f"{name}: {runner.backend} ({runner.reason}); ready in {ready:.1f} s, {ms:.2f} ms per face "
                f"[{path}]"
            )
    if not found:
        raise MissingResourceError("no engine files found")
    return 0


def register_import(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="convert a third-party network into a realtime-face engine",
        description="Convert an official Deep3DFaceRecon_pytorch checkpoint (BFM 2009 setting, "
        "e.g. checkpoints/<name>/epoch_20.pth) with its BFM_model_front.mat.",
    )
    p.add_argument("kind", choices=("deep3d",))
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument("--bfm", type=Path, required=True, metavar="BFM_model_front.mat")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output ONNX (default: the user engines folder, used instead of the shipped one)",
    )
    p.add_argument("--fp16-weights", action="store_true", help="store the weights as float16 (half the size)")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from realtime.engines.regressors import ENGINE_FILES, user_engines_dir
    from realtime.errors import BadInputError, OutputError

    for p, what in ((args.checkpoint, "checkpoint"), (args.bfm, "BFM file")):
        if not p.is_file():
            raise BadInputError(f"{what} not found: {p}")
    try:
        from realtime.training.deep3d_import import import_deep3d
    except ImportError as exc:
        raise MissingResourceError(
            f"importing needs torch ({exc}); pip install 'realtime-face[train]'"
        ) from None
    from realtime.facemodel import load_face_model

    out = args.out or (user_engines_dir() / ENGINE_FILES["deep3d"])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out.parent}: {exc}") from None
    path, tr = import_deep3d(
        args.checkpoint, args.bfm, out, load_face_model(), fp16_weights=args.fp16_weights
    )
    print(
        f"imported {args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.0f} MB); BFM→ICT dense fit RMS "
        f"{tr.fit_rms_mm:.2f} mm, crop scale {tr.crop.scale:.3f}"
    )
    return 0
