"""The Deep3DFaceRecon_pytorch importer on a randomly initialised checkpoint in the official key layout and a
small BFM-format .mat built from the ICT model (so the expected transfer is known exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _fake_bfm(face_model, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """BFM-format file: a subsample of the ICT face in 0.1 m units, identity modes = ICT modes 0-79,
    expression modes 0-52 = ICT blendshapes (+11 random mixtures). Returns (vertex ids, keypoints)."""
    from scipy.io import savemat

    region = face_model.narrow_face_area_vertices
    ids = np.union1d(np.arange(0, region, 3), face_model.landmarks68)
    keypoints = np.searchsorted(ids, face_model.landmarks68)
    rng = np.random.default_rng(0)
    mean = face_model.mean_mm[ids] / 100.0 + np.array([0.3, -0.2, 0.5])  # the importer must recentre
    idb = face_model.identity_basis_mm[:80, ids] / 100.0
    exb = face_model.expression_basis_mm[:, ids] / 100.0
    mix = rng.normal(size=(11, exb.shape[0])) @ exb.reshape(exb.shape[0], -1) * 0.1
    exb = np.concatenate([exb.reshape(exb.shape[0], -1), mix]).reshape(64, len(ids), 3)
    n = len(ids)
    savemat(
        path,
        {
            "meanshape": mean.reshape(1, -1),
            "idBase": idb.reshape(80, -1).T,
            "exBase": exb.reshape(64, -1).T,
            "meantex": np.full((1, 3 * n), 150.0),
            "texBase": rng.normal(size=(3 * n, 80)),
            "keypoints": (keypoints + 1).reshape(1, -1).astype(np.float64),
            "tri": np.array([[1, 2, 3]], np.float64),
            "point_buf": np.ones((n, 8)),
        },
    )
    return ids, keypoints


def _official_checkpoint(path: Path) -> None:
    from realtime.training.deep3d_import import HEAD_SIZES
    from realtime.training.nets import ResNet50Backbone

    torch.manual_seed(0)
    backbone = ResNet50Backbone(64)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    for i, n in enumerate(HEAD_SIZES):
        state[f"final_layers.{i}.weight"] = torch.randn(n, 2048, 1, 1) * 1e-3
        state[f"final_layers.{i}.bias"] = torch.randn(n) * 0.05
    torch.save({"net_recon": state, "epoch": 20}, path)


@pytest.mark.slow
def test_import_random_official_checkpoint(tmp_path: Path, face_model, images_dir: Path) -> None:
    import cv2

    from realtime.camera import Intrinsics
    from realtime.engines.coeffs import Crop
    from realtime.engines.regressors import Regressor
    from realtime.training.deep3d_import import D3D_FOCAL, euler_to_matrix, import_deep3d

    _ids, keypoints = _fake_bfm(face_model, tmp_path / "BFM_model_front.mat")
    _official_checkpoint(tmp_path / "epoch_20.pth")
    out, tr = import_deep3d(
        tmp_path / "epoch_20.pth", tmp_path / "BFM_model_front.mat", tmp_path / "deep3d.onnx", face_model
    )
    # The fake BFM is the ICT model itself: the transfer must be (near) the identity map.
    assert tr.fit_rms_mm < 3.0  # nearest-vertex distance on a mesh subsampled every 3rd vertex
    assert np.diag(tr.m_id[:80, :80]).mean() > 0.9 and np.diag(tr.m_exp[:53, :53]).mean() > 0.8
    rng = np.random.default_rng(1)
    region = face_model.narrow_face_area_vertices
    for basis, m, k in (
        (face_model.identity_basis_mm, tr.m_id, 80),
        (face_model.expression_basis_mm, tr.m_exp, 53),
    ):
        coef = rng.normal(size=m.shape[1])
        coef[k:] = 0.0
        want = np.tensordot(coef[:k], basis[:k, :region], 1)
        got = np.tensordot(m @ coef, basis[: m.shape[0], :region], 1)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.15
    assert abs(tr.scale - 0.01) < 1e-4

    # Run the ONNX on a real photo; compare with the official convention computed here independently.
    image = cv2.cvtColor(cv2.imread(str(images_dir / "einstein.jpg")), cv2.COLOR_BGR2RGB)
    crop_img = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    x = crop_img.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    reg = Regressor("deep3d", path=out, prefer="cpu")
    coeffs = reg.runner.run(x)[0]
    intr = Intrinsics(D3D_FOCAL, D3D_FOCAL, 111.5, 111.5, 224, 224)
    from realtime.engines.regressors import decode

    est = decode(coeffs, reg.layout, intr, Crop(111.5, 111.5, 224.0, 224), "deep3d")
    # Reference: the raw 257 outputs of the checkpoint through Deep3D's own camera model.
    from realtime.training.deep3d_import import load_bfm, load_official_checkpoint
    from realtime.training.nets import Deep3DNet

    backbone_state, head = load_official_checkpoint(tmp_path / "epoch_20.pth")
    net = Deep3DNet(width=64, input_size=224, normalize=False)
    net.backbone.load_state_dict(backbone_state, strict=False)
    with torch.no_grad():
        raw = head(net.eval().backbone(torch.from_numpy(x)))[0].double().numpy()
    bfm = load_bfm(tmp_path / "BFM_model_front.mat")
    shape = bfm.mean + np.tensordot(raw[:80], bfm.id_basis, 1) + np.tensordot(raw[80:144], bfm.exp_basis, 1)
    rot = euler_to_matrix(torch.from_numpy(raw[224:227])[None])[0].numpy()
    p = shape @ rot.T + raw[254:257]
    cam = np.stack([p[:, 0], -p[:, 1], 10.0 - p[:, 2]], 1)
    ref_lm = intr.project(cam[keypoints])
    ict = face_model.shape(est.identity, est.expression)[face_model.landmarks68]
    got_lm = intr.project(ict @ est.rotation.T + est.translation_mm)
    err = np.linalg.norm(got_lm - ref_lm, axis=1)
    assert np.median(err) < 2.0, err
    assert est.lighting_sh is not None
    assert np.allclose(est.lighting_sh[0], 0.8 + raw[227:254].reshape(3, 9)[:, 0], atol=1e-4)
    reg.close()


def test_import_rejects_foreign_checkpoint(tmp_path: Path, face_model) -> None:
    from realtime.errors import BadInputError
    from realtime.training.deep3d_import import import_deep3d

    torch.save({"net_recon": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(BadInputError, match="not a Deep3DFaceRecon_pytorch"):
        import_deep3d(tmp_path / "bad.pth", tmp_path / "none.mat", tmp_path / "o.onnx", face_model)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="cannot read checkpoint"):
        import_deep3d(tmp_path / "junk.pth", tmp_path / "none.mat", tmp_path / "o.onnx", face_model)
