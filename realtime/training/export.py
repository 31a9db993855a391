"""ONNX export of the regressors (opset 17) with the metadata the run-time needs, and a parity check.

Metadata (``metadata_props``): ``realtime_face.engine`` (name), ``realtime_face.layout`` (coefficient
sizes, JSON), ``realtime_face.crop`` (input size, crop scale and offset, JSON), ``realtime_face.face_model``,
``realtime_face.albedo_model``, ``realtime_face.input`` (a description). Input ``image``: (B, 3, S, S)
float32 RGB in [0, 1]; output ``coeffs``: (B, K) float32.

``fp16_weights=True`` stores large weight tensors as float16 with a Cast to float32 in front of their
consumers: half the file, numerically the fp32 network with rounded weights (onnxruntime folds the casts
when it loads the model, so inference still runs in fp32).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from realtime.engines.coeffs import CoefficientLayout, CropSpec

log = logging.getLogger(__name__)

OPSET = 17
ALBEDO_MODEL = "realtime.engines.albedo/v1 (10 modes)"


def export_onnx(
    net: nn.Module,
    path: Path,
    engine: str,
    layout: CoefficientLayout,
    crop: CropSpec,
    face_model: str = "ict-facekit",
    fp16_weights: bool = False,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    import onnx

    net = net.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    x = torch.zeros(1, 3, crop.input_size, crop.input_size)
    with torch.no_grad():
        torch.onnx.export(
            net,
            (x,),
            str(tmp),
            opset_version=OPSET,
            input_names=["image"],
            output_names=["coeffs"],
            dynamic_axes={"image": {0: "batch"}, "coeffs": {0: "batch"}},
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    tmp.unlink()
    if fp16_weights:
        _weights_to_fp16(model)
    meta = {
        "realtime_face.engine": engine,
        "realtime_face.layout": layout.to_json(),
        "realtime_face.crop": json.dumps(
            {"input_size": crop.input_size, "scale": crop.scale, "offset_y": crop.offset_y}
        ),
        "realtime_face.face_model": face_model,
        "realtime_face.albedo_model": ALBEDO_MODEL,
        "realtime_face.input": "image: (B, 3, S, S) float32 RGB in [0, 1]; coeffs: (B, K) float32",
        **(extra_metadata or {}),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "realtime-face"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def _weights_to_fp16(model: object, min_elements: int = 1024) -> None:
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name=name + "__fp16")
        init.CopyFrom(half)
        casts.append(
            helper.make_node(
                "Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT, name=name + "__cast"
            )
        )
    for node in reversed(casts):
        graph.node.insert(0, node)


def round_weights_fp16(net: nn.Module, min_elements: int = 1024) -> None:
    """Round the float tensors that ``fp16_weights`` stores as float16, in place (for parity checks)."""
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point() and t.numel() >= min_elements:
                t.copy_(t.half().float())


def parity(net: nn.Module, onnx_path: Path, images: np.ndarray) -> float:
    """Max |torch - onnxruntime| over a batch of (B, 3, S, S) float32 images in [0, 1]."""
    import onnxruntime as ort

    net = net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(images)).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": images.astype(np.float32)})[0]
    return float(np.abs(out - ref).max())
