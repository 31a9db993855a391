"""One training loop for both regressors (Mobile-FaceRNet and Deep3D), CPU-friendly, time-boxed, seeded.

Loss = the paper's terms (landmark, land_error after epoch 5, photometric, SSIM, Laplacian smoothness,
regularisation — or Deep3D's hybrid loss) + supervision from the labels the data carries (exact synthetic
ground truth; fitter pseudo-labels at a lower weight). See ``realtime.training.losses`` for units.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from realtime.engines.albedo import build_albedo_model
from realtime.engines.coeffs import CoefficientLayout, CropSpec
from realtime.facemodel import MorphableModel
from realtime.training import losses as L
from realtime.training.data import ArrayDataset, shard_paths
from realtime.training.diffrender import SH_DC, interpolate, rasterize, shade, vertex_normals
from realtime.training.facelayer import FaceLayer, rot6d_to_matrix, split
from realtime.training.nets import Deep3DNet, MobileFaceRNet

log = logging.getLogger(__name__)

LANDMARK_UNIT_PX = 16.0
"""Landmark losses are in sixteenths of the crop side (4 pixels of a 64-pixel crop): with the paper's
ω=400 the landmark term leads while the pose is far off and leaves room to the shape terms once it is
within a pixel or two."""
PSEUDO_LABEL_WEIGHT = 0.3


@dataclass
class TrainConfig:
    arch: str = "mobile-facernet"
    input_size: int = 64
    batch_size: int = 32
    lr: float = 1e-3
    minutes: float = 45.0
    max_epochs: int = 60
    threads: int = 2
    seed: int = 0
    val_fraction: float = 0.05
    render_every: int = 1
    """Compute the photometric/SSIM terms every this many steps."""
    render_batch: int = 8
    """...on the first this-many samples of the batch (rasterising costs about as much as the network)."""
    epoch_samples: int = 0
    """Samples per epoch (0: the whole training set); land_error starts after epoch 5 of these."""
    deep3d_width: int = 32
    front_stride: int = 2
    crop_scale: float = 1.25
    weights: L.LossWeights = field(default_factory=L.LossWeights)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def build_network(cfg: TrainConfig, layout: CoefficientLayout) -> nn.Module:
    if cfg.arch == "mobile-facernet":
        return MobileFaceRNet(layout, cfg.input_size, front_stride=cfg.front_stride)
    if cfg.arch == "deep3d":
        return Deep3DNet(layout, cfg.input_size, width=cfg.deep3d_width)
    raise ValueError(f"unknown architecture {cfg.arch}")


def init_head(fc: nn.Linear, layout: CoefficientLayout, data: ArrayDataset) -> None:
    """Start at the data's mean pose, zero identity, near-zero expression, unit ambient light."""
    s = layout.slices()
    with torch.no_grad():
        fc.bias.zero_()
        fc.bias[s["rotation"]] = torch.from_numpy(data.arrays["rot6d"].mean(0))
        fc.bias[s["translation"]] = torch.from_numpy(data.arrays["uvk"].mean(0))
        fc.bias[s["expression"]] = -3.0
        sh = torch.zeros(9, 3)
        sh[0] = 1.0 / SH_DC
        fc.bias[s["sh"]] = sh.reshape(-1)


@dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, float]
    lm_err: torch.Tensor  # (B, 68) landmark distances in LANDMARK_UNIT_PX units


