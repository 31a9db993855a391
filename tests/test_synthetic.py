"""Synthetic generator: seeded parameters, overrides, pose convention, real MediaPipe on real EGL renders."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.correspondence import load_correspondence
from realtime.facemodel import MorphableModel
from realtime.results import Pose
from realtime.synthetic import SyntheticGenerator, rotation_from_euler, true_landmarks

SIZE = 384


@pytest.fixture(scope="module")
def gen(face_model: MorphableModel) -> Iterator[SyntheticGenerator]:
    with SyntheticGenerator(face_model, SIZE, SIZE, seed=3) as g:
        yield g


@pytest.fixture(scope="module")
def tracker() -> Iterator[object]:
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as fm:
        yield fm


def _landmarks(tracker: object, image: np.ndarray) -> np.ndarray | None:
    res = tracker.process(image)  # type: ignore[attr-defined]
    if not res.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    return np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark])


@pytest.mark.parametrize("angles", [(0, 0, 0), (35, -10, 5), (-60, 20, -12), (10, 30, 40)])
def test_pose_from_euler_round_trips(angles: tuple[float, float, float]) -> None:
    r = rotation_from_euler(*angles)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    got = Pose(rotation=r, translation_mm=np.zeros(3)).euler_deg()
    np.testing.assert_allclose(got, angles, atol=1e-9)
    # Positive yaw turns the face (model +z) toward the camera's right (+x).
    if angles[0] > 0:
        assert (r @ [0, 0, 1.0])[0] > 0


def test_sample_is_seeded_and_honours_overrides(gen: SyntheticGenerator, face_model: MorphableModel) -> None:
    a = gen.sample(seed=11)
    b = gen.sample(seed=11)
    c = gen.sample(seed=12)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.identity, b.identity)
    assert not np.array_equal(a.identity, c.identity)
    assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8
    ident = np.zeros(face_model.n_identity, np.float32)
    ident[0] = 1.5
    s = gen.sample(identity=ident, expression={"mouthSmile_L": 0.8}, yaw_deg=20.0, pitch_deg=0.0,
                   roll_deg=0.0, distance_mm=500.0, seed=4)
    assert s.expression[face_model.expression_index("mouthSmile_L")] == pytest.approx(0.8)
    assert s.expression.sum() == pytest.approx(0.8)
    assert s.pose.euler_deg()[0] == pytest.approx(20.0)
    expected = face_model.shape(ident, s.expression) @ s.pose.rotation.T + s.pose.translation_mm
    np.testing.assert_allclose(s.vertices_mm, expected, atol=1e-3)
    assert s.albedo.shape == (face_model.n_vertices, 3) and s.sh_coeffs.shape == (9, 3)
    with pytest.raises(TypeError, match="unknown overrides"):
        gen.sample(yaw=3)
    with pytest.raises(TypeError, match="either pose"):
        gen.sample(pose=s.pose, yaw_deg=3.0)
    same = gen.sample(pose=s.pose, identity=ident, expression=s.expression, seed=4)
    np.testing.assert_allclose(same.vertices_mm, s.vertices_mm, atol=1e-4)


def test_expression_sampling_one_sided(face_model: MorphableModel) -> None:
    g = SyntheticGenerator.__new__(SyntheticGenerator)  # parameter sampling only, no renderer needed
    from realtime.synthetic import SyntheticRanges

    g.model, g.ranges = face_model, SyntheticRanges(one_sided_fraction=1.0, neutral_fraction=0.0)
    g._setup_sampling()
    rng = np.random.default_rng(0)
    mirror = face_model.expression_mirror
    idx = face_model.expression_index
    gaze_seen = 0
    for _ in range(200):
        w = g.random_expression(rng)
        assert w.min() >= 0 and w.max() <= 1
        strong = [i for i in g._sided if w[i] >= 0.6 and w[mirror[i]] == 0.0]
        assert strong, "every sample has a one-sided blendshape >= 0.6 with its mirror at 0"
        # Conjugate gaze: both eyes look the same way, never up and down (or left and right) at once.
        assert w[idx("eyeLookDown_L")] == w[idx("eyeLookDown_R")]
        assert w[idx("eyeLookIn_L")] == w[idx("eyeLookOut_R")]
        assert w[idx("eyeLookDown_L")] == 0.0 or w[idx("eyeLookUp_L")] == 0.0
        assert w[idx("eyeLookIn_L")] == 0.0 or w[idx("eyeLookIn_R")] == 0.0
        gaze_seen += int(w[idx("eyeLookDown_L")] + w[idx("eyeLookUp_L")] + w[idx("eyeLookIn_L")]
                         + w[idx("eyeLookIn_R")] > 0)
    assert gaze_seen >= 10


def test_render_matches_ground_truth_geometry(gen: SyntheticGenerator, face_model: MorphableModel) -> None:
    """The face is drawn where its vertices project, and the eyeball proxies show a dark iris."""
    s = gen.sample(yaw_deg=15.0, expression=np.zeros(face_model.n_expressions), seed=21)
    scene = gen.scene_camera_vertices(s)
    tri, _ = gen.renderer.render_ids(scene, gen.layout.triangles, s.intrinsics)
    parts = gen.layout.part_of_triangles(tri)
    nose = s.intrinsics.project(s.vertices_mm[face_model.landmarks68[30]])
    u0, v0 = np.rint(nose).astype(int)
    assert parts[v0, u0] == 0
    for e, part in ((0, 3), (1, 4)):
        centre = s.eye_centres_mm[e] + s.pose.rotation @ [0, 0, gen.layout.rig.iris_depth_mm]
        u, v = np.rint(s.intrinsics.project(centre)).astype(int)
        assert parts[v, u] == part
        assert s.image[v, u].astype(int).sum() < 150  # pupil
    # An open mouth shows the dark cavity proxy, not the background.
    bg = np.full((SIZE, SIZE, 3), 255, np.uint8)
    o = gen.sample(yaw_deg=0.0, pitch_deg=0.0, expression={"jawOpen": 1.0}, background=bg, clean=True, seed=5)
    lips = face_model.mean_mm[face_model.landmarks68[[62, 66]]] + face_model.expression_basis_mm[
        face_model.expression_index("jawOpen"), face_model.landmarks68[[62, 66]]]
    mouth = (o.pose.rotation @ lips.mean(0) + o.pose.translation_mm)
    u, v = np.rint(o.intrinsics.project(mouth)).astype(int)
    assert o.image[v, u].astype(int).sum() < 250  # the white background would give 765


def test_mediapipe_tracks_renders_and_agrees_with_the_table(gen: SyntheticGenerator, tracker: object,
                                                            face_model: MorphableModel) -> None:
    corr = load_correspondence(face_model)
    usable = corr.weights > 0.3
    for yaw in (0.0, 30.0, -30.0):
        s = gen.sample(yaw_deg=yaw, seed=int(100 + yaw))
        lm = _landmarks(tracker, s.image)
        assert lm is not None, f"MediaPipe found no face at yaw {yaw}"
        proj = s.intrinsics.project(corr.points(s.vertices_mm))
        err = np.linalg.norm(proj[:468] - lm[:468], axis=1)[usable[:468]]
        # Scale: ~55 px between the pupils at this size; MediaPipe itself jitters by 1-2 px.
        assert np.median(err) < 4.0, f"yaw {yaw}: median {np.median(err):.1f} px"
        iris = s.intrinsics.project(corr.iris_points(s.eye_centres_mm, s.pose.rotation))
        assert np.linalg.norm(iris[[0, 5]] - lm[[468, 473]], axis=1).max() < 4.0
        truth = s.intrinsics.project(true_landmarks(s, corr))
        np.testing.assert_allclose(truth[:468], proj[:468], atol=1e-3)
        assert np.linalg.norm(truth[[468, 473]] - lm[[468, 473]], axis=1).max() < 4.0



def test_make_synthetic_writes_a_consistent_set(tmp_path: Path, face_model: MorphableModel) -> None:
    tool = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic.py"
    cmd = [sys.executable, str(tool), "--count", "3", "--size", "192", "--seed", "5",
           "--out", str(tmp_path / "s")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    p = np.load(tmp_path / "s" / "params.npz")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["count"] == 3 and meta["model"] == "ict-facekit"
    assert p["landmarks478_px"].shape == (3, 478, 2) and p["identity"].shape == (3, face_model.n_identity)
    for i in range(3):
        img = cv2.imread(str(tmp_path / "s" / "images" / f"{i:06d}.jpg"))
        assert img.shape == (192, 192, 3)
        # The stored parameters reproduce the stored landmarks.
        v = face_model.shape(p["identity"][i], p["expression"][i]) @ p["rotation"][i].T
        lm = v[face_model.landmarks68] + p["translation_mm"][i]
        fx, fy, cx, cy = p["intrinsics"][i][:4]
        uv = np.stack([fx * lm[:, 0] / lm[:, 2] + cx, fy * lm[:, 1] / lm[:, 2] + cy], 1)
        np.testing.assert_allclose(uv, p["landmarks68_px"][i], atol=0.05)


def test_sequence_keeps_the_person_and_turns_the_head(gen: SyntheticGenerator, tracker: object,
                                                      face_model: MorphableModel) -> None:
    frames = list(gen.sequence(12, yaw_amplitude_deg=40.0, period_frames=12, expression_every=4, seed=9))
    assert len(frames) == 12
    for f in frames[1:]:
        np.testing.assert_array_equal(f.identity, frames[0].identity)
        np.testing.assert_array_equal(f.albedo, frames[0].albedo)
        np.testing.assert_array_equal(f.sh_coeffs, frames[0].sh_coeffs)
    yaws = np.array([f.pose.euler_deg()[0] for f in frames])
    np.testing.assert_allclose(yaws, 40.0 * np.sin(2 * np.pi * np.arange(12) / 12), atol=1e-6)
    # Expressions change smoothly: every step is a quarter of a key-to-key change at most.
    steps = np.abs(np.diff(np.stack([f.expression for f in frames]), axis=0)).max(axis=1)
    assert steps.max() <= 0.26
    # The head stays in place: the face centre moves only with the rotation (no random jumps).
    centres = np.stack([f.pose.translation_mm + f.pose.rotation @ [0.0, 10.0, 60.0] for f in frames])
    assert np.ptp(centres, axis=0).max() < 1e-6
    assert _landmarks(tracker, frames[3].image) is not None  # 40° yaw, still tracked
