"""The per-frame table (Parquet): one row per processed frame, schema documented in ``docs/formats.md``.

The columns are described once, as ``Column`` objects (name, Arrow type, getter, doc). ``frame_columns()``
returns the standard set; other modules add theirs (the fit columns, the session recorder's exercise /
repetition / phase columns) by appending ``Column``s built with ``scalar_column`` / ``vector_column``.
``RowBuilder`` turns ``FrameResult``s into Arrow record batches with those columns; ``ParquetSink`` is the
pipeline sink that writes them on its own thread.

Bump ``SCHEMA_VERSION`` whenever a column changes meaning or type (adding a column does not need it).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from realtime import __version__
from realtime.errors import OutputError
from realtime.landmarks import N_LANDMARKS
from realtime.paths import ensure_writable_dir
from realtime.results import FrameResult

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
TABLE_NAME = "frames"
FRAMES_FILE = "frames.parquet"
META_PREFIX = "realtime_face."
"""Prefix of the Parquet key/value metadata written by the application."""
BATCH_ROWS = 256
"""Rows per record batch (and Parquet row group granularity): 256 x 1434 float32 ≈ 1.5 MB."""


@dataclass(frozen=True)
class Column:
    """One table column: ``get(result)`` returns its value for a frame, or None for null.

    Vector columns (``size`` set) are ``list<float32>`` holding exactly ``size`` values, or null; ``get``
    returns anything numpy can reshape to ``size`` floats. (Arrow's ``fixed_size_list`` would carry the
    length in the type, but its Parquet round trip fails on null rows: pyarrow 22 refuses to write them,
    25 cannot read them back; null rows are how "no face" / "no fit" is written. The length is in the
    field metadata ``size``.)
    """

    name: str
    type: pa.DataType
    get: Callable[[FrameResult], Any]
    doc: str
    size: int | None = None


def scalar_column(name: str, type_: pa.DataType, get: Callable[[FrameResult], Any], doc: str) -> Column:
    return Column(name, type_, get, doc)


def vector_column(name: str, size: int, get: Callable[[FrameResult], Any], doc: str) -> Column:
    return Column(name, pa.list_(pa.float32()), get, doc, size=size)


def _primary_track(r: FrameResult) -> Any:
    return r.faces[0].track if r.faces else None


def _presence(r: FrameResult) -> float | None:
    t = _primary_track(r)
    return t.presence if t is not None else None


def _box(r: FrameResult) -> Any:
    t = _primary_track(r)
    return t.box_px if t is not None else None


def _landmarks(r: FrameResult) -> Any:
    t = _primary_track(r)
    return t.landmarks_px if t is not None else None


def _timing(stage: str) -> Callable[[FrameResult], float | None]:
    def get(r: FrameResult) -> float | None:
        return r.timings_ms.get(stage)

    return get


def tracking_columns(stage_names: Sequence[str] = ("landmarks",)) -> list[Column]:
    """The Foundation columns: frame identity, the primary face's tracking, per-stage timings."""
    cols = [
        scalar_column(
            "frame_index",
            pa.int64(),
            lambda r: r.frame.index,
            "frame number in the source (decode order, 0-based; gaps = frames dropped live)",
        ),
        scalar_column(
            "timestamp_s",
            pa.float64(),
            lambda r: r.frame.timestamp_s,
            "source time in s: PTS for files, monotonic clock since open for cameras,"
            " 0 for one image, the index for an image folder",
        ),
        scalar_column("face_found", pa.bool_(), lambda r: bool(r.faces), "a face was tracked in this frame"),
        scalar_column("n_faces", pa.int32(), lambda r: len(r.faces), "number of faces tracked"),
        scalar_column(
            "dropped_before",
            pa.int32(),
            lambda r: r.dropped_before,
            "frames dropped by the live hand-off just before this one",
        ),
        scalar_column(
            "presence",
            pa.float32(),
            _presence,
            "primary face: MediaPipe face presence score in [0, 1] (null: no face)",
        ),
        vector_column("box_px", 4, _box, "primary face: landmark bounding box x0, y0, x1, y1 in pixels"),
        vector_column(
            "landmarks_px",
            N_LANDMARKS * 3,
            _landmarks,
            "primary face: 478 MediaPipe landmarks, row-major (x, y, z) in pixels; z is MediaPipe's"
            " relative depth scaled by the image width",
        ),
    ]
    for stage in stage_names:
        cols.append(
            scalar_column(
                f"t_{stage}_ms", pa.float32(), _timing(stage), f"time spent in the '{stage}' stage, ms"
            )
        )
    return cols


