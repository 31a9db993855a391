"""``realtime-face session repair``: finalise a session folder left by a killed or failed recording.

Steps, each safe to re-run and none destroying data that could still be read:
1. stray temporary files (``*.tmp``: a write interrupted before its rename) are removed;
2. the frame chunks are merged into ``frames.parquet`` (written to a temporary name, then renamed; the
   chunks are removed only afterwards);
3. the video is checked by decoding it; an interrupted fragmented MP4 is remuxed (packets copied, no
   re-encoding) into a regular MP4 that every player opens, ending at the last decodable frame;
4. the WAV header is patched to the audio bytes actually on disk;
5. the manifest gets ``status = "repaired"``, the real frame/video/audio figures and a repair note.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realtime.errors import BadInputError, OutputError
from realtime.session import storage
from realtime.session.recorder import (
    AUDIO,
    FRAMES,
    MANIFEST,
    STATE_COMPLETE,
    STATE_REPAIRED,
    VIDEO,
    merge_chunks,
    utc_now,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
"""``progress(step, fraction)`` with fraction in [0, 1]."""


@dataclass(slots=True)
class VideoCheck:
    frames: int
    duration_s: float | None
    error: str | None
    """Why decoding stopped early (a truncated last fragment), or None when the file decoded to its end."""


@dataclass(slots=True)
class RepairReport:
    folder: Path
    previous_status: str
    rows: int = 0
    chunks_merged: int = 0
    temp_files_removed: int = 0
    video: VideoCheck | None = None
    video_remuxed: bool = False
    audio_samples: int | None = None
    audio_header_fixed: bool = False
    notes: list[str] = field(default_factory=list)


def check_video(path: Path, progress: Callable[[int], None] | None = None) -> VideoCheck:
    """Decode every frame; a decoding error ends the check (the frames before it are counted)."""
    import av

    frames = 0
    last: float | None = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                for frame in packet.decode():
                    frames += 1
                    if frame.time is not None:
                        last = float(frame.time)
                    if progress is not None and frames % 30 == 0:
                        progress(frames)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        return VideoCheck(frames, last, str(exc) or type(exc).__name__)
    return VideoCheck(frames, last, None)


def remux_video(src: Path, dst: Path, progress: Callable[[int], None] | None = None) -> int:
    """Copy the decodable packets of ``src`` into a regular (``faststart``) MP4 ``dst``; returns frames."""
    import av

    copied = 0
    with av.open(str(src)) as inp:
        in_stream = inp.streams.video[0]
        with av.open(str(dst), mode="w", format="mp4", options={"movflags": "faststart"}) as out:
            out_stream = out.add_stream_from_template(in_stream)
            try:
                for packet in inp.demux(in_stream):
                    if packet.dts is None or packet.size == 0:
                        continue
                    # A truncated last fragment can hold a packet whose data is cut: decode-check it.
                    try:
                        packet.decode()
                    except av.error.FFmpegError:
                        break
                    packet.stream = out_stream
                    out.mux(packet)
                    copied += 1
                    if progress is not None and copied % 30 == 0:
                        progress(copied)
            except (av.error.FFmpegError, OSError) as exc:
                log.info("remux stopped at a damaged packet after %d frames: %s", copied, exc)
    return copied


def fix_wav_header(path: Path) -> tuple[int, bool]:
    """Patch the RIFF and ``data`` sizes of a 16-bit PCM WAV to the bytes on disk. Returns (samples per
    channel, whether the header changed)."""
    with path.open("r+b") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise BadInputError(f"{path} is not a WAV file")
        size = path.stat().st_size
        block_align = 2
        while True:
            pos = f.tell()
            hdr = f.read(8)
            if len(hdr) < 8:
                raise BadInputError(f"{path}: no data chunk")
            cid, clen = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(clen)
                block_align = struct.unpack("<H", fmt[12:14])[0] or 2
                continue
            if cid == b"data":
                data_start = pos + 8
                break
            f.seek(clen + (clen & 1), 1)
        data_len = (size - data_start) // block_align * block_align
        changed = data_len != clen or struct.unpack("<I", head[4:8])[0] != data_start - 8 + data_len
        if changed:
            f.seek(4)
            f.write(struct.pack("<I", data_start - 8 + data_len))
            f.seek(data_start - 4)
            f.write(struct.pack("<I", data_len))
            f.truncate(data_start + data_len)
    return data_len // block_align, changed


def _progress_fn(progress: Progress | None, step: str, total: int | None) -> Callable[[int], None]:
    def report(done: int) -> None:
        if progress is not None:
            progress(step, min(1.0, done / total) if total else 0.0)

    return report


def repair_session(path: str | Path, progress: Progress | None = None) -> RepairReport:
    """Finalise a session folder (see the module docstring). Raises ``BadInputError`` for a folder that
    is not a session and ``OutputError`` when the folder cannot be written."""
    from realtime.session.loader import read_manifest

    folder = Path(path)
    if not folder.is_dir():
        raise BadInputError(f"session folder not found: {folder}")
    manifest = read_manifest(folder)
    report = RepairReport(folder, str(manifest.get("status")))
    say = progress or (lambda step, frac: None)
    try:
        # 1. interrupted atomic writes
        pattern = "*" + storage.TMP_SUFFIX
        for tmp in [*folder.glob(pattern), *(folder / storage.CHUNK_DIR).glob(pattern)]:
            tmp.unlink()
            report.temp_files_removed += 1
        # 2. frame table
        say("frames", 0.0)
        report.chunks_merged = len(storage.list_chunks(folder))
        report.rows = merge_chunks(folder)
        say("frames", 1.0)
        # 3. video
        video = folder / VIDEO
        expected = report.rows or None
        if video.is_file() and video.stat().st_size > 0:
            check = check_video(video, _progress_fn(progress, "video check", expected))
            say("video check", 1.0)
            needs_remux = manifest.get("status") != STATE_COMPLETE or check.error is not None
            if needs_remux and check.frames > 0:
                with storage.atomic_path(video) as tmp:
                    remux_video(video, tmp, _progress_fn(progress, "video remux", check.frames))
                report.video_remuxed = True
                say("video remux", 1.0)
                check = check_video(video)
            report.video = check
            if check.frames == 0:
                report.notes.append("the video holds no decodable frame")
        elif video.exists():
            report.notes.append("the video file is empty")
            report.video = VideoCheck(0, None, "empty file")
        # 4. audio
        audio = folder / AUDIO
        if audio.is_file():
            report.audio_samples, report.audio_header_fixed = fix_wav_header(audio)
        # 5. manifest
        _update_manifest(folder, manifest, report)
        storage.write_json_atomic(folder / MANIFEST, manifest)
        say("manifest", 1.0)
    except OSError as exc:
        raise OutputError(f"cannot repair {folder}: {exc.strerror or exc}") from None
    return report


def _update_manifest(folder: Path, m: dict[str, Any], report: RepairReport) -> None:
    was_complete = report.previous_status == STATE_COMPLETE
    if not was_complete:
        m["status"] = STATE_REPAIRED
        if not m.get("stopped_utc") and m.get("started_utc"):
            with contextlib.suppress(ValueError):
                start = dt.datetime.fromisoformat(str(m["started_utc"]).replace("Z", "+00:00"))
                stop = start + dt.timedelta(seconds=float(m.get("duration_s") or 0.0))
                m["stopped_utc"] = stop.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                report.notes.append("stopped_utc estimated from the last frame written")
    frames = m.setdefault("frames", {})
    frames.update(file=FRAMES, count=report.rows, finalized=(folder / FRAMES).is_file())
    if report.rows and (folder / FRAMES).is_file():
        import pyarrow.parquet as pq

        t = pq.read_table(folder / FRAMES, columns=["session_time_s"]).column(0)
        if len(t):
            import pyarrow.compute as pc

            m["duration_s"] = round(float(pc.max(t).as_py()), 3)
    if report.video is not None:
        v = m.setdefault("video", {})
        v.update(frames_decodable=report.video.frames, duration_s=report.video.duration_s)
        if report.video_remuxed:
            v["container"] = "mp4 (remuxed by repair)"
    if report.audio_samples is not None:
        a = m.setdefault("audio", {})
        a["samples"] = report.audio_samples
        a["recorded"] = True
    m.setdefault("repairs", []).append({
        "time_utc": utc_now(), "previous_status": report.previous_status, "rows": report.rows,
        "chunks_merged": report.chunks_merged, "video_remuxed": report.video_remuxed,
        "audio_header_fixed": report.audio_header_fixed, "notes": report.notes,
    })
