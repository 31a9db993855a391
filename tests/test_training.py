"""Training code: the networks, the differentiable renderer (against the project's EGL renderer), the
losses, and ONNX export parity on real crops from the shared videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def synthetic_sample(face_model):
    from realtime.synthetic import SyntheticGenerator

    with SyntheticGenerator(face_model, 256, 256, seed=5) as gen:
        return gen.sample(seed=424242, yaw_deg=30.0, clean=True)


@pytest.fixture(scope="module")
def video_crops(videos_dir: Path) -> np.ndarray:
    """(6, 3, 64, 64) float32 crops of real faces: MediaPipe on frames of two shared videos."""
    import av

    from realtime.engines.coeffs import CropSpec, crop_from_points, cut_crop
    from realtime.landmarks import FaceMeshTracker

    crops = []
    with FaceMeshTracker(static=True) as tracker:
        for name in ("talking_720p.mp4", "wink_blink_gaze.mp4"):
            with av.open(str(videos_dir / name)) as c:
                for k, frame in enumerate(c.decode(video=0)):
                    if k % 40:
                        continue
                    img = frame.to_ndarray(format="rgb24")
                    tracks = tracker.track(img)
                    assert tracks, f"no face in {name} frame {k}"
                    crop = crop_from_points(tracks[0].landmarks_px[:468], CropSpec(64))
                    crops.append(cut_crop(img, crop).transpose(2, 0, 1).astype(np.float32) / 255.0)
                    if len(crops) % 3 == 0:
                        break
    return np.stack(crops)


def test_mobile_facernet_structure() -> None:
    from realtime.engines.coeffs import CoefficientLayout
    from realtime.training.nets import MobileFaceRNet, ResidualAttention, count_flops, count_parameters

    torch.manual_seed(0)
    net = MobileFaceRNet().eval()
    assert 2.0e6 < count_parameters(net) < 2.7e6
    assert sum(isinstance(m, ResidualAttention) for m in net.modules()) == 7
    dil = [
        m.dilation[0] for m in net.front.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] == 3
    ]
    assert dil.count(3) == 5  # one atrous conv per feature unit, five units
    assert 0.05 < count_flops(net, 64) < 0.2
    with torch.no_grad():
        out = net(torch.rand(2, 3, 64, 64))
    layout = CoefficientLayout()
    assert out.shape == (2, layout.size)
    e = out[:, layout.slices()["expression"]]
    assert float(e.min()) >= 0.0 and float(e.max()) <= 1.0


def test_rasterizer_matches_egl_render_ids(face_model, synthetic_sample) -> None:
    """Visible triangles of the torch rasterizer agree with the project's OpenGL renderer, pixel by pixel."""
    from realtime.camera import Intrinsics
    from realtime.render import OffscreenRenderer
    from realtime.training.diffrender import interpolate, rasterize

    s = synthetic_sample
    n = face_model.narrow_face_area_vertices
    tris = face_model.triangles[(face_model.triangles < n).all(axis=1)]
    v = s.vertices_mm[:n].astype(np.float32)
    uv = s.intrinsics.project(v)
    lo, hi = uv.min(0), uv.max(0)
    side = float(max(hi - lo)) * 1.2
    size = 96
    k = size / side
    c = (lo + hi) / 2
    intr = Intrinsics(
        s.intrinsics.fx * k,
        s.intrinsics.fy * k,
        (s.intrinsics.cx - c[0]) * k + (size - 1) / 2,
        (s.intrinsics.cy - c[1]) * k + (size - 1) / 2,
        size,
        size,
    )
    with OffscreenRenderer(size, size, samples=0) as r:
        ids_gl, _ = r.render_ids(v, tris.astype(np.int32), intr)
    pts = torch.from_numpy(intr.project(v)).float()[None]
    frags = rasterize(pts, torch.from_numpy(v[:, 2])[None], torch.from_numpy(tris.astype(np.int64)), size)
    ids_t = np.full((size, size), -1)
    ids_t[frags.py.numpy(), frags.px.numpy()] = frags.triangle.numpy()
    both = (ids_gl >= 0) & (ids_t >= 0)
    iou = both.sum() / ((ids_gl >= 0) | (ids_t >= 0)).sum()
    assert iou > 0.97, iou
    assert (ids_gl[both] == ids_t[both]).mean() > 0.9
    # Differentiable barycentric interpolation reproduces each pixel centre from the vertex positions.
    pts.requires_grad_(True)
    xy = interpolate(pts, pts, torch.from_numpy(tris.astype(np.int64)), frags)
    centres = torch.stack([frags.px, frags.py], -1).float()
    assert float((xy.detach() - centres).abs().max()) < 1e-3
    xy.sum().backward()
    assert pts.grad is not None and float(pts.grad.abs().sum()) > 0


