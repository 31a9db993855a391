"""``realtime-face report SESSION [--compare OLDER ...] [--out report.html] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="clinical left/right report of a recorded session (HTML + JSON)",
        description="Measure a recorded session (folder from `realtime-face record`, or a per-frame .parquet "
                    "table) and write a self-contained HTML report and a JSON summary.")
    p.add_argument("session", help="session folder or per-frame .parquet table")
    p.add_argument("--compare", nargs="+", default=[], metavar="OLDER",
                   help="earlier sessions of the same subject, for the progress section")
    p.add_argument("--out", type=Path, default=None,
                   help="HTML file to write (default: SESSION/report.html; the JSON goes beside it)")
    p.add_argument("--json", action="store_true", help="also print the JSON summary to stdout")
    p.add_argument("--no-renders", action="store_true", help="skip the heatmap renders (no OpenGL needed)")
    p.add_argument("--no-video-evidence", action="store_true",
                   help="measure the cheek puff from the live fit only (skips re-measuring it from the "
                        "session video's shading, which takes a few seconds per repetition)")
    p.set_defaults(func=run)


def default_output(session: Path) -> Path:
    if session.is_dir():
        return session / "report.html"
    return session.with_name(session.stem + ".report.html")


def run(args: argparse.Namespace) -> int:
    from realtime.clinical.report import make_report
    from realtime.facemodel import load_face_model

    session = Path(args.session)
    out = args.out if args.out is not None else default_output(session)
    model = load_face_model()
    result = make_report(session, model, out, compare=args.compare, renders=not args.no_renders,
                         video_evidence=not args.no_video_evidence)
    if args.json:
        json.dump(result.data, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(result.analysis.affected.statement)
        print(f"report: {result.html_path}")
        print(f"json:   {result.json_path}")
    return 0
