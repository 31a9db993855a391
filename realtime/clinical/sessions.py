"""Turning a recorded session (or a bare per-frame Parquet table) into a :class:`SessionSeries`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from realtime.clinical.metrics import SessionSeries
from realtime.errors import BadInputError
from realtime.facemodel import MorphableModel
from realtime.landmarks import N_LANDMARKS
from realtime.results import FrameResult

log = logging.getLogger(__name__)


def _column(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table.column(name) if name in table.column_names else None


def _float_matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    cols = []
    for n in names:
        c = table.column(n).cast(pa.float64()).fill_null(np.nan)
        cols.append(c.to_numpy())
    return np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0))


def _list_matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A list<float> column → (F, width) float64 with NaN rows for nulls."""
    out = np.full((len(column), width), np.nan)
    arr = column.combine_chunks()
    valid = np.asarray(arr.is_valid())
    if np.any(valid):
        flat = np.asarray(arr.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False),
                          dtype=np.float64)
        if flat.size != int(valid.sum()) * width:
            raise BadInputError(f"column '{column._name if hasattr(column, '_name') else ''}' does not have "
                                f"{width} values per row")
        out[valid] = flat.reshape(-1, width)
    return out


def _landmarks(column: pa.ChunkedArray | None, n: int) -> np.ndarray | None:
    """``landmarks_px`` (fixed_size_list<float32>[1434]) -> (F, 478, 3) float32, NaN rows for nulls."""
    if column is None:
        return None
    arr = column.combine_chunks()
    width = N_LANDMARKS * 3
    out = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
    valid = np.asarray(arr.is_valid())
    if np.any(valid):
        flat = np.asarray(arr.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False),
                          dtype=np.float32)
        if flat.size != int(valid.sum()) * width:
            raise BadInputError(f"column 'landmarks_px' does not have {width} values per row")
        out[valid] = flat.reshape(-1, N_LANDMARKS, 3)
    return out


def _strings(column: pa.ChunkedArray | None, n: int) -> np.ndarray | None:
    if column is None:
        return None
    values = ["" if v is None else str(v) for v in column.to_pylist()]
    return np.array(values, dtype=object).astype(str).reshape(n)


def series_from_table(table: pa.Table, model: MorphableModel, label: str = "",
                      started: str = "") -> SessionSeries:
    """Read the per-frame table (``docs/formats.md``) into arrays for the clinical metrics."""
    n = table.num_rows
    names = [f"expr_{k}" for k in model.expression_names]
    missing = [k for k in names if k not in table.column_names]
    if missing:
        raise BadInputError(f"{label or 'table'}: no fitted expression columns ({missing[0]} … missing); "
                            "was the session recorded with the model fit enabled?")
    expr = _float_matrix(table, names)
    valid = np.all(np.isfinite(expr), axis=1)
    for flag in ("quality_ok", "face_found"):
        c = _column(table, flag)
        if c is not None:
            valid &= np.asarray(c.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    t_col = _column(table, "session_time_s") or _column(table, "timestamp_s")
    t = (np.asarray(t_col.cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
         if t_col is not None else np.arange(n) / 30.0)
    ident = None
    c = _column(table, "identity")
    if c is not None:
        ident = _list_matrix(c, model.n_identity)
    locked = _column(table, "identity_locked")
    rep = _column(table, "repetition")
    fidx = _column(table, "frame_index")
    rotation = translation = yaw = pitch = video_frame = None
    c_rot, c_t = _column(table, "rotation"), _column(table, "translation_mm")
    if c_rot is not None and c_t is not None:
        rotation = _list_matrix(c_rot, 9).reshape(n, 3, 3)
        translation = _list_matrix(c_t, 3)
    c_yaw, c_pitch = _column(table, "yaw_deg"), _column(table, "pitch_deg")
    if c_yaw is not None and c_pitch is not None:
        yaw = np.asarray(c_yaw.cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
        pitch = np.asarray(c_pitch.cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
    c_written = _column(table, "video_written")
    if c_written is not None:
        written = np.asarray(c_written.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        video_frame = np.where(written, np.cumsum(written) - 1, -1).astype(np.int64)
    return SessionSeries(
        timestamp_s=t, expression=np.nan_to_num(expr), valid=valid, identity=ident,
        identity_locked=(np.asarray(locked.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
                         if locked is not None else None),
        exercise=_strings(_column(table, "exercise"), n),
        repetition=(np.asarray(rep.fill_null(0).to_numpy(), dtype=np.int64) if rep is not None else None),
        phase=_strings(_column(table, "phase"), n),
        frame_index=(np.asarray(fidx.to_numpy(), dtype=np.int64) if fidx is not None else None),
        landmarks=_landmarks(_column(table, "landmarks_px"), n),
        rotation=rotation, translation_mm=translation, yaw_deg=yaw, pitch_deg=pitch, video_frame=video_frame,
        label=label, started=started,
    )


def load_series(path: str | Path, model: MorphableModel) -> SessionSeries:
    """A session folder (``realtime-face record``) or a per-frame ``.parquet`` table (``run --export``)."""
    p = Path(path)
    if p.is_dir():
        from realtime.session.loader import load_session

        session = load_session(p)
        for problem in session.problems:
            log.warning("%s: %s", p, problem)
        label = session.subject_id or p.name
        return series_from_table(session.frames, model, label=f"{label} ({p.name})",
                                 started=str(session.started_utc or ""))
    if p.is_file() and p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(f"cannot read {p}: {exc}") from None
        return series_from_table(table, model, label=p.stem)
    raise BadInputError(f"not a session folder or .parquet table: {p}")


class FitCollector:
    """A pipeline sink that keeps each frame's fitted parameters (for measuring without recording).

    Memory: 153 floats and the 478 MediaPipe landmarks per frame (about 12 MB per minute at 30 FPS).
    """

    def __init__(self, model: MorphableModel) -> None:
        self.model = model
        self._t: list[float] = []
        self._index: list[int] = []
        self._expr: list[np.ndarray | None] = []
        self._ident: list[np.ndarray | None] = []
        self._locked: list[bool] = []
        self._landmarks: list[np.ndarray | None] = []

    def consume(self, result: FrameResult) -> None:
        face = result.primary
        fit = face.fit if face is not None else None
        self._t.append(result.frame.timestamp_s)
        self._index.append(result.frame.index)
        self._expr.append(None if fit is None else np.asarray(fit.expression, dtype=np.float32).copy())
        self._ident.append(None if fit is None else np.asarray(fit.identity, dtype=np.float32).copy())
        self._locked.append(bool(fit.identity_locked) if fit is not None else False)
        self._landmarks.append(None if face is None else
                               np.asarray(face.track.landmarks_px, dtype=np.float32).copy())

    def close(self) -> None:
        pass

    def series(self, label: str = "") -> SessionSeries:
        n = len(self._t)
        valid = np.array([e is not None for e in self._expr], dtype=bool)
        expr = np.zeros((n, self.model.n_expressions))
        ident = np.full((n, self.model.n_identity), np.nan)
        for i, (e, d) in enumerate(zip(self._expr, self._ident, strict=True)):
            if e is not None and d is not None:
                expr[i], ident[i] = e, d
        landmarks = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
        for i, lm in enumerate(self._landmarks):
            if lm is not None:
                landmarks[i] = lm
        return SessionSeries(timestamp_s=np.asarray(self._t, dtype=np.float64), expression=expr, valid=valid,
                             identity=ident, identity_locked=np.asarray(self._locked, dtype=bool),
                             frame_index=np.asarray(self._index, dtype=np.int64), landmarks=landmarks,
                             label=label)
