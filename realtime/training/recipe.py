"""Command-line recipe shared by ``tools/train_mobilefacernet.py`` and ``tools/train_deep3d.py``:
build (or reuse) the cached data, train within a time budget, export the ONNX, check parity, write metrics."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from realtime.paths import cache_dir, engines_dir, shared_dir

log = logging.getLogger(__name__)

ENGINE_FILES = {"mobile-facernet": "mobile_facernet.onnx", "deep3d": "deep3d.onnx"}


def parser(arch: str, input_size: int, minutes: float, renders: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=f"Train the {arch} regressor on synthetic (+ pseudo-labelled) faces "
        "and export it to ONNX."
    )
    p.add_argument(
        "--data",
        type=Path,
        default=cache_dir() / "training" / "synthetic_s1",
        help="synthetic shard folder (built when missing; resumable)",
    )
    p.add_argument("--renders", type=int, default=renders, help="synthetic renders to build (2 crops each)")
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument(
        "--profile-renders",
        type=int,
        default=0,
        help="extra renders with |yaw| in [--profile-min-yaw, 78] (seed --data-seed + 1, folder <data>_profile)",
    )
    p.add_argument("--profile-min-yaw", type=float, default=40.0)
    p.add_argument("--no-build", action="store_true", help="use the shards already in --data")
    p.add_argument(
        "--real",
        action="store_true",
        help="add frames of the shared videos pseudo-labelled by the fitter (every 3rd frame)",
    )
    p.add_argument("--minutes", type=float, default=minutes, help="training wall-clock budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=input_size)
    p.add_argument("--epoch-samples", type=int, default=4000)
    p.add_argument("--render-every", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument(
        "--ridge-identity",
        action="store_true",
        help="after training, solve the identity rows of the output layer by ridge regression "
        "(realtime.training.ridge)",
    )
    p.add_argument(
        "--skip-training",
        action="store_true",
        help="export the existing --checkpoint (e.g. to add --ridge-identity) without training",
    )
    p.add_argument("--out", type=Path, default=engines_dir() / ENGINE_FILES[arch])
    p.add_argument("--fp16-weights", action="store_true", help="store weights as float16 in the ONNX")
    if arch == "deep3d":
        p.add_argument(
            "--width", type=int, default=32, help="ResNet-50 base width (64 = the standard network)"
        )
    return p


def main(
    arch: str, argv: list[str] | None = None, input_size: int = 64, minutes: float = 45.0, renders: int = 9000
) -> int:
    import torch

    from realtime.facemodel import load_face_model
    from realtime.training.data import build_pseudo_labelled, build_synthetic, shard_paths
    from realtime.training.export import export_onnx, parity, round_weights_fp16
    from realtime.training.trainer import TrainConfig, crop_spec_of, train

    args = parser(arch, input_size, minutes, renders).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    torch.set_num_threads(args.threads)
    model = load_face_model()
    folders = [args.data]
    if not args.no_build:
        build_synthetic(args.data, model, args.renders, seed=args.data_seed)
    if args.profile_renders > 0:
        profile = args.data.with_name(args.data.name + "_profile")
        if not args.no_build:
            build_synthetic(
                profile,
                model,
                args.profile_renders,
                seed=args.data_seed + 1,
                yaw_deg=78.0,
                yaw_min_deg=args.profile_min_yaw,
            )
        folders.append(profile)
    if args.real:
        real = args.data.parent / "pseudo_labelled"
        videos = sorted((shared_dir() / "data" / "videos").glob("*.mp4"))
        build_pseudo_labelled(real, model, videos)
        if shard_paths(real):
            folders.append(real)
    cfg = TrainConfig(
        arch=arch,
        input_size=args.input_size,
        batch_size=args.batch_size,
        minutes=args.minutes,
        threads=args.threads,
        seed=args.seed,
        epoch_samples=args.epoch_samples,
        render_every=args.render_every,
    )
    if arch == "deep3d":
        cfg.deep3d_width = args.width
    checkpoint = args.checkpoint or (args.data.parent / f"{arch}.pt")
    from realtime.engines.coeffs import CoefficientLayout
    from realtime.training.trainer import Metrics, TrainResult, evaluate, load_network

    if args.skip_training:
        net, cfg = load_network(checkpoint)
        state = torch.load(checkpoint, weights_only=False, map_location="cpu")
        result = TrainResult(history=[], val=Metrics(**state["metrics"]), steps=0, seconds=0.0, samples=0)
        trained = checkpoint.with_suffix(".json")   # the training run's report: keep its summary
        if trained.is_file():
            run = json.loads(trained.read_text())
            result.steps, result.seconds = int(run["steps"]), float(run["seconds"])
            result.samples = int(run["train_samples"])
    else:
        result = train(cfg, model, folders, checkpoint)
        net, _ = load_network(checkpoint)
    ridge: dict[str, object] | None = None
    if args.ridge_identity:
        from realtime.training.data import ArrayDataset
        from realtime.training.ridge import ridge_identity_head
        from realtime.training.trainer import Objective

        # The trainer's split: the first shard of the first folder is held out.
        shards = [p for f in folders for p in shard_paths(f)]
        val = ArrayDataset.load_files(shards[:1], cfg.input_size)
        trn = ArrayDataset.load_files(shards[1:], cfg.input_size)
        ridge = ridge_identity_head(net, CoefficientLayout(), trn, val).as_dict()
        result.val = evaluate(net, Objective(model, CoefficientLayout(), cfg), val)
        ridge["val_after"] = result.val.as_dict()

    export_onnx(
        net,
        args.out,
        arch,
        CoefficientLayout(),
        crop_spec_of(cfg),
        fp16_weights=args.fp16_weights,
        extra_metadata={
            "realtime_face.training": json.dumps(
                {
                    "steps": result.steps,
                    "seconds": round(result.seconds),
                    "samples": result.samples,
                    "val": result.val.as_dict(),
                    "ridge_identity": ridge,
                }
            )
        },
    )
    imgs = np.random.default_rng(0).random((4, 3, cfg.input_size, cfg.input_size), dtype=np.float32)
    if args.fp16_weights:
        round_weights_fp16(net)  # compare with the weights the ONNX actually holds
    diff = parity(net, args.out, imgs)
    report = {
        "arch": arch,
        "config": json.loads(cfg.to_json()),
        "steps": result.steps,
        "seconds": result.seconds,
        "train_samples": result.samples,
        "val": asdict(result.val),
        "ridge_identity": ridge,
        "parity_max_abs": diff,
        "history": result.history,
        "onnx": str(args.out),
        "onnx_mb": args.out.stat().st_size / 1e6,
    }
    # A re-export (--skip-training) keeps the training run's report (with its history) next to it.
    report_path = checkpoint.with_suffix(".export.json" if args.skip_training else ".json")
    report_path.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))
    return 0
