#!/usr/bin/env python
"""Train the DECA-style detail network: UV texture → UV displacement, distilled from shape from shading.

DECA (paper 000, §2.3) regresses a UV displacement map from the image with a detail encoder/decoder. Here
the image is first unwrapped into the model's UV layout with the coarse fit (the same unwrapping the
export uses), so features sit at fixed texels and a small convolutional encoder-decoder suffices. The
targets are the SFS displacement maps of (a) keyframes of the shared videos and (b) synthetic renders
with wrinkles/bumps (``realtime.refine.detail_synth``), i.e. the network learns to reproduce the slow
SFS refinement in one forward pass.

    .venv/bin/python tools/train_detail.py build --out DIR [--video-frames 20] [--synthetic 40]
    .venv/bin/python tools/train_detail.py train --data DIR [--epochs 60] [--export engines/detail_uv.onnx]

``build`` writes one ``.npz`` per sample (texture uint8, displacement float32 mm, valid mask); ``train``
holds out one whole video and every 5th synthetic render, reports the held-out correlation and error next
to two trivial baselines (zero displacement, the mean training map) and writes the ONNX file plus its
machine-readable card (``engines/detail_uv.json``; the human card is ``engines/detail_uv.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

log = logging.getLogger("train_detail")
NET_SIZE = 128


def _down(a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.asarray(cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA))


def _save(out: Path, name: str, outcome: Any, texture: np.ndarray, meta: dict[str, Any]) -> None:
    valid = outcome.uv_valid.astype(np.float32)
    disp = outcome.displacement_uv.astype(np.float32)
    np.savez_compressed(
        out / f"{name}.npz",
        texture=_down(texture, NET_SIZE),
        displacement=_down(disp, NET_SIZE),
        valid=_down(valid, NET_SIZE) > 0.5,
        meta=json.dumps(meta),
    )


def build(args: argparse.Namespace) -> int:
    import av

    from realtime.correspondence import load_correspondence
    from realtime.facemodel import load_face_model
    from realtime.paths import shared_dir
    from realtime.refine.export import visible_depth
    from realtime.refine.job import RefineEngine, RefineRequest
    from realtime.refine.uv import View, unwrap_texture
    from realtime.synthetic import SyntheticGenerator

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_face_model()
    eng = RefineEngine(model, load_correspondence(model))

    def one(name: str, image: np.ndarray, intr: Any, meta: dict[str, Any]) -> None:
        if (out / f"{name}.npz").exists():
            return
        try:
            outcome, ref = eng.run(RefineRequest(image=image, intrinsics=intr))
        except Exception as exc:  # skip frames without a usable face
            log.info("skip %s: %s", name, exc)
            return
        k = outcome.intrinsics
        depth = visible_depth(ref.medium_vertices_mm, model.triangles, k.width, k.height, k.project)
        tex, _ = unwrap_texture(eng.atlas, [View(image, ref.medium_vertices_mm, k, depth)], model.triangles)
        _save(out, name, outcome, tex, meta)
        log.info("%s: refined in %.1f s", name, outcome.timings_ms["total"] / 1e3)

    t0 = time.perf_counter()
    videos = sorted((shared_dir() / "data" / "videos").glob("*.mp4")) if args.video_frames > 0 else []
    for v in videos:
        with av.open(str(v)) as container:
            stream = container.streams.video[0]
            total = stream.frames or 300
            step = max(total // args.video_frames, 1)
            for i, frame in enumerate(container.decode(stream)):
                if i % step or i // step >= args.video_frames:
                    continue
                one(
                    f"video_{v.stem}_{i:05d}",
                    frame.to_ndarray(format="rgb24"),
                    None,
                    {"source": v.name, "frame": i},
                )
    with SyntheticGenerator(model, 512, 512, seed=args.seed) as gen:
        from realtime.refine.detail_synth import render_detail_sample

        for i in range(args.synthetic):
            if (out / f"synth_{i:04d}.npz").exists():
                continue
            ds = render_detail_sample(
                gen,
                model,
                eng.atlas,
                args.seed * 10000 + i,
                distance_mm=float(np.random.default_rng(i).uniform(320, 420)),
            )
            one(
                f"synth_{i:04d}",
                ds.image,
                ds.intrinsics,
                {"source": "detail_synth", "seed": args.seed * 10000 + i},
            )
    eng.close()
    log.info("dataset: %d samples in %.0f s", len(list(out.glob("*.npz"))), time.perf_counter() - t0)
    return 0


def load_dataset(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    files = sorted(data.glob("*.npz"))
    x, y, m, names = [], [], [], []
    for f in files:
        with np.load(f) as d:
            x.append(d["texture"])
            y.append(d["displacement"])
            m.append(d["valid"])
            names.append(f.stem)
    return np.stack(x), np.stack(y), np.stack(m), names


def make_net() -> Any:
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class DetailNet(nn.Module):
        """Encoder (128 → 16 px, 64 channels) + decoder with skips → 1-channel displacement in mm."""

        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.e3, self.e4 = block(3, 16), block(16, 24), block(24, 32), block(32, 64)
            self.pool = nn.MaxPool2d(2)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.d3, self.d2, self.d1 = block(64 + 32, 32), block(32 + 24, 24), block(24 + 16, 16)
            self.head = nn.Conv2d(16, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x / 127.5 - 1.0
            a = self.e1(x)
            b = self.e2(self.pool(a))
            c = self.e3(self.pool(b))
            d = self.e4(self.pool(c))
            u = self.d3(torch.cat([self.up(d), c], 1))
            u = self.d2(torch.cat([self.up(u), b], 1))
            u = self.d1(torch.cat([self.up(u), a], 1))
            return self.head(u)[:, 0]

    return DetailNet()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 10 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y, m, names = load_dataset(Path(args.data))
    n = len(x)
    if n < 10:
        print(f"need at least 10 samples, found {n} in {args.data}", file=sys.stderr)
        return 2
    # Trained on synthetic renders only: the shared videos are evaluation/test-only media, so every video
    # keyframe is held out (with --train-on-video, only --holdout-video is). Plus every 5th render.
    def held_out(nm: str) -> bool:
        if nm.startswith("video_"):
            return not args.train_on_video or nm.startswith(f"video_{args.holdout_video}")
        return int(nm.split("_")[-1]) % 5 == 0

    test = np.array([held_out(nm) for nm in names])
    xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    mt = torch.tensor(m, dtype=torch.float32)
    tr_idx = np.nonzero(~test)[0]
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        perm = np.random.default_rng(epoch).permutation(tr_idx)
        total = 0.0
        for s in range(0, len(perm), args.batch):
            b = perm[s : s + args.batch]
            xb = xt[b]
            if np.random.default_rng(epoch * 1000 + s).random() < 0.5:  # brightness jitter
                xb = (xb * float(np.random.default_rng(s).uniform(0.8, 1.2))).clamp(0, 255)
            pred = net(xb)
            loss = ((pred - yt[b]) ** 2 * mt[b]).sum() / mt[b].sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            log.info(
                "epoch %d: train mse %.4f mm² (%.0f s)", epoch, total / len(tr_idx), time.perf_counter() - t0
            )
    net.eval()
    with torch.no_grad():
        pred = net(xt[test]).numpy()
    mean_map = (y[~test] * m[~test]).sum(0) / np.maximum(m[~test].sum(0), 1)
    rows = []
    for i, idx in enumerate(np.nonzero(test)[0]):
        v = m[idx]
        rows.append(
            {
                "sample": names[idx],
                "corr": _corr(pred[i][v], y[idx][v]),
                "corr_mean_map": _corr(mean_map[v], y[idx][v]),
                "rmse_mm": float(np.sqrt(((pred[i] - y[idx])[v] ** 2).mean())),
                "rmse_zero_mm": float(np.sqrt((y[idx][v] ** 2).mean())),
                "rmse_mean_map_mm": float(np.sqrt(((mean_map - y[idx])[v] ** 2).mean())),
            }
        )
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "sample"}
    for src in ("video", "synth"):
        sel = [r for r in rows if r["sample"].startswith(src)]
        if sel:
            summary[f"corr_{src}"] = float(np.mean([r["corr"] for r in sel]))
    print(f"held-out samples: {len(rows)} (train {len(tr_idx)})")
    print(f"{'':12} {'corr':>6} {'rmse mm':>8}")
    print(f"{'network':12} {summary['corr']:6.3f} {summary['rmse_mm']:8.3f}")
    print(f"{'mean map':12} {summary['corr_mean_map']:6.3f} {summary['rmse_mean_map_mm']:8.3f}")
    print(f"{'zero':12} {0.0:6.3f} {summary['rmse_zero_mm']:8.3f}")
    if args.export:
        export(net, Path(args.export), summary, n, int(test.sum()), args)
    return 0


def export(
    net: Any, path: Path, summary: dict[str, float], n: int, n_test: int, args: argparse.Namespace
) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, NET_SIZE, NET_SIZE)
    torch.onnx.export(
        net,
        (dummy,),
        str(path),
        input_names=["texture_uv"],
        output_names=["displacement_uv"],
        dynamic_axes={"texture_uv": {0: "batch"}, "displacement_uv": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    card = {
        "name": "detail_uv",
        "task": "UV displacement (mm along the outward normal) from the UV-unwrapped face texture",
        "input": {
            "name": "texture_uv",
            "shape": [1, 3, NET_SIZE, NET_SIZE],
            "dtype": "float32",
            "range": "0-255 RGB",
            "layout": "ICT-FaceKit face-area UV tile [0,1]², row 0 = v 1",
        },
        "output": {"name": "displacement_uv", "shape": [1, NET_SIZE, NET_SIZE], "unit": "mm"},
        "training_data": (
            f"{n - n_test} SFS displacement maps (realtime.refine) of synthetic renders of the ICT-FaceKit "
            "model with wrinkles (realtime.refine.detail_synth)"
            + ("" if not args.train_on_video else " and keyframes of the shared demo videos (research only)")
        ),
        "evaluation_data": "held-out synthetic renders and keyframes of the shared demo videos (test media)",
        "held_out": n_test,
        "metrics": {k: round(v, 4) for k, v in summary.items()},
        "epochs": args.epochs,
        "trained_by": "tools/train_detail.py",
        "licence": "weights trained by the project on renders of the MIT-licensed ICT-FaceKit model",
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=1))
    print(f"wrote {path} and {path.with_suffix('.json')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    b.add_argument("--video-frames", type=int, default=20)
    b.add_argument("--synthetic", type=int, default=40)
    b.add_argument("--seed", type=int, default=11)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--export", default=None)
    t.add_argument("--holdout-video", default="wink_blink_gaze", help="video whose frames are all held out")
    t.add_argument("--train-on-video", action="store_true",
                   help="also train on video keyframes (research only: the shared videos are test media)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("realtime").setLevel(logging.WARNING)
    return build(args) if args.cmd == "build" else train(args)


if __name__ == "__main__":
    sys.exit(main())
