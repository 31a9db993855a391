"""Clinical regions, metrics and reports on parameter sequences generated from the real ICT model.

The synthetic patient is the model itself driven through the shipped ``palsy-basic`` protocol, with the
subject's right-side blendshapes (``*_R``) scaled down; its exact parameters are the ground truth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realtime.clinical.metrics import (
    METRICS,
    MetricEvaluator,
    SessionSeries,
    analyse_session,
    detect_eye_closures,
)
from realtime.clinical.patient import PatientSpec, patient_series, protocol_timeline
from realtime.clinical.regions import build_regions
from realtime.clinical.sessions import series_from_table
from realtime.errors import BadInputError


@pytest.fixture(scope="module")
def evaluator(face_model) -> MetricEvaluator:
    return MetricEvaluator(face_model)


@pytest.fixture(scope="module")
def timeline():
    from realtime.session.protocol import load_protocol

    return protocol_timeline(load_protocol("palsy-basic"))


def series_table(model, s: SessionSeries) -> pa.Table:
    """A per-frame table with the contract's columns (fit columns null where the frame is invalid)."""
    n = s.n_frames
    ident = None if s.identity is None else np.broadcast_to(s.identity, (n, model.n_identity))
    cols: dict[str, object] = {
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "timestamp_s": pa.array(s.timestamp_s), "session_time_s": pa.array(s.timestamp_s),
        "face_found": pa.array(s.valid), "quality_ok": pa.array(s.valid),
        "exercise": pa.array([e or None for e in s.exercise], pa.string()),
        "repetition": pa.array(s.repetition.astype(np.int16)),
        "phase": pa.array([p or None for p in s.phase], pa.string()),
        "identity_locked": pa.array(s.valid),
    }
    if ident is not None:
        cols["identity"] = pa.array([row.astype(np.float32).tolist() if ok else None
                                     for row, ok in zip(ident, s.valid, strict=True)],
                                    pa.list_(pa.float32(), model.n_identity))
    for i, name in enumerate(model.expression_names):
        cols[f"expr_{name}"] = pa.array(np.where(s.valid, s.expression[:, i], np.nan).astype(np.float32),
                                        from_pandas=True)
    return pa.table(cols)


def test_regions_are_mirror_pairs_from_the_landmarks(face_model):
    r = build_regions(face_model)
    lm = face_model.landmarks68
    v = face_model.mean_mm
    # The left side equals the iBUG left-side landmarks (computed via the symmetry map, not typed).
    assert r.commissure.left[0] == lm[54] and r.commissure.right[0] == lm[48]
    assert list(r.brow.left) == list(lm[[26, 25, 24, 23, 22]])
    for region in (r.brow, r.upper_lid, r.lower_lid, r.commissure, r.upper_lip, r.lower_lip, r.nasolabial,
                   r.cheek):
        assert len(region.left) == len(region.right) > 0
        assert np.all(v[region.right, 0] < 0) and np.all(v[region.left, 0] > 0), region.name
        mirrored = v[region.right] * np.array([-1.0, 1.0, 1.0])
        assert np.abs(v[region.left] - mirrored).max() < 1.0, region.name
    assert len(r.nasolabial.right) >= 5 and len(r.cheek.right) >= 10


def test_mirrored_expressions_swap_sides(face_model, evaluator):
    rng = np.random.default_rng(3)
    shape = (40, face_model.n_expressions)
    expr = rng.uniform(0.0, 0.7, shape) * (rng.random(shape) < 0.3)
    mirrored = expr[:, face_model.expression_mirror]
    rest = np.zeros(face_model.n_expressions)
    a = evaluator.evaluate(None, expr, rest)
    b = evaluator.evaluate(None, mirrored, rest)
    for name in METRICS:
        scale = max(1.0, float(np.abs(a[name]).max()))
        err = np.abs(a[name][:, 0] - b[name][:, 1]).max() / scale
        assert err < 0.08, (name, err)
        # ...and the per-side values do differ for these asymmetric expressions.
    assert np.abs(a["commissure_excursion_mm"][:, 0] - a["commissure_excursion_mm"][:, 1]).max() > 2.0


