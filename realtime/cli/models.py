"""``realtime-face models``: install and list face models.

    realtime-face models install ict-facekit [--from DIR] [--timeout S]
    realtime-face models list [--json]

``install`` downloads the public ICT-FaceKit archive from GitHub (MIT licence) and converts its
``FaceXModel/`` folder into the packed format under the models folder (``realtime.paths.models_dir()``);
``--from DIR`` converts a local ``FaceXModel/`` folder (or an extracted ICT-FaceKit checkout) instead.
Each sub-command is one ``_register_<name>(sub)`` function listed in ``SUBCOMMANDS``, so further ones
(engine building, model import) are added there.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realtime.errors import BadInputError, MissingResourceError, OutputError

log = logging.getLogger(__name__)

ICT_ARCHIVE_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
ICT_PACKED_NAME = "ict_face_model.npz"
DEFAULT_TIMEOUT_S = 30.0
INSTALLABLE = ("ict-facekit",)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="install and list face models",
                              description="Install and list the morphable face models the fitter uses.")
    sub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# --- install ---------------------------------------------------------------------------------------------

def _register_install(sub: Any) -> None:
    p = sub.add_parser("install", help="download (or convert a local copy of) a face model",
                       description="Install ICT-FaceKit: download the public GitHub archive and convert its "
                       "FaceXModel/ folder, or convert a local folder with --from.")
    p.add_argument("name", choices=INSTALLABLE)
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="DIR",
                   help="a local FaceXModel/ folder (or an ICT-FaceKit checkout containing one)")
    p.add_argument("--url", default=ICT_ARCHIVE_URL, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="network timeout in seconds (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an installed model")
    p.set_defaults(func=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    from realtime.facemodel import convert_facex_folder, load_packed_npz, write_packed_npz
    from realtime.paths import cache_dir, models_dir

    target = models_dir() / args.name / ICT_PACKED_NAME
    if target.is_file() and not args.force:
        print(f"{args.name} is already installed at {target} (use --force to replace it)")
        return 0
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="install-") as tmp:
        if args.source is not None:
            folder = find_facex_folder(args.source)
        else:
            archive = download(args.url, Path(tmp) / "ict-facekit.zip", args.timeout)
            folder = extract_facex(archive, Path(tmp) / "extracted")
        started = time.perf_counter()
        arrays = convert_facex_folder(folder)
        try:
            write_packed_npz(arrays, target)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc}") from None
        licence = next((p for p in (folder / "LICENSE", folder.parent / "LICENSE") if p.is_file()), None)
        if licence is not None:
            shutil.copyfile(licence, target.parent / "LICENSE")
    model = load_packed_npz(target, name=args.name)
    print(f"installed {args.name}: {model.n_vertices} vertices, {model.n_identity} identity modes, "
          f"{model.n_expressions} expressions -> {target} ({time.perf_counter() - started:.0f} s)")
    return 0


def find_facex_folder(source: Path) -> Path:
    """``source`` itself when it holds generic_neutral_mesh.obj, else its ``FaceXModel/`` sub-folder."""
    from realtime.facemodel import FACEX_NEUTRAL

    if not source.is_dir():
        raise BadInputError(f"not a folder: {source}")
    for cand in (source, source / "FaceXModel", *source.glob("*/FaceXModel")):
        if (cand / FACEX_NEUTRAL).is_file():
            return cand
    raise BadInputError(f"{source} contains no FaceXModel/ folder ({FACEX_NEUTRAL} not found)")


def download(url: str, dest: Path, timeout_s: float) -> Path:
    """Stream ``url`` to ``dest``; a one-line MissingResourceError when the network is unavailable."""
    hint = ("download the ICT-FaceKit archive on a connected machine and run "
            "`realtime-face models install ict-facekit --from DIR`")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, dest.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done, last = 0, time.monotonic()
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if time.monotonic() - last > 2.0:
                    log.info("  %.0f MB%s", done / 1e6, f" of {total / 1e6:.0f} MB" if total else "")
                    last = time.monotonic()
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MissingResourceError(f"cannot download {url} ({reason}); {hint}") from None
    return dest


def extract_facex(archive: Path, dest: Path) -> Path:
    """Extract only the ``FaceXModel/`` members (and the licence) of the GitHub archive."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [n for n in zf.namelist() if "/FaceXModel/" in n or n.endswith("/LICENSE")]
            if not any(n.endswith("generic_neutral_mesh.obj") for n in members):
                raise BadInputError(f"{archive} has no FaceXModel/generic_neutral_mesh.obj")
            zf.extractall(dest, members)
    except zipfile.BadZipFile as exc:
        raise BadInputError(f"downloaded archive is damaged: {exc}") from None
    return find_facex_folder(dest)


# --- list ------------------------------------------------------------------------------------------------

def _register_list(sub: Any) -> None:
    p = sub.add_parser("list", help="show installed and found face models")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_list)


def installed_models() -> list[dict[str, Any]]:
    """Every model the loaders can reach: installed ones, the shared data copy, converted-folder caches,
    and the plug-in loaders' names."""
    from realtime.facemodel import ICT_NPZ_RELATIVE, available_loaders
    from realtime.paths import cache_dir, models_dir, shared_dir

    rows: list[dict[str, Any]] = []
    root = models_dir()
    if root.is_dir():
        for f in sorted(root.glob("*/*.npz")):
            rows.append({"name": f.parent.name, "where": "installed", "path": str(f)})
    shared = shared_dir() / ICT_NPZ_RELATIVE
    if shared.is_file():
        rows.append({"name": "ict-facekit", "where": "shared data", "path": str(shared)})
    cache = cache_dir() / "models"
    if cache.is_dir():
        for f in sorted(cache.glob("facex-*.npz")):
            rows.append({"name": "ict-facekit", "where": "converted FaceXModel/ (cache)", "path": str(f)})
    for name in sorted(available_loaders()):
        if name not in {"ict-facekit", "packed"}:
            rows.append({"name": name, "where": "plug-in loader", "path": ""})
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    from realtime.facemodel import default_ict_path

    rows = installed_models()
    default = str(default_ict_path())
    for r in rows:
        r["default"] = r["path"] == default
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no face model found; run `realtime-face models install ict-facekit`")
        return 1
    for r in rows:
        mark = "*" if r["default"] else " "
        print(f"{mark} {r['name']:<14} {r['where']:<32} {r['path']}")
    return 0


def _register_engines(sub: Any) -> None:
    """``build-engines`` and ``import`` (network engines; realtime/cli/models_engines.py)."""
    from realtime.cli.models_engines import register_build_engines, register_import

    register_build_engines(sub)
    register_import(sub)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_register_install, _register_list, _register_engines)
"""Sub-command registrars; append new ones (e.g. build-engines, import) here."""
