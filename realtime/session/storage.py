"""Crash-safe file primitives of a session folder.

Everything a reader may open is either complete or absent: JSON and Parquet files are written to a
temporary name, fsynced and renamed over the final name (rename is atomic on POSIX), so a ``kill -9`` or a
full disk can leave a stray ``*.tmp`` file but never a half-written manifest or chunk. Media streams that
grow (video, audio) are written in self-describing pieces instead (MP4 fragments, a WAV header patched on
every flush), see ``video.py`` and ``audio.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TMP_SUFFIX = ".tmp"
CHUNK_DIR = "frames"
CHUNK_RE = re.compile(r"^chunk_(\d{6})\.parquet$")


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems do not support it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed over ``final``.

    On any exception the temporary file is removed (when possible) and ``final`` is untouched.
    """
    tmp = final.with_name(final.name + TMP_SUFFIX)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
        if durable:
            fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()  # type: ignore[attr-defined]
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_parquet_atomic(path: Path, table: pa.Table, durable: bool = True) -> None:
    # zstd: landmark columns compress ~2x at negligible CPU cost; one row group per chunk file.
    with atomic_path(path, durable=durable) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=1)


def chunk_path(folder: Path, index: int) -> Path:
    return folder / CHUNK_DIR / f"chunk_{index:06d}.parquet"


def list_chunks(folder: Path) -> list[Path]:
    """The complete chunk files of a session folder in write order (temporary files are ignored)."""
    d = folder / CHUNK_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CHUNK_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def read_chunks(paths: list[Path]) -> tuple[pa.Table | None, list[str]]:
    """Concatenate chunk files; unreadable ones are skipped and reported (they cannot be partial, but a
    disk error may still have damaged one)."""
    tables: list[pa.Table] = []
    problems: list[str] = []
    for p in paths:
        try:
            tables.append(pq.read_table(p))
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{p.name}: {exc}")
    if not tables:
        return None, problems
    return pa.concat_tables(tables, promote_options="permissive"), problems