def _primary_fit(r: FrameResult) -> Any:
    return r.faces[0].fit if r.faces else None


def _fit_value(get: Callable[[Any], Any]) -> Callable[[FrameResult], Any]:
    def value(r: FrameResult) -> Any:
        fit = _primary_fit(r)
        return get(fit) if fit is not None else None

    return value


def _euler(i: int) -> Callable[[Any], float]:
    return lambda fit: float(fit.pose.euler_deg()[i])


def _expression(k: int) -> Callable[[Any], float]:
    return lambda fit: float(fit.expression[k])


def fit_columns(expression_names: Sequence[str] | None = None) -> list[Column]:
    """The fit columns (primary face's morphable-model fit; null in frames without a fit)."""
    if expression_names is None:
        from realtime.facemodel import load_face_model

        expression_names = load_face_model().expression_names
    f32 = pa.float32()
    cols = [
        scalar_column("yaw_deg", f32, _fit_value(_euler(0)), "head yaw in degrees (+ = toward camera right)"),
        scalar_column("pitch_deg", f32, _fit_value(_euler(1)), "head pitch in degrees (+ = tilted up)"),
        scalar_column("roll_deg", f32, _fit_value(_euler(2)), "head roll in degrees"),
        vector_column("rotation", 9, _fit_value(lambda f: f.pose.rotation),
                      "model→camera rotation, row-major 3x3 (frontal = diag(1, -1, -1))"),
        vector_column("translation_mm", 3, _fit_value(lambda f: f.pose.translation_mm),
                      "model→camera translation in mm (OpenCV camera axes)"),
    ]
    for k, name in enumerate(expression_names):
        cols.append(scalar_column(f"expr_{name}", f32, _fit_value(_expression(k)),
                                  f"blendshape weight '{name}' in [0, 1]"))
    cols += [
        vector_column("identity", 100, _fit_value(lambda f: f.identity),
                      "identity weights (standard-normal)"),
        vector_column("landmarks68_px", 136, _fit_value(lambda f: f.landmarks68_px),
                      "iBUG-68 model landmarks projected, row-major (x, y) pixels"),
        vector_column("landmarks68_mm", 204, _fit_value(lambda f: f.landmarks68_mm),
                      "iBUG-68 model landmarks in camera space, row-major (x, y, z) mm"),
        scalar_column("residual_px", f32, _fit_value(lambda f: f.residual_px),
                      "RMS landmark reprojection error of the fit, pixels"),
        scalar_column("fit_confidence", f32, _fit_value(lambda f: f.confidence),
                      "fit confidence in [0, 1] (tracking presence and residual)"),
        scalar_column("identity_locked", pa.bool_(), _fit_value(lambda f: bool(f.identity_locked)),
                      "the identity was locked (frozen) for this frame"),
    ]
    return cols


def frame_columns(stage_names: Sequence[str] = ("landmarks",), extra: Sequence[Column] = (),
                  expression_names: Sequence[str] | None = None) -> list[Column]:
    """The standard per-frame columns (tracking; the fit columns when a "fit" stage runs) then ``extra``."""
    cols = tracking_columns(stage_names)
    if "fit" in stage_names:
        cols.extend(fit_columns(expression_names))
    cols.extend(extra)
    names = [c.name for c in cols]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate column names: {dupes}")
    return cols


def table_metadata(extra: Mapping[str, object] | None = None) -> dict[bytes, bytes]:
    """Key/value metadata: schema version, table name, app version, creation time, plus ``extra``."""
    meta: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "table": TABLE_NAME,
        "app_version": __version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    meta.update(extra or {})
    return {
        (META_PREFIX + k).encode(): (v if isinstance(v, str) else json.dumps(v)).encode()
        for k, v in meta.items()
    }