class Objective(nn.Module):
    lm_weights: torch.Tensor
    lm_error_weights: torch.Tensor
    skin_region: torch.Tensor

    def __init__(self, model: MorphableModel, layout: CoefficientLayout, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = layout
        albedo = build_albedo_model(model, layout.albedo)
        self.face = FaceLayer(model, albedo, layout)
        kind = "mobile-facernet" if cfg.arch == "mobile-facernet" else "deep3d"
        self.register_buffer("lm_weights", L.landmark_weights(kind))
        self.register_buffer("lm_error_weights", torch.ones(51))
        # Deep3D texture-variance region: skin away from lips and brows (cheeks, nose, forehead).
        from realtime.engines.albedo import _soft_region

        v = model.mean_mm[: self.face.n]
        lm = model.mean_mm[model.landmarks68]
        away = (
            (_soft_region(v, lm[48:68], 8.0) < 0.1)
            & (_soft_region(v, lm[17:27], 6.0) < 0.1)
            & (_soft_region(v, lm[36:48], 8.0) < 0.1)
        )
        front = v[:, 2] > lm[:, 2].min()
        self.register_buffer("skin_region", torch.from_numpy(np.nonzero(away & front)[0].astype(np.int64)))

    def forward(
        self,
        coeffs: torch.Tensor,
        batch: dict[str, torch.Tensor],
        images: torch.Tensor,
        epoch: int,
        render: bool,
    ) -> StepOutput:
        cfg, w = self.cfg, self.cfg.weights
        size = images.shape[-1]
        d = split(coeffs, self.layout)
        v = self.face.shape(d)
        p = self.face.to_camera(d, v, batch["g"])
        pts = self.face.project(p, batch["g"], size)
        lm = (pts[:, self.face.landmarks68] + 0.5) / size * LANDMARK_UNIT_PX
        lm_gt = batch["lm68"] * LANDMARK_UNIT_PX
        terms: dict[str, torch.Tensor] = {}
        terms["landmark"] = w.landmark * L.landmark_loss(lm, lm_gt, self.lm_weights)
        if epoch >= 5 and cfg.arch == "mobile-facernet":
            terms["land_error"] = w.land_error * L.land_error_loss(lm, lm_gt, self.lm_error_weights)
        if render:
            normals = vertex_normals(p, self.face.triangles) * torch.tensor([1.0, -1.0, -1.0])
            albedo = self.face.albedo(d)
            colours = shade(albedo, normals, d.sh)
            bsz = min(cfg.render_batch, images.shape[0])
            pts_r = pts[:bsz]
            frags = rasterize(pts_r.detach(), p[:bsz, :, 2].detach(), self.face.triangles, size)
            rendered = interpolate(pts_r, colours[:bsz], self.face.triangles, frags)
            target = L.gather_pixels(images, frags)
            if cfg.arch == "mobile-facernet":
                terms["photometric"] = w.photometric * L.photometric_loss(rendered, target, frags, bsz)
                terms["ssim"] = w.ssim * L.ssim_loss(rendered, target, frags, bsz)
            else:
                skin = L.skin_probability(target)
                terms["photometric"] = w.photometric * L.photometric_loss(rendered, target, frags, bsz, skin)
                terms["texture"] = w.texture * L.texture_variance_loss(albedo[:bsz], self.skin_region)
        if cfg.arch == "mobile-facernet":
            terms["smooth"] = w.smooth * L.smoothness_loss(self.face.laplacian(v * 0.1))
            terms["regular"] = w.regular * L.mobile_facernet_regulariser(
                d.identity, d.albedo_coeffs, d.expression
            )
        else:
            terms["coefficient"] = w.coefficient * L.deep3d_coefficient_loss(
                d.identity, d.expression, d.albedo_coeffs
            )
        with torch.no_grad():
            gt = split(
                torch.cat(
                    [
                        batch["identity"],
                        batch["expression"],
                        batch["rot6d"],
                        batch["uvk"],
                        torch.zeros(coeffs.shape[0], self.layout.sh + self.layout.albedo),
                    ],
                    1,
                ),
                self.layout,
            )
            v_gt = self.face.shape(gt)
        wgt = batch["exact"] + (1.0 - batch["exact"]) * PSEUDO_LABEL_WEIGHT
        sup = L.supervised_losses(
            v,
            v_gt,
            d.rotation,
            rot6d_to_matrix(batch["rot6d"]),
            d.uvk,
            batch["uvk"],
            d.expression,
            batch["expression"],
            wgt,
        )
        terms["vertices"] = w.vertices * sup["vertices"]
        terms["pose"] = w.pose * sup["pose"]
        terms["expression"] = w.expression * sup["expression"]
        loss = sum(terms.values(), torch.zeros(()))
        lm_err = (lm - lm_gt).detach().norm(dim=-1)
        return StepOutput(loss=loss, terms={k: float(t.detach()) for k, t in terms.items()}, lm_err=lm_err)


def to_tensors(
    batch: dict[str, np.ndarray], rng: np.random.Generator | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    # NHWC memory viewed as NCHW = channels_last: 1.6x faster convolutions on CPU.
    img = (
        torch.from_numpy(batch["image"])
        .permute(0, 3, 1, 2)
        .float()
        .contiguous(memory_format=torch.channels_last)
        / 255.0
    )
    if rng is not None:
        # Paper Sec. 4.1: each RGB channel multiplied by U(0.6, 1.2) (half of the samples).
        gain = rng.uniform(0.6, 1.2, size=(img.shape[0], 3, 1, 1)).astype(np.float32)
        keep = rng.random(img.shape[0]) < 0.5
        gain[keep] = 1.0
        img = (img * torch.from_numpy(gain)).clamp(0.0, 1.0)
    t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in batch.items() if k != "image"}
    return t, img


@dataclass
class Metrics:
    landmark_nme: float
    """Mean 68-landmark error / crop side (%)."""
    vertex_mm: float
    """Mean model-space vertex error over the narrow face area (mm)."""
    rotation_deg: float
    baseline_vertex_mm: float
    """The same error of the mean face (all-zero coefficients)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate(net: nn.Module, objective: Objective, data: ArrayDataset, batch_size: int = 64) -> Metrics:
    net.eval()
    lm_e, v_e, r_e, b_e = [], [], [], []
    for b in data.batches(batch_size, np.random.default_rng(0), shuffle=False):
        t, img = to_tensors(b, None)
        coeffs = net(img)
        d = split(coeffs, objective.layout)
        v = objective.face.shape(d)
        p = objective.face.to_camera(d, v, t["g"])
        pts = objective.face.project(p, t["g"], img.shape[-1])
        lm = (pts[:, objective.face.landmarks68] + 0.5) / img.shape[-1]
        lm_e.append((lm - t["lm68"]).norm(dim=-1).mean(-1))
        gt = split(
            torch.cat(
                [
                    t["identity"],
                    t["expression"],
                    t["rot6d"],
                    t["uvk"],
                    torch.zeros(len(img), objective.layout.sh + objective.layout.albedo),
                ],
                1,
            ),
            objective.layout,
        )
        v_gt = objective.face.shape(gt)
        v_e.append((v - v_gt).norm(dim=-1).mean(-1))
        b_e.append((objective.face.mean.view(1, -1, 3) - v_gt).norm(dim=-1).mean(-1))
        rel = d.rotation.transpose(1, 2) @ gt.rotation
        cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
        r_e.append(torch.rad2deg(torch.acos(cos)))
    net.train()
    return Metrics(
        landmark_nme=100.0 * float(torch.cat(lm_e).mean()),
        vertex_mm=float(torch.cat(v_e).mean()),
        rotation_deg=float(torch.cat(r_e).mean()),
        baseline_vertex_mm=float(torch.cat(b_e).mean()),
    )


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    val: Metrics
    steps: int
    seconds: float
    samples: int


def _endless(
    data: ArrayDataset, batch_size: int, rng: np.random.Generator
) -> Iterator[dict[str, np.ndarray]]:
    while True:
        yield from data.batches(batch_size, rng)


def train(cfg: TrainConfig, model: MorphableModel, folders: list[Path], checkpoint: Path) -> TrainResult:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    # Validation: the first shard of the first folder; training: every other shard, re-listed at each
    # epoch so that training can start while the data builder is still writing shards.
    shards = [p for f in folders for p in shard_paths(f)]
    if len(shards) < 2:
        raise FileNotFoundError("need at least two shards (one is held out for validation)")
    val = ArrayDataset.load_files(shards[:1], cfg.input_size)
    known = shards[1:]
    trn = ArrayDataset.load_files(known, cfg.input_size)
    log.info(
        "training %s on %d samples (%d held out), input %d px", cfg.arch, len(trn), len(val), cfg.input_size
    )
    layout = CoefficientLayout()
    net = build_network(cfg, layout).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    init_head(net.fc, layout, trn)  # type: ignore[arg-type]
    objective = Objective(model, layout, cfg)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    budget = cfg.minutes * 60.0
    epoch_samples = cfg.epoch_samples or len(trn)
    steps_per_epoch = max(epoch_samples // cfg.batch_size, 1)
    batches = _endless(trn, cfg.batch_size, rng)
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    step = 0
    best = math.inf
    stop = False
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(cfg.max_epochs):
        fresh = [p for f in folders for p in shard_paths(f) if p not in known and p != shards[0]]
        if fresh:
            known += fresh
            trn = ArrayDataset.load_files(known, cfg.input_size)
            batches = _endless(trn, cfg.batch_size, rng)
            log.info("now %d training samples", len(trn))
        err_sum = torch.zeros(68)
        err_n = 0
        sums: dict[str, float] = {}
        for _ in range(steps_per_epoch):
            b = next(batches)
            elapsed = time.perf_counter() - t0
            if elapsed > budget:
                stop = True
                break
            # Cosine decay over the time budget (the number of epochs is not known in advance).
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (
                    0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(elapsed / budget, 1.0)))
                )
            t, img = to_tensors(b, rng)
            out = objective(net(img), t, img, epoch, render=(step % cfg.render_every == 0))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            err_sum += out.lm_err.sum(0)
            err_n += out.lm_err.shape[0]
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + v
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss.detach())
            step += 1
            if step % 25 == 0:
                log.info(
                    "epoch %d step %d (%.0f%% of epoch) %.0fs loss %.2f | %s",
                    epoch,
                    step,
                    100.0 * (step % steps_per_epoch) / steps_per_epoch,
                    elapsed,
                    float(out.loss),
                    " ".join(f"{k}={v:.3g}" for k, v in out.terms.items()),
                )
        if err_n:
            # land_error (Eq. 13): next epoch weights the inner points by this epoch's mean error.
            e = err_sum[17:] / err_n
            objective.lm_error_weights.copy_(e / e.mean().clamp_min(1e-8))
        m = evaluate(net, objective, val)
        row = {
            "epoch": float(epoch),
            "step": float(step),
            "seconds": time.perf_counter() - t0,
            **m.as_dict(),
            **{k: v / max(steps_per_epoch, 1) for k, v in sums.items()},
        }
        history.append(row)
        log.info(
            "epoch %d done: val landmark NME %.2f%%, vertex %.2f mm (mean face %.2f), rotation %.2f°",
            epoch,
            m.landmark_nme,
            m.vertex_mm,
            m.baseline_vertex_mm,
            m.rotation_deg,
        )
        score = m.vertex_mm + m.landmark_nme
        if score < best:
            best = score
            torch.save(
                {
                    "state_dict": net.state_dict(),
                    "config": cfg.to_json(),
                    "layout": layout.to_json(),
                    "metrics": m.as_dict(),
                    "epoch": epoch,
                },
                checkpoint,
            )
        if stop:
            break
    state = torch.load(checkpoint, weights_only=False)
    net.load_state_dict(state["state_dict"])
    final = evaluate(net, objective, val)
    return TrainResult(
        history=history, val=final, steps=step, seconds=time.perf_counter() - t0, samples=len(trn)
    )


def load_network(checkpoint: Path) -> tuple[nn.Module, TrainConfig]:
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    raw = json.loads(state["config"])
    weights = L.LossWeights(**raw.pop("weights"))
    cfg = TrainConfig(**raw, weights=weights)
    layout = CoefficientLayout.from_json(state["layout"])
    net = build_network(cfg, layout)
    net.load_state_dict(state["state_dict"])
    net.eval()
    return net, cfg


def crop_spec_of(cfg: TrainConfig) -> CropSpec:
    return CropSpec(input_size=cfg.input_size, scale=cfg.crop_scale)