def test_losses_behave(face_model) -> None:
    from realtime.engines.albedo import build_albedo_model
    from realtime.engines.coeffs import CoefficientLayout
    from realtime.training import losses as L
    from realtime.training.diffrender import Fragments
    from realtime.training.facelayer import FaceLayer

    gt = torch.rand(2, 68, 2)
    w = L.landmark_weights()
    assert float(L.landmark_loss(gt, gt, w)) == 0.0
    assert float(L.landmark_loss(gt + 0.1, gt, w)) == pytest.approx(0.02, rel=1e-4)
    assert float(w[:17].sum()) == 8.5 and float(w[17:].sum()) == 51.0
    frags = Fragments(
        batch=torch.zeros(50, dtype=torch.long),
        py=torch.arange(50),
        px=torch.arange(50),
        triangle=torch.zeros(50, dtype=torch.long),
        size=64,
    )
    a = torch.rand(50, 3)
    assert float(L.ssim_loss(a, a, frags, 1)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.ssim_loss(a, torch.rand(50, 3), frags, 1)) > 0.5
    assert float(L.photometric_loss(a, a + 0.1, frags, 1)) == pytest.approx(0.1 * 3**0.5, rel=1e-4)
    layer = FaceLayer(face_model, build_albedo_model(face_model), CoefficientLayout())
    mean = layer.mean.view(1, -1, 3) * 0.1
    noisy = mean + torch.randn_like(mean) * 0.3  # 3 mm noise (vertices in cm)
    assert float(L.smoothness_loss(layer.laplacian(noisy))) > 10 * float(
        L.smoothness_loss(layer.laplacian(mean))
    )
    assert float(L.skin_probability(torch.tensor([[0.8, 0.6, 0.5]]))) > 0.5
    assert float(L.skin_probability(torch.tensor([[0.1, 0.8, 0.2]]))) < 0.05


def test_albedo_model(face_model) -> None:
    from realtime.engines.albedo import build_albedo_model

    a = build_albedo_model(face_model)
    b = build_albedo_model(face_model)
    assert a.basis.shape == (10, face_model.n_vertices, 3)
    assert np.array_equal(a.basis, b.basis)
    lips = face_model.landmarks68[48:68]
    assert a.mean[lips, 1].mean() < a.mean[:, 1].mean() - 0.1  # lips are redder (less green) than skin
    c = a.colors(np.full(10, 3.0))
    assert c.min() >= 0 and c.max() <= 1


def test_labels_round_trip(face_model, synthetic_sample) -> None:
    """Training labels decode back to the sample's camera pose and landmarks."""
    from realtime.correspondence import load_correspondence
    from realtime.engines.coeffs import CropSpec, camera_pose_from_local, crop_from_points
    from realtime.training.data import make_record

    s = synthetic_sample
    corr = load_correspondence(face_model)
    crop = crop_from_points(s.intrinsics.project(corr.points(s.vertices_mm)[:468]), CropSpec(64))
    rec = make_record(
        s.image,
        s.intrinsics,
        s.pose,
        s.identity,
        s.expression,
        s.vertices_mm[face_model.landmarks68],
        crop,
        exact=True,
    )
    r, t = camera_pose_from_local(rec["rot6d"], rec["uvk"], s.intrinsics, crop)
    assert np.allclose(r, s.pose.rotation, atol=1e-5)
    assert np.allclose(t, s.pose.translation_mm, atol=1e-2)
    assert rec["image"].shape == (64, 64, 3)
    assert rec["lm68"].min() > 0.0 and rec["lm68"].max() < 1.0


