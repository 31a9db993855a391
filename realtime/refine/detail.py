"""DECA-style fast detail: a small network maps the UV-unwrapped face texture to a UV displacement map.

Trained by ``tools/train_detail.py`` (distilled from the shape-from-shading displacement maps), shipped as
``engines/detail_uv.onnx`` with its model card ``engines/detail_uv.json``, and run with onnxruntime on one
CPU thread. Unlike DECA's image encoder, the input is the texture unwrapped with the coarse fit, so the
network sees every face in the same layout (UV-space input as in the position-map work of paper 004).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.camera import Intrinsics
from realtime.errors import MissingResourceError
from realtime.facemodel import MorphableModel
from realtime.paths import engines_dir
from realtime.refine.export import visible_depth
from realtime.refine.uv import UVAtlas, View, unwrap_texture

DETAIL_ENGINE = "detail_uv.onnx"


@dataclass(frozen=True, slots=True)
class FastDetail:
    displacement_uv: np.ndarray
    """(S, S) float32 mm along the outward normal, in the atlas layout (S = the atlas size)."""
    texture_uv: np.ndarray
    timings_ms: dict[str, float]


class DetailNetwork:
    """onnxruntime session of the detail network (CPU, one thread)."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else engines_dir() / DETAIL_ENGINE
        if not self.path.is_file():
            raise MissingResourceError(f"detail network not found at {self.path} (train it with "
                                       "tools/train_detail.py)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_size = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else 128

    def predict(self, texture_uv: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 UV texture (any S) -> (input_size, input_size) float32 displacement in mm."""
        import cv2

        t = texture_uv
        if t.shape[0] != self.input_size:
            t = cv2.resize(t, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
        x = np.ascontiguousarray(t.transpose(2, 0, 1)[None], dtype=np.float32)
        out = self.session.run(None, {self.input_name: x})[0]
        return np.asarray(out[0], dtype=np.float32)

    def card_metrics(self) -> dict[str, object]:
        card = self.path.with_suffix(".json")
        if not card.is_file():
            return {}
        data = json.loads(card.read_text())
        metrics = data.get("metrics", {})
        return dict(metrics) if isinstance(metrics, dict) else {}


def fast_detail(net: DetailNetwork, image: np.ndarray, vertices_mm: np.ndarray, model: MorphableModel,
                intrinsics: Intrinsics, atlas: UVAtlas, net_atlas: UVAtlas | None = None,
                max_side: int = 400) -> FastDetail:
    """Unwrap ``image`` with the camera-space mesh and predict the displacement map (network only, no SFS).

    The unwrapping runs at the network's resolution: the image is scaled to at most ``max_side`` pixels and
    the texture is sampled straight into a ``net.input_size`` atlas (pass it as ``net_atlas`` to reuse it).
    """
    import cv2

    t0 = time.perf_counter()
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    k = intrinsics
    img = image
    if scale < 1.0:
        sw, sh = max(round(w * scale), 1), max(round(h * scale), 1)
        img = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        k = intrinsics.scaled(sw, sh)
    small = net_atlas if net_atlas is not None and net_atlas.size == net.input_size else UVAtlas.build(
        model, net.input_size)
    verts = np.asarray(vertices_mm, np.float64)
    depth = visible_depth(verts, model.triangles, k.width, k.height, k.project)
    tex, _ = unwrap_texture(small, [View(img, verts, k, depth)], model.triangles)
    t1 = time.perf_counter()
    disp = net.predict(tex)
    t2 = time.perf_counter()
    if disp.shape[0] != atlas.size:
        disp = cv2.resize(disp, (atlas.size, atlas.size), interpolation=cv2.INTER_LINEAR)
    disp = np.where(atlas.mask, disp, 0.0).astype(np.float32)
    return FastDetail(disp, tex, {"unwrap": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                                  "total": (time.perf_counter() - t0) * 1e3})