def test_single_blendshapes_move_their_own_region(face_model, evaluator):
    names = face_model.expression_names
    rest = np.zeros(face_model.n_expressions)

    def one(name: str) -> dict[str, np.ndarray]:
        e = np.zeros((1, face_model.n_expressions))
        e[0, names.index(name)] = 1.0
        return {k: v[0] for k, v in evaluator.evaluate(None, e, rest).items()}

    brow = one("browOuterUp_R")
    assert brow["brow_elevation_mm"][1] > 3.0 and abs(brow["brow_elevation_mm"][0]) < 0.3
    assert brow["commissure_excursion_mm"].max() < 0.2
    blink = one("eyeBlink_L")
    assert blink["eye_closure"][0] == pytest.approx(1.0) and blink["eye_closure"][1] < 0.05
    smile = one("mouthSmile_L")
    assert smile["commissure_excursion_mm"][0] > 8.0 and smile["commissure_excursion_mm"][1] < 2.0
    assert smile["smile_angle_change_deg"][0] > 5.0
    puff = one("cheekPuff_R")
    assert puff["cheek_puff_mm"][1] > 5.0 and abs(puff["cheek_puff_mm"][0]) < 0.5
    lower = one("mouthLowerDown_L")
    assert lower["lower_lip_depression_mm"][0] > 2.0
    upper = one("mouthUpperUp_R")
    assert upper["upper_lip_elevation_mm"][1] > 3.0


@pytest.mark.parametrize(("spec", "side"), [
    (PatientSpec(right_gain=0.3), "right"),
    (PatientSpec(left_gain=0.5, noise=0.03), "left"),
    (PatientSpec(noise=0.02), None),
])
def test_synthetic_patient_affected_side(face_model, evaluator, timeline, spec, side):
    a = analyse_session(patient_series(face_model, timeline, spec), face_model, evaluator)
    assert a.affected.side == side, a.affected.statement
    if side is not None:
        assert a.affected.confidence == "high"
        assert side in a.affected.statement.lower()
    paired = [r for r in a.regions if r.region != "pucker"]
    assert len(paired) == 7 and all(r.measurable for r in paired)
    for r in paired:
        if side is None:
            assert 0.85 < r.ratio_right_left < 1.15, r
        elif side == "right":
            assert r.ratio_right_left < 0.8 and r.weaker_side == "right", r
        else:
            assert r.ratio_right_left > 1.1 and r.weaker_side == "left", r
    # Pucker is one unpaired blendshape: symmetric whatever the palsy.
    assert abs(a.region("pucker").ratio_right_left - 1.0) < 0.05


def test_symmetry_ratio_tracks_the_palsy_gain(face_model, evaluator, timeline):
    """Regions driven by one paired blendshape pair follow the right-side gain almost linearly."""
    for gain in (0.3, 0.6):
        a = analyse_session(patient_series(face_model, timeline, PatientSpec(right_gain=gain)), face_model,
                            evaluator)
        for name in ("brow", "commissure", "nasolabial", "cheek"):
            assert a.region(name).ratio_right_left == pytest.approx(gain, abs=0.06), name


def test_eye_closure_events_sides():
    n = 60
    c = np.zeros((n, 2))
    c[5:10, 0] = 0.9          # left wink
    c[20:26, 1] = 0.95        # right wink
    c[40:44] = 0.9            # blink
    c[50:53, 0], c[50:53, 1] = 0.8, 0.6  # asymmetric but bilateral
    ev = detect_eye_closures(np.arange(n), c, np.ones(n, bool))
    assert [(e.start_frame, e.end_frame, e.side) for e in ev] == [
        (5, 9, "left"), (20, 25, "right"), (40, 43, "both"), (50, 52, "both")]


def test_table_round_trip_with_missing_fits(face_model, evaluator, timeline):
    s = patient_series(face_model, timeline, PatientSpec(right_gain=0.3))
    s.valid = s.valid.copy()
    s.valid[::7] = False  # frames without a face / fit
    table = series_table(face_model, s)
    back = series_from_table(table, face_model, label="t")
    assert np.array_equal(back.valid, s.valid)
    assert np.allclose(back.expression[s.valid], s.expression[s.valid], atol=1e-6)
    assert np.allclose(back.session_identity(), s.identity, atol=1e-6)
    a = analyse_session(back, face_model, evaluator)
    assert a.n_valid == int(s.valid.sum())
    assert a.affected.side == "right"
    assert np.all(np.isnan(a.per_frame["eye_closure"][~s.valid]))
    with pytest.raises(BadInputError):
        series_from_table(table.drop_columns(["expr_jawOpen"]), face_model)