@pytest.mark.parametrize("arch", ["mobile-facernet", "deep3d"])
def test_onnx_parity_on_real_crops(tmp_path: Path, video_crops: np.ndarray, arch: str) -> None:
    import cv2

    from realtime.engines.coeffs import CoefficientLayout, CropSpec
    from realtime.training.export import export_onnx, parity
    from realtime.training.nets import Deep3DNet, MobileFaceRNet

    torch.manual_seed(3)
    size = 64 if arch == "mobile-facernet" else 96
    net = MobileFaceRNet() if arch == "mobile-facernet" else Deep3DNet(input_size=96, width=32)
    for m in net.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    for p in net.fc.parameters():
        p.data.normal_(0, 0.05)
    crops = video_crops
    if size != crops.shape[-1]:
        crops = np.stack([cv2.resize(c.transpose(1, 2, 0), (size, size)).transpose(2, 0, 1) for c in crops])
    path = export_onnx(net, tmp_path / "m.onnx", arch, CoefficientLayout(), CropSpec(size))
    assert parity(net, path, crops) <= 1e-4


@pytest.mark.slow
def test_pseudo_labelled_frames(tmp_path: Path, face_model, videos_dir: Path) -> None:
    """Real video frames labelled by the fitter: the stored 68 landmarks are the fit's, inside the crop."""
    from realtime.training.data import ArrayDataset, build_pseudo_labelled

    n = build_pseudo_labelled(tmp_path, face_model, [videos_dir / "wink_blink_gaze.mp4"], store_size=64,
                              every=4, max_frames=16)
    assert n == 4
    d = ArrayDataset.load([tmp_path], 64).arrays
    assert (d["exact"] == 0).all()
    assert d["image"].shape == (4, 64, 64, 3)
    assert d["lm68"].min() > 0.02 and d["lm68"].max() < 0.98
    assert np.abs(d["euler"][:, 0]).max() < 30  # a frontal video


def test_profile_shards_have_large_yaw(tmp_path: Path, face_model) -> None:
    """build_synthetic(yaw_min_deg=...) renders only |yaw| in [min, max] (the profile-emphasis set)."""
    from realtime.training.data import ArrayDataset, build_synthetic

    n = build_synthetic(tmp_path, face_model, 4, seed=5, store_size=32, render_size=160, shard_size=4,
                        yaw_deg=75.0, yaw_min_deg=50.0)
    assert n == 8
    yaw = np.abs(ArrayDataset.load([tmp_path], 32).arrays["euler"][:, 0])
    assert yaw.min() >= 49.9 and yaw.max() <= 75.1


@pytest.mark.slow
def test_ridge_identity_head_recovers_a_planted_linear_identity(tmp_path: Path, face_model) -> None:
    """Identity coefficient 0 made a linear function of the network's pooled features: the ridge rows must
    predict it on held-out crops; unpredictable coefficients stay near the training mean."""
    from realtime.engines.coeffs import CoefficientLayout
    from realtime.training.data import ArrayDataset, build_synthetic
    from realtime.training.nets import MobileFaceRNet
    from realtime.training.ridge import pooled_features, ridge_identity_head

    build_synthetic(tmp_path, face_model, 80, seed=7, store_size=64, render_size=128, shard_size=80)
    data = ArrayDataset.load([tmp_path], 64)
    torch.manual_seed(0)
    net = MobileFaceRNet(input_size=64)
    # Batch-norm statistics of these crops (an untrained network's default statistics give constant features).
    net.train()
    images = torch.from_numpy(data.arrays["image"]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        for _ in range(10):
            net(images[:100])
    feats = pooled_features(net, data)
    # A direction the features span well (their 3 leading principal components, random mix): learnable from
    # a few hundred crops; a random direction in all 1280 dimensions would need thousands.
    zf = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    _, _, vt = np.linalg.svd(zf, full_matrices=False)
    z = zf @ (vt[:3].T @ np.random.default_rng(1).normal(size=3))
    data.arrays["identity"][:, 0] = (z / z.std()).astype(np.float32)
    idx = np.arange(len(data))
    trn, val = data.subset(idx[:120]), data.subset(idx[120:])
    rep = ridge_identity_head(net, CoefficientLayout(), trn, val)
    with torch.no_grad():
        pred = net(images[120:])[:, :100].numpy()
    y = val.arrays["identity"]
    r2 = 1.0 - ((pred[:, 0] - y[:, 0]) ** 2).mean() / y[:, 0].var()
    assert r2 > 0.8
    rest = np.sqrt(((pred[:, 1:] - y[:, 1:]) ** 2).mean())
    assert rest < 1.15 * np.sqrt(((y[:, 1:] - trn.arrays["identity"][:, 1:].mean(0)) ** 2).mean())
    assert rep.val_rms_after < rep.val_rms_mean
