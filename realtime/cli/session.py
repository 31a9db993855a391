"""``realtime-face session info|repair DIR``: inspect or finalise a recorded session folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("session", help="inspect or repair a recorded session folder",
                              description="Inspect (info) or finalise (repair) a session folder written by "
                                          "`realtime-face record`.")
    sub = p.add_subparsers(dest="session_command", metavar="SUBCOMMAND", required=True)
    info = sub.add_parser("info", help="summarise a session folder")
    info.add_argument("folder", metavar="DIR")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=info_main)
    rep = sub.add_parser("repair", help="finalise a session folder left by a killed or failed recording",
                         description="Merge the frame chunks, remux an interrupted video, fix the WAV header "
                                     "and mark the manifest as repaired. Safe to run more than once.")
    rep.add_argument("folder", metavar="DIR")
    rep.set_defaults(func=repair_main)


def summarise(folder: Path) -> dict[str, Any]:
    from realtime.session import load_session

    s = load_session(folder)
    m = s.manifest
    per_exercise: Counter[str] = Counter()
    if s.num_frames and "exercise" in s.frames.column_names:
        per_exercise.update(x for x in s.frames.column("exercise").to_pylist() if x)
    with_face = 0
    ok = 0
    if s.num_frames and "face_found" in s.frames.column_names:
        with_face = sum(bool(x) for x in s.frames.column("face_found").to_pylist())
    if s.num_frames and "quality_ok" in s.frames.column_names:
        ok = sum(bool(x) for x in s.frames.column("quality_ok").to_pylist())
    video = m.get("video") or {}
    audio = m.get("audio") or {}
    return {
        "folder": str(folder),
        "status": s.status,
        "finalized": s.finalized,
        "subject_id": s.subject_id,
        "started_utc": m.get("started_utc"),
        "stopped_utc": m.get("stopped_utc"),
        "software_version": (m.get("software") or {}).get("version"),
        "protocol": (m.get("protocol") or {}).get("name"),
        "protocol_completed": (m.get("protocol") or {}).get("completed"),
        "frames": s.num_frames,
        "frames_with_face": with_face,
        "frames_quality_ok": ok,
        "duration_s": round(s.duration_s, 3),
        "camera": m.get("camera"),
        "video": {k: video.get(k) for k in ("codec", "width", "height", "frames_written", "frames_dropped",
                                            "frames_decodable", "container") if k in video},
        "audio": {k: audio.get(k) for k in ("recorded", "samplerate", "samples", "offset_s", "reason")
                  if k in audio},
        "frames_per_exercise": dict(per_exercise),
        "error": m.get("error"),
        "problems": s.problems,
    }


def info_main(args: argparse.Namespace) -> int:
    info = summarise(Path(args.folder))
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    print(f"session   {info['folder']}")
    print(f"status    {info['status']}" + ("" if info["finalized"] else
                                          " (not finalised: run `realtime-face session repair`)"))
    print(f"subject   {info['subject_id']}   protocol {info['protocol']} "
          f"(completed: {info['protocol_completed']})   software {info['software_version']}")
    print(f"time      {info['started_utc']} -> {info['stopped_utc']}   {info['duration_s']:.1f} s")
    print(f"frames    {info['frames']} ({info['frames_with_face']} with a face, "
          f"{info['frames_quality_ok']} quality ok)")
    v = info["video"]
    print("video     " + ", ".join(f"{k} {v[k]}" for k in v))
    a = info["audio"]
    print("audio     " + (", ".join(f"{k} {a[k]}" for k in a) if a else "none"))
    if info["frames_per_exercise"]:
        print("exercises " + ", ".join(f"{k} {n}" for k, n in info["frames_per_exercise"].items()))
    if info["error"]:
        print(f"error     {info['error']}")
    for p in info["problems"]:
        print(f"problem   {p}")
    return 0


def repair_main(args: argparse.Namespace) -> int:
    from realtime.session.repair import repair_session

    last = [0.0]

    def progress(step: str, fraction: float) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] > 0.5:
            last[0] = now
            print(f"repair: {step} {100 * fraction:3.0f} %", file=sys.stderr, flush=True)

    r = repair_session(Path(args.folder), progress)
    print(f"repaired {r.folder} (was {r.previous_status}): {r.rows} frames"
          f" ({r.chunks_merged} chunks merged, {r.temp_files_removed} temporary files removed)")
    if r.video is not None:
        print(f"video: {r.video.frames} decodable frames"
              + (f", {r.video.duration_s:.2f} s" if r.video.duration_s is not None else "")
              + (" (remuxed)" if r.video_remuxed else ""))
    if r.audio_samples is not None:
        print(f"audio: {r.audio_samples} samples" + (" (header fixed)" if r.audio_header_fixed else ""))
    for note in r.notes:
        print(f"note: {note}")
    return 0
