"""Train the learned landmark prior (``realtime/landmark_prior.py``) on renders of the face model.

    .venv/bin/python tools/train_landmark_prior.py [--data DIR] [--count 20000] [--epochs 40] [--out FILE]

1. Renders ``--count`` synthetic faces (``realtime.synthetic``: random identity, expression, pose, lighting,
   skin, background, blur/noise/JPEG) and runs the real MediaPipe FaceMesh on each; the landmarks and the
   true parameters are cached in chunks of 250 under ``--data`` (resumable: existing chunks are kept, and a
   second process with another ``--seed`` can fill the same folder in parallel).
2. Fits: an MLP (2 × ``--hidden`` GELU) from pose-free landmark features to the 53 expression weights, with
   the loss measured where it matters (the squared per-vertex displacement error of the face area, through
   the expression basis' Gram matrix); a ridge regression to the 100 identity coefficients.
3. Reports held-out figures next to the zero-expression / mean-face baselines and writes the weights with
   each output's held-out residual spread (the fit's prior widths).

Torch (CPU) is used here only; the application runs the exported numpy weights.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

log = logging.getLogger("train_landmark_prior")
CHUNK = 250


ONE_SIDED_MAIN = (("eyeBlink_L", "eyeBlink_R"), ("eyeBlink_R", "eyeBlink_L"), ("mouthSmile_L", "mouthSmile_R"),
                  ("mouthSmile_R", "mouthSmile_L"))
"""``--one-sided`` streams: the main expression of 4 renders in 5 (issue 3's one-sided blinks and smiles)."""


def one_sided_expression(gen: Any, rng: np.random.Generator, i: int, names: list[str],
                         bilateral: bool = False) -> np.ndarray:
    """Sample ``i`` of a ``--one-sided`` stream: the generator's random expression, and for 4 samples in 5 one
    of eyeBlink_L/R, mouthSmile_L/R at U(0.6, 1) with its mirror at 0 (the construction of
    ``tools/bench_fitting.py``'s one-sided set, on other seeds). Such renders are rare in the plain stream
    (≈ 3 % of it), and the regressor learns from them how MediaPipe under-registers a one-sided blink/smile.
    ``bilateral``: both sides at the same U(0.6, 1) weight instead (the symmetric counterpart, so that the
    regressor does not learn that a strong blink or smile is usually one-sided)."""
    w = gen.random_expression(rng)
    if i % 5 != 4:
        act, mirror = ONE_SIDED_MAIN[i % 4]
        ia, ib = names.index(act), names.index(mirror)
        w[ia] = rng.uniform(0.6, 1.0)
        w[ib] = w[ia] if bilateral else 0.0
    return np.asarray(w)


def generate(data: Path, count: int, seed: int, one_sided: bool = False, bilateral: bool = False) -> None:
    """Render + track until ``data`` holds ``count`` samples of this seed's stream (chunked, resumable).
    ``one_sided``: the stream of ``one_sided_expression`` instead of the generator's own expressions
    (``bilateral``: its symmetric variant)."""
    from realtime.facemodel import load_face_model
    from realtime.iris import measurement_version
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    data.mkdir(parents=True, exist_ok=True)
    n_chunks = (count + CHUNK - 1) // CHUNK
    todo = [c for c in range(n_chunks) if not (data / f"s{seed}_c{c:03d}.npz").exists()]
    if not todo:
        return
    model = load_face_model()
    t0 = time.perf_counter()
    done = 0
    names = list(model.expression_names)
    rng = np.random.default_rng(seed)   # the one-sided stream's expressions
    with SyntheticGenerator(model, 512, 512, seed=seed) as gen, \
            FaceMeshTracker(max_faces=1, static=True) as tracker:
        for c in range(n_chunks):
            path = data / f"s{seed}_c{c:03d}.npz"
            if c not in todo:
                gen.skip(CHUNK)   # keep the sample stream identical whatever was cached
                if one_sided:
                    for i in range(c * CHUNK, (c + 1) * CHUNK):
                        one_sided_expression(gen, rng, i, names, bilateral)
                continue
            rec: dict[str, list[np.ndarray]] = {k: [] for k in (
                "lm", "presence", "identity", "expression", "rotation", "translation", "intr", "found",
                "iris_edge")}
            for i in range(c * CHUNK, (c + 1) * CHUNK):
                s = (gen.sample(expression=one_sided_expression(gen, rng, i, names, bilateral)) if one_sided
                     else gen.sample())
                tracks = tracker.track(s.image)
                rec["found"].append(np.array(bool(tracks)))
                rec["lm"].append(tracks[0].landmarks_px.astype(np.float32) if tracks
                                 else np.zeros((478, 3), np.float32))
                rec["presence"].append(np.array(float(tracks[0].presence) if tracks else 0.0, np.float32))
                edge = tracks[0].iris_diameter_px if tracks else None
                rec["iris_edge"].append(np.asarray(edge if edge is not None else (np.nan, np.nan), np.float32))
                rec["identity"].append(s.identity)
                rec["expression"].append(s.expression)
                rec["rotation"].append(s.pose.rotation.astype(np.float32))
                rec["translation"].append(s.pose.translation_mm.astype(np.float32))
                k = s.intrinsics
                rec["intr"].append(np.array([k.fx, k.fy, k.cx, k.cy, k.width, k.height], np.float32))
            tmp = path.with_suffix(".tmp.npz")
            arrays = {k: np.asarray(v) for k, v in rec.items()}
            np.savez(tmp, **arrays, iris_edge_version=np.array(measurement_version()))
            tmp.replace(path)
            done += 1
            log.info("renders: chunk %d/%d of seed %d (%.0f s)", done, len(todo), seed,
                     time.perf_counter() - t0)


def add_iris_edges(data: Path) -> None:
    """Chunks written before the image iris measurement existed: re-render their sample streams (the same
    seeds, the same order) and add ``iris_edge`` (the limbus diameters of ``realtime.iris``, measured at
    the stored MediaPipe rings). Each sample's identity is checked against the stored one."""
    from realtime.facemodel import load_face_model
    from realtime.iris import measure_iris_diameters, measurement_version
    from realtime.synthetic import SyntheticGenerator

    version = measurement_version()

    def current(path: Path) -> bool:
        with np.load(path) as z:
            return "iris_edge_version" in z.files and str(z["iris_edge_version"]) == version

    chunks = sorted(p for p in data.glob("s*_c*.npz") if not p.name.endswith(".tmp.npz"))
    seeds = sorted({int(p.name[1:].split("_c")[0]) for p in chunks})
    model = load_face_model()
    t0 = time.perf_counter()
    for seed in seeds:
        mine = {int(p.stem.split("_c")[1]): p for p in chunks if p.name.startswith(f"s{seed}_c")}
        todo = [c for c, p in mine.items() if not current(p)]
        if not todo:
            continue
        with SyntheticGenerator(model, 512, 512, seed=seed) as gen:
            for c in range(max(todo) + 1):
                if c not in todo:
                    gen.skip(CHUNK)
                    continue
                with np.load(mine[c]) as z:
                    rec = {k: z[k] for k in z.files}
                edges = np.full((len(rec["lm"]), 2), np.nan, np.float32)
                for i in range(len(rec["lm"])):
                    s = gen.sample()
                    if not np.allclose(s.identity, rec["identity"][i], atol=1e-5):
                        raise SystemExit(f"train_landmark_prior: {mine[c].name} was rendered by another generator "
                                         "version (sample stream differs); regenerate it")
                    if rec["found"][i]:
                        edges[i] = measure_iris_diameters(s.image, rec["lm"][i])
                rec["iris_edge"] = edges
                rec["iris_edge_version"] = np.array(version)
                tmp = mine[c].with_suffix(".tmp.npz")
                np.savez(tmp, **rec)
                tmp.replace(mine[c])
                log.info("iris edges: chunk %d of seed %d (%.0f s)", c, seed, time.perf_counter() - t0)


def load_chunks(data: Path) -> dict[str, np.ndarray]:
    """All chunks of a cache, renders without a face dropped. Where a chunk has image iris measurements
    (``iris_edge``), each measured eye's MediaPipe ring is rescaled to them, as the fitter does at run time
    (``FaceFitter._observe``), so that the regressor learns from the iris size the application will see."""
    from realtime.fitting import FitOptions
    from realtime.iris import rescale_iris_rings

    ring_per_limbus = FitOptions().ring_per_limbus
    files = sorted(p for p in data.glob("s*_c*.npz") if not p.name.endswith(".tmp.npz"))
    if not files:
        raise SystemExit(f"train_landmark_prior: no data chunks in {data}")
    parts: dict[str, list[np.ndarray]] = {}
    measured = 0
    for f in files:
        with np.load(f) as z:
            chunk = {k: z[k] for k in z.files}
        edges = chunk.pop("iris_edge", None)
        chunk.pop("iris_edge_version", None)
        if edges is not None:
            chunk["lm"] = np.stack([rescale_iris_rings(lm, e, ring_per_limbus)
                                    for lm, e in zip(chunk["lm"], edges, strict=True)]).astype(np.float32)
            measured += int(np.isfinite(edges).sum())
        for k, v in chunk.items():
            parts.setdefault(k, []).append(v)
    d = {k: np.concatenate(v) for k, v in parts.items()}
    keep = d["found"].astype(bool)
    log.info("%d chunks, %d samples, %d with a face, %d eyes with an image iris measurement", len(files),
             keep.size, int(keep.sum()), measured)
    return {k: v[keep] for k, v in d.items()}


def build_template(landmarks: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Generalised Procrustes mean of the 468 surface points (centred, in the landmarks' units)."""
    from realtime.landmark_prior import N_SURFACE, align_to_template

    t = landmarks[0, :N_SURFACE].astype(np.float64)
    t = t - t.mean(axis=0)
    for _ in range(iterations):
        aligned, _, _ = align_to_template(landmarks, t)
        t = aligned[:, :N_SURFACE].mean(axis=0)
        t -= t.mean(axis=0)
    return t


def mirror_permutation(d: dict[str, np.ndarray]) -> np.ndarray:
    """(478,) MediaPipe index of each landmark's mirror image, from MediaPipe's own mean frontal layout.

    The mean of the tracked points over near-frontal renders (random identities average out to the model's
    symmetric mean face) is reflected about its centroid's vertical axis and matched one-to-one to itself
    (Hungarian assignment); iris points are matched among themselves.
    """
    from scipy.optimize import linear_sum_assignment

    from realtime.results import Pose

    angles = np.array([Pose(r.astype(np.float64), t.astype(np.float64)).euler_deg()
                       for r, t in zip(d["rotation"], d["translation"], strict=True)])
    for limit in (8.0, 15.0, 30.0):   # small data sets (tests) have few near-frontal renders
        frontal = np.flatnonzero((np.abs(angles) < limit).all(axis=1))
        if frontal.size >= 20:
            break
    pts = d["lm"][frontal, :, :2].astype(np.float64)
    pts -= pts[:, :468].mean(axis=1, keepdims=True)
    pts /= np.linalg.norm(pts[:, 33] - pts[:, 263], axis=1)[:, None, None]
    mean = pts.mean(axis=0)
    reflected = mean * np.array([-1.0, 1.0])
    out = np.zeros(478, np.int64)
    for ids in (np.arange(468), np.arange(468, 478)):
        cost = np.linalg.norm(reflected[ids][:, None] - mean[ids][None], axis=2)
        rows, cols = linear_sum_assignment(cost)
        out[ids[rows]] = ids[cols]
    log.info("mirror map from %d frontal renders: %.1f %% of landmarks pair up both ways", frontal.size,
             100.0 * float((out[out] == np.arange(478)).mean()))
    return out


def mirrored(landmarks: np.ndarray, widths: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Landmarks of the horizontally flipped images (x -> width - x), re-indexed to MediaPipe's order."""
    out = landmarks.copy()
    out[:, :, 0] = widths[:, None] - out[:, :, 0]
    return out[:, perm]


ONE_SIDED = (("eyeBlink_L", "eyeBlink_R"), ("eyeBlink_R", "eyeBlink_L"), ("mouthSmile_L", "mouthSmile_R"),
             ("mouthSmile_R", "mouthSmile_L"))


def one_sided_rate(pred: np.ndarray, true: np.ndarray, names: list[str]) -> tuple[float, int]:
    """Share of one-sided cases (active ≥ 0.6, mirror 0) read with active − mirror ≥ 0.3 (issue 3's test)."""
    hits: list[bool] = []
    for act, mir in ONE_SIDED:
        a, b = names.index(act), names.index(mir)
        sel = (true[:, a] >= 0.6) & (true[:, b] == 0.0)
        hits += list(pred[sel, a] - pred[sel, b] >= 0.3)
    return (100.0 * float(np.mean(hits)) if hits else float("nan")), len(hits)


def expression_motion(pred: np.ndarray, true: np.ndarray, basis: np.ndarray) -> tuple[float, float]:
    """Mean displacement error on truly moving (> 1 mm) face-area vertices; zero-expression baseline."""
    err, base = [], []
    for p, t in zip(pred, true, strict=True):
        td = np.tensordot(t, basis, axes=1)
        pd = np.tensordot(p.astype(np.float32), basis, axes=1)
        moving = np.linalg.norm(td, axis=1) > 1.0
        if moving.any():
            err.append(float(np.linalg.norm(pd[moving] - td[moving], axis=1).mean()))
            base.append(float(np.linalg.norm(td[moving], axis=1).mean()))
    return float(np.mean(err)), float(np.mean(base))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="render cache (default: user cache dir)")
    ap.add_argument("--count", type=int, default=20000, help="renders to have per --seed stream")
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--one-sided", action="store_true",
                    help="render the one-sided stream (4 in 5 renders a one-sided blink or smile, "
                         "one_sided_expression) instead of the generator's own expressions")
    ap.add_argument("--bilateral", action="store_true",
                    help="with --one-sided: both sides of the blink or smile at the same weight")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--holdout", type=int, default=1000)
    ap.add_argument("--asymmetry-weight", type=float, default=20.0,
                    help="loss weight of the left-right differences of paired blendshapes (the clinical signal)")
    ap.add_argument("--identity-data", type=Path, nargs="*", default=[],
                    help="more render caches for the identity regression only (identity does not depend on "
                         "the expression sampling, so older caches still help)")
    ap.add_argument("--identity-ridge", type=float, default=1.0)
    ap.add_argument("--no-mirror", action="store_true", help="no mirrored copies of the training renders")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from realtime.correspondence import topology_hash
    from realtime.facemodel import load_face_model
    from realtime.landmark_prior import LandmarkPrior, default_path, features
    from realtime.paths import cache_dir

    data = args.data or cache_dir() / "training" / "landmark_prior"
    generate(data, args.count, args.seed, args.one_sided, args.bilateral)
    if args.generate_only:
        return 0
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_face_model()
    d = load_chunks(data)
    n = len(d["lm"])
    perm = np.random.default_rng(0).permutation(n)
    test, train = perm[:args.holdout], perm[args.holdout:]
    template = build_template(d["lm"][train[:3000]])
    x_all = features(d["lm"], template)
    mean = x_all[train].mean(axis=0)
    scale = 1.0 / (x_all[train].std(axis=0) + 1e-6)
    xs = ((x_all - mean) * scale).astype(np.float32)
    y_exp = d["expression"].astype(np.float32)
    y_id = d["identity"].astype(np.float64)
    fa = model.face_area_vertices
    basis = model.expression_basis_mm[:, :fa].astype(np.float32)
    flat = basis.reshape(model.n_expressions, -1).astype(np.float64)
    gram = torch.tensor(flat @ flat.T / (flat.shape[1] / 3), dtype=torch.float32)

    # Identity: ridge regression (closed form), on the training split plus any extra caches.
    a = xs[train].astype(np.float64)
    y_fit = y_id[train]
    for extra in args.identity_data:
        e = load_chunks(extra)
        a = np.concatenate([a, ((features(e["lm"], template) - mean) * scale).astype(np.float64)])
        y_fit = np.concatenate([y_fit, e["identity"].astype(np.float64)])
    id_b = y_fit.mean(axis=0)
    id_w = np.linalg.solve(a.T @ a + args.identity_ridge * np.eye(a.shape[1]), a.T @ (y_fit - id_b))
    log.info("identity ridge on %d renders", len(y_fit))
    del a
    id_pred = xs[test].astype(np.float64) @ id_w + id_b

    # Expression: MLP trained on the per-vertex displacement error.
    hidden = args.hidden
    net = torch.nn.Sequential(
        torch.nn.Linear(xs.shape[1], hidden), torch.nn.GELU(approximate="tanh"), torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden, hidden), torch.nn.GELU(approximate="tanh"),
        torch.nn.Linear(hidden, model.n_expressions))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    batch = 256
    x_train, y_train = xs[train], y_exp[train]
    if not args.no_mirror:
        # Mirrored copies teach both sides the same response: a right-side palsy reads like a left one.
        perm_lm = mirror_permutation(d)
        flipped = mirrored(d["lm"][train], d["intr"][train, 4], perm_lm)
        x_flip = ((features(flipped, template) - mean) * scale).astype(np.float32)
        x_train = np.concatenate([x_train, x_flip])
        y_train = np.concatenate([y_train, y_train[:, model.expression_mirror]])
    mirror = model.expression_mirror
    pair_a = np.array([i for i in range(model.n_expressions) if mirror[i] > i])
    pair_b = mirror[pair_a]
    xt, yt = torch.tensor(x_train), torch.tensor(y_train)
    steps = args.epochs * ((len(x_train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)

    xv = torch.tensor(xs[test])

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(net(x)) * 1.1 - 0.05

    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), batch):
            b = order[i:i + batch]
            delta = predict(xt[b]) - yt[b]
            asym = delta[:, pair_a] - delta[:, pair_b]
            loss = (torch.einsum("bi,ij,bj->b", delta, gram, delta).mean()
                    + args.asymmetry_weight * (asym**2).sum(dim=1).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            net.eval()
            with torch.no_grad():
                pv = np.clip(predict(xv).numpy(), 0.0, 1.0)
            err, base = expression_motion(pv[:300], y_exp[test[:300]], basis)
            log.info("epoch %d/%d (%.0f s): held-out expression motion %.2f mm (zero expression %.2f)",
                     epoch + 1, args.epochs, time.perf_counter() - t0, err, base)
    net.eval()
    with torch.no_grad():
        exp_pred = np.clip(predict(xv).numpy(), 0.0, 1.0)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    layers = tuple((m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears)
    prior = LandmarkPrior(
        template=template, feature_mean=mean.astype(np.float32), feature_scale=scale.astype(np.float32),
        layers=layers, identity_map=(id_w.astype(np.float32), id_b.astype(np.float32)),
        n_expressions=model.n_expressions, n_identity=model.n_identity,
        expression_sd=np.maximum((exp_pred - y_exp[test]).std(axis=0), 0.02),
        identity_sd=np.maximum((id_pred - y_id[test]).std(axis=0), 0.05),
        model_name=model.name, topology=topology_hash(model.triangles))
    out = args.out or default_path(model.name)
    prior.save(out)
    # What the shipped file computes (float16 weights), on the held-out renders.
    exp_np, id_np = prior.predict(d["lm"][test])
    err, base = expression_motion(exp_np, y_exp[test], basis)
    rate, cases = one_sided_rate(exp_np, y_exp[test], list(model.expression_names))
    summary = {"samples": n, "held_out": int(test.size), "expression_motion_mm": err,
               "one_sided_percent": rate, "one_sided_cases": cases,
               "zero_expression_mm": base, "identity_coeff_rmse": float(np.sqrt(((id_np - y_id[test]) ** 2).mean())),
               "mean_face_coeff_rmse": float(np.sqrt((y_id[test] ** 2).mean())), "out": str(out),
               "bytes": out.stat().st_size}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in summary.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
