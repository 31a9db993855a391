"""Reading a session folder, complete or interrupted (``load_session``), and summarising it.

The loader never modifies the folder: an interrupted recording (``status == "recording"`` in the
manifest, chunks not merged) is read from its chunks; ``realtime-face session repair`` finalises it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from realtime.camera import Intrinsics
from realtime.errors import BadInputError
from realtime.session import storage
from realtime.session.protocol import PHASE_HOLD, Protocol, Segment, build_timeline, parse_protocol
from realtime.session.recorder import (
    AUDIO,
    FRAMES,
    MANIFEST,
    PROTOCOL_COPY,
    SESSION_FORMAT,
    STATE_COMPLETE,
    STATE_REPAIRED,
    VIDEO,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Session:
    """A loaded session folder. ``frames`` is the per-frame table (``docs/formats.md``), in frame order."""

    path: Path
    manifest: dict[str, Any]
    frames: pa.Table
    protocol: Protocol | None
    video_path: Path | None
    audio_path: Path | None
    finalized: bool
    """The frame table was merged (clean stop or repair); False for an interrupted recording."""
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def complete(self) -> bool:
        return self.status in (STATE_COMPLETE, STATE_REPAIRED) and self.finalized

    @property
    def subject_id(self) -> str:
        return str(self.manifest.get("subject_id", ""))

    @property
    def started_utc(self) -> str | None:
        return self.manifest.get("started_utc")

    @property
    def intrinsics(self) -> Intrinsics | None:
        d = (self.manifest.get("camera") or {}).get("intrinsics")
        if not d:
            return None
        return Intrinsics(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                          int(d["width"]), int(d["height"]))

    @property
    def audio_offset_s(self) -> float | None:
        a = self.manifest.get("audio") or {}
        v = a.get("offset_s")
        return None if v is None else float(v)

    @property
    def num_frames(self) -> int:
        return self.frames.num_rows

    @property
    def duration_s(self) -> float:
        if self.frames.num_rows == 0 or "session_time_s" not in self.frames.column_names:
            return 0.0
        t = self.frames.column("session_time_s")
        return float(pc.max(t).as_py() - pc.min(t).as_py())

    def segments(self) -> list[Segment]:
        """The protocol's timeline (session time = protocol time)."""
        return build_timeline(self.protocol) if self.protocol else []

    def select(self, exercise: str | None = None, repetition: int | None = None,
               phase: str | None = PHASE_HOLD, quality_ok: bool | None = None) -> pa.Table:
        """Rows of one exercise / repetition / phase (``None`` = any), e.g. every ``brow_raise`` hold."""
        mask = np.ones(self.frames.num_rows, bool)
        cols = self.frames.column_names
        if exercise is not None and "exercise" in cols:
            mask &= np.asarray(pc.fill_null(pc.equal(self.frames["exercise"], exercise), False))
        if repetition is not None and "repetition" in cols:
            mask &= self.frames["repetition"].to_numpy() == repetition
        if phase is not None and "phase" in cols:
            mask &= np.asarray(pc.fill_null(pc.equal(self.frames["phase"], phase), False))
        if quality_ok is not None and "quality_ok" in cols:
            mask &= self.frames["quality_ok"].to_numpy(zero_copy_only=False) == quality_ok
        return self.frames.filter(pa.array(mask))


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"not a session folder (no {MANIFEST}): {folder}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SESSION_FORMAT:
        raise BadInputError(f"{path} is not a realtime-face session manifest")
    return data


def load_frames(folder: Path) -> tuple[pa.Table, bool, list[str]]:
    """The frame table: ``frames.parquet`` when finalised, else the chunks written so far."""
    final = folder / FRAMES
    if final.is_file():
        try:
            return pq.read_table(final), True, []
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(f"cannot read {final}: {exc}") from None
    table, problems = storage.read_chunks(storage.list_chunks(folder))
    if table is None:
        table = pa.table({"frame_index": pa.array([], pa.int64()),
                          "session_time_s": pa.array([], pa.float64())})
    return table, False, problems


def load_session(path: str | Path) -> Session:
    """Load a session folder written by ``realtime-face record`` (complete, failed or interrupted)."""
    folder = Path(path)
    if not folder.is_dir():
        raise BadInputError(f"session folder not found: {folder}")
    manifest = read_manifest(folder)
    frames, finalized, problems = load_frames(folder)
    if not finalized and frames.num_rows == 0 and not storage.list_chunks(folder):
        finalized = bool((manifest.get("frames") or {}).get("finalized"))  # stopped before any frame
    protocol = None
    proto_file = folder / PROTOCOL_COPY
    if proto_file.is_file():
        try:
            protocol = parse_protocol(proto_file.read_text(encoding="utf-8"), proto_file.stem)
        except (OSError, BadInputError) as exc:
            problems.append(f"protocol: {exc}")
    video = folder / VIDEO
    audio = folder / AUDIO
    if frames.num_rows and "session_time_s" in frames.column_names:
        order = pc.sort_indices(frames, [("session_time_s", "ascending")])
        frames = frames.take(order)
    return Session(path=folder, manifest=manifest, frames=frames, protocol=protocol,
                   video_path=video if video.is_file() and video.stat().st_size > 0 else None,
                   audio_path=audio if audio.is_file() else None, finalized=finalized, problems=problems)
