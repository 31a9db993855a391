"""Per-frame Parquet table: one row per frame, the documented columns, values equal to the results."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest

from realtime.capture import ArraySource, VideoSource
from realtime.errors import OutputError
from realtime.export import (
    SCHEMA_VERSION,
    ParquetSink,
    RowBuilder,
    frame_columns,
    read_frames,
    scalar_column,
    table_info,
    vector_column,
)
from realtime.landmarks import LandmarkStage
from realtime.pipeline import Pipeline
from realtime.results import FrameResult

DOCS = Path(__file__).resolve().parents[1] / "docs" / "formats.md"


def documented_tracking_columns() -> list[str]:
    text = DOCS.read_text()
    section = text.split("### Tracking columns", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


class Keep:
    """Keeps landmarks per frame (not the images)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, np.ndarray | None]] = []

    def consume(self, r: FrameResult) -> None:
        self.rows.append((r.frame.index, r.faces[0].track.landmarks_px.copy() if r.faces else None))

    def close(self) -> None:
        pass


def test_export_one_row_per_frame_with_documented_columns(videos_dir: Path, tmp_path: Path) -> None:
    path = videos_dir / "talking_720p.mp4"
    with av.open(str(path)) as c:
        expected = c.streams.video[0].frames
    stage = LandmarkStage()
    keep = Keep()
    sink = ParquetSink(tmp_path / "out", frame_columns([stage.name]), {"source": str(path), "width": 1280})
    with Pipeline(VideoSource(path), [stage], [keep, sink]) as p:
        p.run()
    assert not (tmp_path / "out" / "frames.parquet.partial").exists()
    table = read_frames(tmp_path / "out" / "frames.parquet")
    assert table.num_rows == expected

    documented = documented_tracking_columns()
    assert "t_<stage>_ms" in documented
    expected_names = [("t_landmarks_ms" if n == "t_<stage>_ms" else n) for n in documented]
    assert sorted(table.column_names) == sorted(expected_names)
    types = {f.name: f.type for f in table.schema}
    assert types["frame_index"] == pa.int64() and types["timestamp_s"] == pa.float64()
    assert types["face_found"] == pa.bool_() and types["presence"] == pa.float32()
    assert types["landmarks_px"] == pa.list_(pa.float32()) == types["box_px"]
    sizes = {f.name: f.metadata.get(b"size") for f in table.schema}
    assert sizes["landmarks_px"] == b"1434" and sizes["box_px"] == b"4"
    assert set(table["landmarks_px"].combine_chunks().value_lengths().drop_null().to_pylist()) == {1434}
    assert types["t_landmarks_ms"] == pa.float32()
    assert all(f.metadata and f.metadata[b"doc"] for f in table.schema)

    info = table_info(table)
    assert info["schema_version"] == SCHEMA_VERSION and info["table"] == "frames"
    assert info["source"] == str(path) and info["width"] == "1280"

    assert table["frame_index"].to_pylist() == list(range(expected))
    assert np.all(np.diff(table["timestamp_s"].to_numpy()) > 0)
    found = table["face_found"].to_numpy(zero_copy_only=False)
    assert found.mean() >= 0.95
    lms = table["landmarks_px"].combine_chunks().flatten().to_numpy().reshape(-1, 478, 3)
    assert len(lms) == found.sum()
    kept = np.stack([lm for _, lm in keep.rows if lm is not None])
    assert np.array_equal(lms, kept)
    boxes = table["box_px"].combine_chunks().flatten().to_numpy().reshape(-1, 4)
    assert np.allclose(boxes[:, :2], lms[:, :, :2].min(1)) and np.allclose(boxes[:, 2:], lms[:, :, :2].max(1))
    assert np.all(table["t_landmarks_ms"].to_numpy() > 0)


def test_frames_without_a_face_are_null(videos_dir: Path, tmp_path: Path) -> None:
    with av.open(str(videos_dir / "wink_blink_gaze.mp4")) as c:
        face = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    blank = np.full_like(face, 90)
    images = [face, face, blank, face]
    sink = ParquetSink(tmp_path, frame_columns(["landmarks"]), batch_rows=3)  # crosses a batch boundary
    with Pipeline(ArraySource(images), [LandmarkStage(static=True)], [sink]) as p:
        p.run()
    t = read_frames(tmp_path / "frames.parquet")
    assert t["face_found"].to_pylist() == [True, True, False, True]
    assert t["n_faces"].to_pylist() == [1, 1, 0, 1]
    assert t["landmarks_px"].null_count == 1 and t["landmarks_px"][2].as_py() is None
    assert t["presence"][2].as_py() is None and t["box_px"][2].as_py() is None
    assert t["landmarks_px"][0].as_py() == t["landmarks_px"][1].as_py()  # same image, static mode


def test_row_builder_takes_extra_columns() -> None:
    """Other modules append their columns (the fit, the session recorder's exercise/phase)."""
    phase = {"value": "rest"}
    extra = [
        scalar_column("phase", pa.string(), lambda r: phase["value"], "protocol phase"),
        vector_column("marker_mm", 3, lambda r: None if not r.events else [1, 2, 3], "t"),
    ]
    cols = frame_columns(["landmarks", "smooth"], extra=extra)
    assert [c.name for c in cols][-4:] == ["t_landmarks_ms", "t_smooth_ms", "phase", "marker_mm"]
    b = RowBuilder(cols, batch_rows=4)
    from realtime.results import Frame

    img = np.zeros((4, 4, 3), np.uint8)
    for i in range(3):
        r = FrameResult(Frame(img, i, i / 30, 0.0), events=["snapshot"] if i == 1 else [])
        r.timings_ms["landmarks"] = 1.5
        phase["value"] = f"p{i}"
        b.append(r)
    batch = b.take()
    assert batch.num_rows == 3 and len(b) == 0
    assert batch.column("phase").to_pylist() == ["p0", "p1", "p2"]
    assert batch.column("marker_mm").to_pylist() == [None, [1.0, 2.0, 3.0], None]
    assert batch.column("t_smooth_ms").to_pylist() == [None, None, None]
    assert batch.column("face_found").to_pylist() == [False] * 3
    with pytest.raises(ValueError, match="duplicate"):
        frame_columns(["landmarks"], extra=[scalar_column("presence", pa.float32(), lambda r: 0, "dup")])


def test_unwritable_export_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        ParquetSink(blocker / "sub", frame_columns())


def test_schema_version_is_checked(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="schema_version"):
        read_frames(tmp_path / "other.parquet")
