"""MediaPipe FaceMesh tracking: 478 landmarks (with iris refinement) per face, in pixels.

We run MediaPipe's own ``face_landmark_front_cpu`` graph (the one behind ``mp.solutions.face_mesh``) through
the calculator-graph API instead of the ``FaceMesh`` wrapper, because the wrapper only returns landmarks:
observing two loop-internal streams of the same graph also gives each face's presence score (the landmark
network's face flag) at no extra cost. Thresholds are the graph's defaults (0.5 for detection and tracking,
the same as ``FaceMesh``'s defaults).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

# MediaPipe/TFLite log through glog; silence it before mediapipe is imported anywhere in the process.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from realtime.errors import MissingResourceError
from realtime.iris import measure_iris_diameters
from realtime.results import FaceResult, FaceTrack, FrameResult

log = logging.getLogger(__name__)

N_LANDMARKS = 478
_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_LANDMARKS_STREAM = "face_landmarks"  # one packet per tracked face (inside the graph's per-face loop)
_PRESENCE_STREAM = "facelandmarkcpu__face_presence_score"  # same loop timestamps as the landmarks
_CROP_SCALE = 2.5
"""Crop side / detected face box side for the small-face fallback (the mesh detector needs context)."""
_US_PER_FRAME = 33_333  # the graph needs increasing timestamps; tracking does not depend on their spacing

# A serialized NormalizedLandmark holding exactly x, y, z is 17 bytes: tag+length, then three tagged float32.
# When every landmark has that layout (always, for FaceMesh output) the list parses with one np.frombuffer.
_LANDMARK_DTYPE = np.dtype(
    [("head", "u1", (3,)), ("x", "<f4"), ("tag_y", "u1"), ("y", "<f4"), ("tag_z", "u1"), ("z", "<f4")]
)
_LANDMARK_HEAD = np.array([0x0A, 0x0F, 0x0D], np.uint8)


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """Capture fd 2 while the graph starts: TFLite/absl print banners there that glog settings do not reach.

    Used only during tracker construction (before any pipeline thread runs); the captured text is logged
    at debug level so nothing is lost.
    """
    if _filter_installed:  # the CLI's stderr filter already drops these lines, for every thread
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace").strip()
            if text:
                log.debug("mediapipe: %s", text)


# absl/glog lines ("W0000 00:00:1795251226.827193   28130 file.cc:186] ...") and TFLite banners.
_NATIVE_NOISE = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog"
    rb"|INFO: Created TensorFlow Lite)"
)
_filter_installed = False


def quiet_native_logs() -> None:
    """CLI only: drop MediaPipe's native (absl/TFLite) log lines from stderr; they go to debug logging.

    Does nothing when ``sys.stderr`` is not the process's own (e.g. under pytest's capture).

    MediaPipe 0.10.21 logs through absl, which ignores GLOG_minloglevel before ``absl::InitializeLog``, so
    e.g. a once-per-process projection warning would land between our one-line messages. File descriptor
    2 is routed through a pipe and a filter thread; Python's own ``sys.stderr`` (and the logging handlers
    using it) is pointed at the original stderr directly, so our messages never wait on that thread.
    """
    global _filter_installed
    if _filter_installed:
        return
    old = sys.stderr
    if old is not sys.__stderr__:
        # Called in-process by a host that already redirects stderr (pytest's capture, an embedding app):
        # rewiring file descriptor 2 under it would break its bookkeeping. Leave stderr alone.
        return
    if old is None:
        return
    _filter_installed = True
    old.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    new = os.fdopen(
        original,
        "w",
        buffering=1,
        encoding=getattr(old, "encoding", None) or "utf-8",
        errors="backslashreplace",
    )
    sys.stderr = new
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if _NATIVE_NOISE.match(line):
                    log.debug("native: %s", line.decode(errors="replace").rstrip())
                else:
                    os.write(original, line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


def landmarks_from_serialized(raw: bytes) -> np.ndarray | None:
    """(N, 3) float32 x, y, z from a serialized ``NormalizedLandmarkList`` when every landmark holds
    exactly x, y, z (always for FaceMesh output); None for any other layout."""
    if not raw or len(raw) % _LANDMARK_DTYPE.itemsize:
        return None
    rec = np.frombuffer(raw, dtype=_LANDMARK_DTYPE)
    if not (
        np.all(rec["head"] == _LANDMARK_HEAD)
        and np.all(rec["tag_y"] == 0x15)
        and np.all(rec["tag_z"] == 0x1D)
    ):
        return None
    out = np.empty((len(rec), 3), np.float32)
    out[:, 0] = rec["x"]
    out[:, 1] = rec["y"]
    out[:, 2] = rec["z"]
    return out


def landmarks_from_proto(landmark_list: Any) -> np.ndarray:
    """(N, 3) float32 normalised x, y, z of a ``NormalizedLandmarkList`` (vectorised parse)."""
    out = landmarks_from_serialized(landmark_list.SerializeToString())
    if out is not None and len(out) == len(landmark_list.landmark):
        return out
    # Another layout (e.g. visibility fields set): fall back to the per-point accessors.
    return np.array([(p.x, p.y, p.z) for p in landmark_list.landmark], dtype=np.float32)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceMeshTracker:
    """MediaPipe FaceMesh with ``refine_landmarks`` (478 points) in tracking (video) or static mode.

    Static mode (photos) adds a fallback for small faces (see ``_small_faces``). Not thread-safe: call
    ``track`` from one thread. Use as a context manager or call ``close()``.
    """

    def __init__(
        self, max_faces: int = 1, static: bool = False, refine: bool = True, small_face_fallback: bool = True,
        measure_iris: bool = True,
    ) -> None:
        if max_faces < 1:
            from realtime.errors import BadInputError

            raise BadInputError(f"--max-faces must be at least 1, got {max_faces}")
        self.max_faces = max_faces
        self.static = static
        self.refine = refine
        self.small_face_fallback = small_face_fallback
        self.measure_iris = measure_iris and refine
        """Measure each iris's diameter in the image (``realtime.iris``, ≈ 0.1-0.4 ms per face): the fitter's
        metric scale then rests on the limbus edges, not only on MediaPipe's iris ring."""
        self._full_range: Any = None
        self.n_landmarks = N_LANDMARKS if refine else 468
        self._timestamp_us = 0
        self._packets: dict[str, list[tuple[int, Any]]] = {_LANDMARKS_STREAM: [], _PRESENCE_STREAM: []}
        self._prev: list[FaceTrack] = []
        self._next_track_id = 1
        self._graph: Any = None
        try:
            import mediapipe as mp
            from mediapipe.framework import calculator_pb2
            from mediapipe.python import packet_creator, packet_getter
            from mediapipe.python._framework_bindings import (
                calculator_graph,
                image_frame,
                resource_util,
                validated_graph_config,
            )
        except ImportError as exc:  # pragma: no cover - mediapipe is a hard dependency
            raise MissingResourceError(f"mediapipe is not installed ({exc})") from None
        self._packet_creator = packet_creator
        self._packet_getter = packet_getter
        self._srgb = image_frame.ImageFormat.SRGB

        root = os.path.dirname(os.path.dirname(os.path.abspath(mp.__file__)))
        graph_path = os.path.join(root, _GRAPH)
        if not os.path.isfile(graph_path):
            raise MissingResourceError(f"MediaPipe face mesh graph not found: {graph_path}")
        resource_util.set_resource_dir(root)
        validated = validated_graph_config.ValidatedGraphConfig()
        validated.initialize(binary_graph_path=graph_path)
        config = calculator_pb2.CalculatorGraphConfig()
        config.ParseFromString(validated.binary_config)  # subgraphs expanded: internal streams are visible

        def collect(stream: str, packet: Any) -> None:
            self._packets[stream].append((packet.timestamp.value, packet))

        with _stderr_to_log():
            graph = calculator_graph.CalculatorGraph(graph_config=config)
            for stream in self._packets:
                graph.observe_output_stream(stream, collect, False)
            graph.start_run(
                {
                    "num_faces": packet_creator.create_int(max_faces),
                    "with_attention": packet_creator.create_bool(refine),
                    "use_prev_landmarks": packet_creator.create_bool(not static),
                }
            )
            self._graph = graph
            # The first frame opens the TFLite interpreters (and prints their banners): do it now.
            self._run(np.zeros((64, 64, 3), np.uint8))
        for packets in self._packets.values():
            packets.clear()

    def _run(self, image_rgb: np.ndarray) -> None:
        self._timestamp_us += _US_PER_FRAME
        packet = self._packet_creator.create_image_frame(image_format=self._srgb, data=image_rgb)
        self._graph.add_packet_to_input_stream(stream="image", packet=packet.at(self._timestamp_us))
        self._graph.wait_until_idle()

    def track(self, image_rgb: np.ndarray) -> list[FaceTrack]:
        """Faces in an RGB uint8 image, in MediaPipe's order (at most ``max_faces``)."""
        if self._graph is None:
            raise RuntimeError("FaceMeshTracker is closed")
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}"
            )
        faces = self._mesh(np.ascontiguousarray(image_rgb))
        if not faces and self.static and self.small_face_fallback:
            faces = self._small_faces(image_rgb)
        self._assign_track_ids(faces)
        if self.measure_iris:
            for face in faces:
                face.iris_diameter_px = measure_iris_diameters(image_rgb, face.landmarks_px)
        return faces

    def _mesh(self, image_rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[FaceTrack]:
        """Run the face mesh graph; landmarks in pixels of ``image_rgb`` shifted by ``offset``."""
        for packets in self._packets.values():
            packets.clear()
        self._run(image_rgb)
        h, w = image_rgb.shape[:2]
        scores = {ts: self._packet_getter.get_float(p) for ts, p in self._packets[_PRESENCE_STREAM]}
        scale = np.array([w, h, w], np.float32)  # z is relative depth in units of the image width
        faces: list[FaceTrack] = []
        for ts, packet in self._packets[_LANDMARKS_STREAM]:
            pts = self._landmarks(packet)
            pts *= scale
            if offset != (0, 0):
                pts[:, 0] += offset[0]
                pts[:, 1] += offset[1]
            lo = pts[:, :2].min(axis=0)
            hi = pts[:, :2].max(axis=0)
            box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
            faces.append(FaceTrack(landmarks_px=pts, presence=float(scores.get(ts, 1.0)), box_px=box))
        return faces

    def _landmarks(self, packet: Any) -> np.ndarray:
        """Normalised (478, 3) landmarks of one packet. Reading the packet's serialized bytes directly
        (MediaPipe's own ``get_proto`` parses them into a Python message first) saves ~0.16 ms a face."""
        raw_getter = getattr(self._packet_getter, "_packet_getter", None)
        if raw_getter is not None:
            pts = landmarks_from_serialized(raw_getter._get_serialized_proto(packet))
            if pts is not None:
                return pts
        return landmarks_from_proto(self._packet_getter.get_proto(packet))

    def _small_faces(self, image_rgb: np.ndarray) -> list[FaceTrack]:
        """Photos: FaceMesh's own detector is short-range (faces filling much of the image). When it finds
        nothing, MediaPipe's full-range detector looks for smaller faces and the mesh runs on a crop
        around each."""
        if self._full_range is None:
            import mediapipe as mp

            with _stderr_to_log():
                self._full_range = mp.solutions.face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=0.5
                )
        detections = self._full_range.process(image_rgb).detections or []
        h, w = image_rgb.shape[:2]
        faces: list[FaceTrack] = []
        for det in detections[: self.max_faces]:
            b = det.location_data.relative_bounding_box
            cx, cy = (b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h
            half = max(b.width * w, b.height * h) * _CROP_SCALE / 2
            x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
            x1, y1 = min(w, int(cx + half)), min(h, int(cy + half))
            if x1 - x0 < 16 or y1 - y0 < 16:
                continue
            crop = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
            found = self._mesh(crop, offset=(x0, y0))
            if found:
                faces.append(found[0])
        return faces

    def _assign_track_ids(self, faces: list[FaceTrack]) -> None:
        """Keep a face's id while its box overlaps the previous frame's box; new ids for new faces."""
        unused = list(self._prev) if not self.static else []
        for face in faces:
            best, best_iou = None, 0.3
            for prev in unused:
                overlap = _iou(face.box_px, prev.box_px)
                if overlap > best_iou:
                    best, best_iou = prev, overlap
            if best is not None:
                face.track_id = best.track_id
                unused.remove(best)
            else:
                face.track_id = self._next_track_id
                self._next_track_id += 1
        self._prev = faces

    def reset(self) -> None:
        """Forget the tracked faces (the next frame runs the detector again)."""
        if self._graph is not None:
            self._graph.close()
            self._graph.start_run(
                {
                    "num_faces": self._packet_creator.create_int(self.max_faces),
                    "with_attention": self._packet_creator.create_bool(self.refine),
                    "use_prev_landmarks": self._packet_creator.create_bool(not self.static),
                }
            )
        self._prev = []

    def close(self) -> None:
        if self._full_range is not None:
            self._full_range.close()
            self._full_range = None
        if self._graph is not None:
            graph, self._graph = self._graph, None
            graph.close()

    def __enter__(self) -> FaceMeshTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LandmarkStage:
    """Pipeline stage: fills ``result.faces`` with one ``FaceResult`` per tracked face."""

    name = "landmarks"

    def __init__(
        self, max_faces: int = 1, static: bool = False, tracker: FaceMeshTracker | None = None
    ) -> None:
        self.tracker = tracker if tracker is not None else FaceMeshTracker(max_faces=max_faces, static=static)

    def process(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        tracks = self.tracker.track(result.frame.image)
        result.faces = [FaceResult(track=t) for t in tracks]
        result.timings_ms[self.name] = (time.perf_counter() - t0) * 1000.0

    def close(self) -> None:
        self.tracker.close()
