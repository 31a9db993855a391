"""The video encoder process (``python -m realtime.session.encoder``): H.264 into a fragmented MP4.

Why a process: PyAV holds the GIL while it converts and encodes, which would stall the live pipeline's
Python code for several milliseconds per 720p frame on a two-core machine. The parent (``video.py``)
copies each RGB frame into a slot of a shared-memory file and sends ``(slot, pts)`` on our stdin; we
convert, encode and mux it, then return the slot on stdout. When stdin closes (a clean stop, or the
parent was killed) we flush the encoder and write the last fragment, so even ``kill -9`` of the app
loses nothing that reached us. SIGINT is ignored: a Ctrl-C in the terminal reaches the whole process
group, and the parent decides when the recording ends.

Messages (little-endian), parent -> child:
  ``S`` u32 width, u32 height, u32 slots, u16 path length, path bytes   set-up (once, before frames)
  ``F`` u32 slot, i64 pts_ms                                             encode the frame in ``slot``
child -> parent:
  ``A`` u32 slot                                                         frame written, slot free again
  ``D`` i64 frames, i64 last pts_ms                                      done (after stdin closed)
  ``E`` u32 length, utf-8 message                                        failed (then exits 1)
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import signal
import struct
import sys
from fractions import Fraction
from typing import BinaryIO

import numpy as np

TIME_BASE = Fraction(1, 1000)
HDR_S = struct.Struct("<IIIH")
HDR_F = struct.Struct("<Iq")
MSG_A = struct.Struct("<I")
MSG_D = struct.Struct("<qq")
MSG_E = struct.Struct("<I")


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class _Replies:
    """Our stdout to the parent; once the parent is gone (killed), replies are dropped and we carry on
    encoding what is still in the pipe and the shared slots."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.parent_gone = False

    def send(self, data: bytes) -> None:
        if self.parent_gone:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except OSError:  # BrokenPipeError
            self.parent_gone = True


def run(args: argparse.Namespace, inp: BinaryIO, out: BinaryIO, sigterm: _SigtermState | None = None) -> int:
    import av
    import cv2

    cv2.setNumThreads(1)  # one core's worth at most: the live pipeline has priority

    replies = _Replies(out)
    term = sigterm or _SigtermState()
    container = None
    stream = None
    slots: np.ndarray | None = None
    yuv: np.ndarray | None = None
    written = 0
    last_pts = -1
    try:
        while True:
            # SIGTERM ends us only here, between frames, so no half-encoded frame is lost.
            term.waiting = True
            if term.received:
                raise _Terminate
            kind = _read_exact(inp, 1)
            term.waiting = False
            if kind is None:
                break
            if kind == b"S":
                hdr = _read_exact(inp, HDR_S.size)
                if hdr is None:
                    break
                w, h, n, plen = HDR_S.unpack(hdr)
                path = (_read_exact(inp, plen) or b"").decode()
                fd = os.open(path, os.O_RDONLY)
                try:
                    mm = mmap.mmap(fd, w * h * 3 * n, prot=mmap.PROT_READ)
                finally:
                    os.close(fd)
                # Mapped: remove the name now so nothing is left in /dev/shm however either side ends.
                with contextlib.suppress(OSError):
                    os.unlink(path)
                slots = np.frombuffer(mm, np.uint8).reshape(n, h, w, 3)
                yuv = np.empty((h * 3 // 2, w), np.uint8)  # reused: no per-frame allocation
                container = av.open(args.output, mode="w", format="mp4", options={
                    "movflags": "empty_moov+default_base_moof",
                    "frag_duration": str(args.fragment_us),
                    "flush_packets": "1",
                })
                stream = container.add_stream(args.codec, rate=round(args.fps))
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv420p"
                stream.codec_context.time_base = TIME_BASE
                stream.time_base = TIME_BASE
                stream.codec_context.gop_size = args.gop
                if args.codec == "libx264":
                    # zerolatency: no look-ahead, so each frame is muxed as soon as it is encoded.
                    stream.codec_context.options = {"preset": args.preset, "tune": "zerolatency",
                                                     "crf": str(args.crf), "threads": str(args.threads)}
                else:
                    stream.codec_context.bit_rate = args.bitrate
                    stream.codec_context.thread_count = args.threads
            elif kind == b"F":
                hdr = _read_exact(inp, HDR_F.size)
                if hdr is None:
                    break
                slot, pts = HDR_F.unpack(hdr)
                if container is None or stream is None or slots is None or yuv is None:
                    raise RuntimeError("frame before set-up")
                # OpenCV's RGB -> I420 is BT.601 limited range like swscale's default, at 1/4 of its cost.
                cv2.cvtColor(slots[slot], cv2.COLOR_RGB2YUV_I420, dst=yuv)
                replies.send(b"A" + MSG_A.pack(slot))  # the pixels are copied: the slot is free again
                frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                frame.pts = pts
                frame.time_base = TIME_BASE
                for packet in stream.encode(frame):
                    container.mux(packet)
                written += 1
                last_pts = pts
            else:
                raise RuntimeError(f"bad message {kind!r}")
        if container is not None and stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
            container.close()
            container = None
        replies.send(b"D" + MSG_D.pack(written, last_pts))
        return 0
    except _Terminate:
        # SIGTERM (e.g. the whole process group is being stopped): end the file cleanly with what we have.
        if container is not None and stream is not None:
            with contextlib.suppress(Exception):
                for packet in stream.encode(None):
                    container.mux(packet)
        return 0
    except Exception as exc:  # disk full, read-only folder, codec failure: report in one line
        msg = f"{type(exc).__name__}: {exc}".encode()
        replies.send(b"E" + MSG_E.pack(len(msg)) + msg)
        return 1
    finally:
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()


class _Terminate(Exception):
    pass


class _SigtermState:
    received = False
    waiting = False
    """True while blocked reading the next message: the handler may interrupt the read."""


    def handler(self, signum: int, frame: object) -> None:
        self.received = True
        if self.waiting:
            raise _Terminate


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sigterm = _SigtermState()
    signal.signal(signal.SIGTERM, sigterm.handler)
    ap = argparse.ArgumentParser(prog="python -m realtime.session.encoder")
    ap.add_argument("output")
    ap.add_argument("--codec", default="libx264")
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gop", type=int, default=30)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--bitrate", type=int, default=4_000_000)
    ap.add_argument("--fragment-us", type=int, default=250_000)
    ap.add_argument("--nice", type=int, default=10, help="scheduling niceness increment (default 10)")
    args = ap.parse_args(argv)
    # Import the heavy modules before lowering our priority: a niced start-up on a loaded machine can take
    # seconds, while the first frames of the recording wait in the slots (and beyond them, are dropped).
    import av  # noqa: F401
    import cv2  # noqa: F401

    if args.nice:
        # Below the live pipeline: the slots in front of us absorb bursts; the live view must not stutter.
        with contextlib.suppress(OSError):
            os.nice(args.nice)
    # Linux SCHED_BATCH: same CPU share as the niceness gives, but waking up for a frame never preempts a
    # running thread of the live pipeline (we only need throughput, not latency).
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    return run(args, sys.stdin.buffer, sys.stdout.buffer, sigterm)


if __name__ == "__main__":
    raise SystemExit(main())