class RowBuilder:
    """Collects ``FrameResult`` rows for a list of columns and hands them out as Arrow record batches.

    ``append`` copies what it needs (a few scalars, the vector floats into a preallocated block) so the
    result can be dropped right after; ``take`` returns the buffered rows as a ``pa.RecordBatch``.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        metadata: Mapping[bytes, bytes] | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.columns = list(columns)
        self.schema = pa.schema(
            [
                pa.field(
                    c.name,
                    c.type,
                    nullable=True,
                    metadata={"doc": c.doc, **({"size": str(c.size)} if c.size else {})},
                )
                for c in self.columns
            ],
            metadata=dict(metadata or {}),
        )
        self.batch_rows = batch_rows
        self._scalars: dict[str, list[Any]] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._valid: dict[str, np.ndarray] = {}
        self._n = 0
        self._new_block()

    def _new_block(self) -> None:
        self._n = 0
        self._scalars = {c.name: [] for c in self.columns if c.size is None}
        self._vectors = {
            c.name: np.empty((self.batch_rows, c.size), np.float32) for c in self.columns if c.size
        }
        self._valid = {name: np.zeros(self.batch_rows, bool) for name in self._vectors}

    def __len__(self) -> int:
        return self._n

    @property
    def full(self) -> bool:
        return self._n >= self.batch_rows

    def append(self, result: FrameResult) -> None:
        if self.full:
            raise RuntimeError("RowBuilder block is full: call take() first")
        i = self._n
        for c in self.columns:
            value = c.get(result)
            if c.size is None:
                self._scalars[c.name].append(value)
            elif value is None:
                self._valid[c.name][i] = False
            else:
                self._vectors[c.name][i] = np.asarray(value, dtype=np.float32).reshape(c.size)
                self._valid[c.name][i] = True
        self._n += 1

    def take(self) -> pa.RecordBatch:
        """The buffered rows as one record batch (possibly empty); starts a new block."""
        n = self._n
        arrays = []
        for c in self.columns:
            if c.size is None:
                arrays.append(pa.array(self._scalars[c.name], type=c.type))
            else:
                valid = self._valid[c.name][:n]
                values = pa.array(self._vectors[c.name][:n][valid].reshape(-1))
                offsets = np.zeros(n + 1, np.int32)
                np.cumsum(valid * c.size, out=offsets[1:])
                arrays.append(
                    pa.ListArray.from_arrays(pa.array(offsets), values, type=c.type, mask=pa.array(~valid))
                )
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self._new_block()
        return batch


def check_output_dir(path: str | Path) -> Path:
    """Create ``path`` (a folder) and prove it is writable; ``OutputError`` (exit 3) otherwise."""
    return ensure_writable_dir(path)


class ParquetSink:
    """Pipeline sink writing the per-frame table to ``<dir>/frames.parquet`` on its own writer thread.

    The file is written as ``frames.parquet.partial`` and renamed when closed, so a complete
    ``frames.parquet`` always has its footer. A write failure (disk full) is raised from ``consume``/``close``
    as ``OutputError``.
    """

    def __init__(
        self,
        directory: str | Path,
        columns: Sequence[Column],
        metadata: Mapping[str, object] | None = None,
        *,
        batch_rows: int = BATCH_ROWS,
        filename: str = FRAMES_FILE,
        max_pending_batches: int = 8,
    ) -> None:
        self.directory = check_output_dir(directory)
        self.path = self.directory / filename
        self._partial = self.path.with_name(self.path.name + ".partial")
        self.builder = RowBuilder(columns, table_metadata(metadata), batch_rows=batch_rows)
        try:
            self._writer = pq.ParquetWriter(str(self._partial), self.builder.schema, compression="zstd")
        except OSError as exc:
            raise OutputError(f"cannot write {self._partial}: {exc}") from None
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=max_pending_batches)
        self._error: BaseException | None = None
        self.rows = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="parquet-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._writer.write_batch(batch)
            except Exception as exc:
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise OutputError(f"writing {self._partial} failed: {self._error}")

    def consume(self, result: FrameResult) -> None:
        self._raise_if_failed()
        self.builder.append(result)
        self.rows += 1
        if self.builder.full:
            self._queue.put(self.builder.take())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if len(self.builder):
            self._queue.put(self.builder.take())
        self._queue.put(None)
        self._thread.join()
        try:
            self._writer.close()
        except OSError as exc:
            self._error = self._error or exc
        if self._error is not None:
            self._raise_if_failed()
        os.replace(self._partial, self.path)
        log.info("wrote %d rows to %s", self.rows, self.path)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frames(path: str | Path) -> pa.Table:
    """Read a per-frame table; ``ValueError`` when its schema version is not the one this build writes."""
    table = pq.read_table(str(path))
    meta = table.schema.metadata or {}
    version = meta.get((META_PREFIX + "schema_version").encode(), b"").decode()
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r}, this build reads {SCHEMA_VERSION!r}")
    return table


def table_info(table: pa.Table) -> dict[str, str]:
    """The application's metadata of a table, without the key prefix."""
    meta = table.schema.metadata or {}
    out = {}
    for k, v in meta.items():
        key = k.decode(errors="replace")
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX) :]] = v.decode(errors="replace")
    return out