def test_report_html_json_and_cli(face_model, timeline, tmp_path: Path):
    from realtime.cli import report as cli_report

    old = tmp_path / "old.parquet"
    new = tmp_path / "new.parquet"
    for path, gain in ((old, 0.2), (new, 0.5)):
        s = patient_series(face_model, timeline, PatientSpec(right_gain=gain))
        pq.write_table(series_table(face_model, s), path)
    parser = argparse.ArgumentParser()
    cli_report.register(parser.add_subparsers())
    out = tmp_path / "r" / "report.html"
    args = parser.parse_args(["report", str(new), "--compare", str(old), "--out", str(out)])
    assert args.func(args) == 0
    html = out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["session"]["affected"]["side"] == "right"
    assert len(data["progress"]) == 2
    brow = next(r for r in data["session"]["regions"] if r["region"] == "brow")
    assert brow["ratio_right_left"] == pytest.approx(0.5, abs=0.06)
    # Self-contained: no fetched resources; the renders are inline PNGs (one per exercise).
    for bad in ('src="http', "href=", "url(http", "<script", "@import"):
        assert bad not in html
    assert html.count("data:image/png;base64,") == 10
    assert "Progress across sessions" in html and "<svg" in html
    args = parser.parse_args(["report", str(tmp_path / "missing"), "--out", str(out)])
    with pytest.raises(BadInputError):
        args.func(args)


def test_report_opens_in_headless_chromium(face_model, timeline, tmp_path: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium not installed (tools/bootstrap.sh installs it)")
    from realtime.clinical.report import make_report

    table = tmp_path / "s.parquet"
    s = patient_series(face_model, timeline, PatientSpec(right_gain=0.3))
    pq.write_table(series_table(face_model, s), table)
    res = make_report(table, face_model, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--window-size=1100,2400", f"--screenshot={shot}", res.html_path.as_uri()],
        capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert proc.returncode == 0, log[-2000:]
    assert not console, console
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1100)
    assert img.std() > 10  # rendered content, not a blank page


def test_recorded_session_round_trip(face_model, timeline, tmp_path):
    """Frames with known fits → the real session recorder → load_session → the same measurements."""
    from realtime.clinical.patient import compact_protocol_toml
    from realtime.clinical.sessions import load_series
    from realtime.results import FaceFit, FaceResult, FaceTrack, Frame, FrameResult, Pose
    from realtime.session.protocol import load_protocol, parse_protocol
    from realtime.session.recorder import RecorderConfig, SessionRecorder

    proto = parse_protocol(compact_protocol_toml(load_protocol("palsy-basic"), 1, 0.5, 1.0, 0.6, 1.0), "c")
    truth = patient_series(face_model, protocol_timeline(proto), PatientSpec(right_gain=0.3), fps=10.0)
    n_v = face_model.n_vertices
    image = np.zeros((48, 64, 3), np.uint8)
    verts = np.zeros((n_v, 3), np.float32)
    rec = SessionRecorder(RecorderConfig(out_dir=tmp_path, subject_id="p01", protocol=proto, audio=False,
                                         folder_name="s"))
    with rec:
        for i in range(truth.n_frames):
            track = FaceTrack(np.zeros((478, 3), np.float32), 1.0, (0.0, 0.0, 64.0, 48.0))
            fit = FaceFit(Pose(np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 500.0])),
                          truth.expression[i].astype(np.float32), truth.identity.astype(np.float32), verts,
                          np.zeros((68, 2), np.float32), np.zeros((68, 3), np.float32), 0.5, 0.9, True)
            t = float(truth.timestamp_s[i])
            rec.consume(FrameResult(Frame(image, i, t, t), [FaceResult(track, fit)],
                                    {"landmarks": 1.0, "fit": 1.0}))
    back = load_series(tmp_path / "s", face_model)
    ev = MetricEvaluator(face_model)
    a, b = analyse_session(truth, face_model, ev), analyse_session(back, face_model, ev)
    assert back.n_frames == truth.n_frames and back.valid.all()
    assert list(back.exercise) == list(truth.exercise)
    assert b.affected.side == "right"
    for ra in a.regions:
        assert b.region(ra.region).ratio_right_left == pytest.approx(ra.ratio_right_left, abs=1e-3), ra.region


def test_synkinesis_flagged_on_the_affected_side_only(face_model, evaluator, timeline):
    plain = analyse_session(patient_series(face_model, timeline, PatientSpec(right_gain=0.3)), face_model,
                            evaluator)
    # The healthy left eye narrows more in a smile (Duchenne) but that is not synkinesis.
    smile = next(s for s in plain.synkinesis if s.kind == "ocular" and s.exercise == "smile_open")
    assert smile.left > smile.right and smile.flagged_side is None
    assert all(s.flagged_side is None for s in plain.synkinesis)
    synk = analyse_session(patient_series(face_model, timeline, PatientSpec(right_gain=0.3, synkinesis=0.6)),
                           face_model, evaluator)
    assert synk.affected.side == "right"
    flagged = {(s.kind, s.exercise) for s in synk.synkinesis if s.flagged_side == "right"}
    assert {("ocular", "smile_closed"), ("ocular", "smile_open"), ("ocular", "pucker"),
            ("oral", "eye_closure_gentle")} <= flagged
    assert all(s.flagged_side in (None, "right") for s in synk.synkinesis)
