"""The session's per-frame table: the tracking/fit columns of ``realtime.export`` plus session columns.

Session columns (schema ``SESSION_SCHEMA_VERSION``, documented in ``docs/formats.md``):
``session_time_s`` (video/protocol clock), ``capture_clock_s`` (the frame's ``capture_time_s`` minus the
session's clock origin: the clock audio is stamped with), ``exercise``/``exercise_index``/``repetition``/
``phase``/``phase_elapsed_s`` (protocol labels), ``video_written`` and the quality flags ``q_*``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from realtime import export
from realtime.results import FrameResult
from realtime.session.protocol import PromptState

SESSION_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class QualityThresholds:
    """When a frame is flagged as unreliable for measurement (stored in the manifest)."""

    min_presence: float = 0.5
    max_abs_yaw_deg: float = 30.0
    max_abs_pitch_deg: float = 25.0
    max_residual_px: float = 4.0
    min_fit_confidence: float = 0.3

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class FrameRecord:
    """What the recorder keeps of one frame until its chunk is written."""

    result: FrameResult
    session_time_s: float
    capture_clock_s: float
    prompt: PromptState | None
    video_written: bool


def _base_table(results: Sequence[FrameResult], columns: Sequence[export.Column]) -> pa.Table:
    """Tracking and fit columns from the shared row builder of ``realtime.export`` (same names, types and
    docs as ``realtime-face run --export``)."""
    builder = export.RowBuilder(columns, export.table_metadata(),
                                batch_rows=max(1, len(results)))
    for r in results:
        builder.append(r)
        # This runs on the writer thread: hand the GIL back after every row so the live pipeline's
        # thread never waits a whole switch interval (5 ms) for it.
        time.sleep(0)
    return pa.Table.from_batches([builder.take()])


def session_columns(records: Sequence[FrameRecord], thresholds: QualityThresholds) -> dict[str, pa.Array]:
    n = len(records)
    exercise: list[str | None] = []
    ex_index = np.full(n, -1, np.int16)
    repetition = np.zeros(n, np.int16)
    phase: list[str | None] = []
    phase_elapsed = np.full(n, np.nan, np.float32)
    no_face = np.zeros(n, bool)
    low_presence = np.zeros(n, bool)
    large_pose = np.zeros(n, bool)
    poor_fit = np.zeros(n, bool)
    no_fit = np.zeros(n, bool)
    for i, rec in enumerate(records):
        p = rec.prompt
        if p is None:
            exercise.append(None)
            phase.append(None)
        else:
            exercise.append(p.exercise_id or None)
            phase.append(p.phase)
            ex_index[i] = p.exercise_index
            repetition[i] = p.repetition
            phase_elapsed[i] = p.phase_elapsed_s
        face = rec.result.primary
        if face is None:
            no_face[i] = True
            no_fit[i] = True
            continue
        low_presence[i] = face.track.presence < thresholds.min_presence
        fit = face.fit
        if fit is None:
            no_fit[i] = True
            continue
        yaw, pitch, _ = fit.pose.euler_deg()
        large_pose[i] = abs(yaw) > thresholds.max_abs_yaw_deg or abs(pitch) > thresholds.max_abs_pitch_deg
        poor_fit[i] = (fit.residual_px > thresholds.max_residual_px
                       or fit.confidence < thresholds.min_fit_confidence)
    quality_ok = ~(no_face | low_presence | large_pose | poor_fit | no_fit)
    return {
        "session_time_s": pa.array([r.session_time_s for r in records], pa.float64()),
        "capture_clock_s": pa.array([r.capture_clock_s for r in records], pa.float64()),
        "exercise": pa.array(exercise, pa.string()),
        "exercise_index": pa.array(ex_index),
        "repetition": pa.array(repetition),
        "phase": pa.array(phase, pa.string()),
        "phase_elapsed_s": pa.array(phase_elapsed),
        "video_written": pa.array([r.video_written for r in records], pa.bool_()),
        "q_no_face": pa.array(no_face),
        "q_low_presence": pa.array(low_presence),
        "q_no_fit": pa.array(no_fit),
        "q_large_pose": pa.array(large_pose),
        "q_poor_fit": pa.array(poor_fit),
        "quality_ok": pa.array(quality_ok),
    }


def build_chunk(records: Sequence[FrameRecord], thresholds: QualityThresholds,
                columns: Sequence[export.Column]) -> pa.Table:
    """One chunk's table: base columns, then the session columns; schema versions in the metadata."""
    table = _base_table([r.result for r in records], columns)
    for name, column in session_columns(records, thresholds).items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, column)
    meta = dict(table.schema.metadata or {})
    meta[(export.META_PREFIX + "session_schema_version").encode()] = str(SESSION_SCHEMA_VERSION).encode()
    return table.replace_schema_metadata(meta)
