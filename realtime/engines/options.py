"""``--engine`` for the commands that run the pipeline, and the choice of the default engine.

Default ("auto"): Deep3D on every frame when the engines run on a GPU (TensorRT or onnxruntime GPU
providers); "fit" (no network) on a CPU. Mobile-FaceRNet runs in real time on a CPU (about 2 ms per face with
one thread) but brings no accuracy to the live pipeline there: the fit stage uses an estimate only to
warm-start a cold fit, which converges to the same optimum as its own PnP start (benchmark in
``engines/mobile_facernet.md``), so on a CPU it would cost time for nothing. ``--engine mobile-facernet``
still runs it on request. ``--engine deep3d`` on a CPU runs Deep3D on keyframes only (the first frame of a
track, "keyframe" events and every 15th frame).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Any

from realtime.engines.regressors import ENGINE_CHOICES, EngineStage, engine_path
from realtime.engines.runtime import BACKENDS, probe_backend
from realtime.errors import MissingResourceError

log = logging.getLogger(__name__)

CPU_DEEP3D_INTERVAL = 15


@dataclass(frozen=True)
class EngineDecision:
    engine: str
    """"mobile-facernet", "deep3d" or "fit"."""
    interval: int
    reason: str


def decide(requested: str = "auto", backend: str = "auto") -> EngineDecision:
    """Which engine runs, on which frames, and why."""
    choice = probe_backend(backend)
    gpu = choice.backend != "onnxruntime-cpu"

    def available(name: str) -> bool:
        try:
            engine_path(name)
            return True
        except MissingResourceError:
            return False

    if requested == "fit":
        return EngineDecision("fit", 1, "landmark fitting only (requested)")
    if requested == "deep3d":
        if gpu:
            return EngineDecision("deep3d", 1, f"requested; every frame on {choice.backend}")
        return EngineDecision(
            "deep3d",
            CPU_DEEP3D_INTERVAL,
            f"requested; on the CPU Deep3D runs on keyframes only (every {CPU_DEEP3D_INTERVAL}th "
            "frame, new tracks and keyframe events)",
        )
    if requested == "mobile-facernet":
        return EngineDecision("mobile-facernet", 1, f"requested; every frame on {choice.backend}")
    if gpu and available("deep3d"):
        return EngineDecision("deep3d", 1, f"auto: {choice.backend} runs Deep3D in real time")
    if gpu:
        return EngineDecision("fit", 1, "auto: no engine file found, landmark fitting only")
    return EngineDecision(
        "fit",
        1,
        "auto: on the CPU the engines only warm-start the fit, which gains no accuracy from them "
        "(engines/mobile_facernet.md); landmark fitting only",
    )


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=("auto", *ENGINE_CHOICES),
        default="auto",
        help="regressor network that warm-starts the fit (default: deep3d on a GPU; on a CPU 'fit' = no "
        "network, since the CPU-trained engines do not improve the live fit)",
    )
    p.add_argument(
        "--engine-backend",
        choices=BACKENDS,
        default="auto",
        help="where networks run: TensorRT, onnxruntime GPU providers or the CPU (default: best)",
    )


def engine_stages_from_args(args: Any, intrinsics: Any = None) -> list[EngineStage]:
    """[] for "fit", else one ``EngineStage`` (put it between the landmark and the fit stages)."""
    if getattr(args, "no_fit", False):
        return []  # the estimate only serves as the fit's warm start
    d = decide(getattr(args, "engine", "auto"), getattr(args, "engine_backend", "auto"))
    log.info("engine: %s (%s)", d.engine, d.reason)
    if d.engine == "fit":
        return []
    if intrinsics is None:
        from realtime.cli.reconstruct import intrinsics_resolver_from_args

        intrinsics = intrinsics_resolver_from_args(args)
    return [
        EngineStage(
            d.engine,
            intrinsics=intrinsics,
            interval=d.interval,
            prefer=getattr(args, "engine_backend", "auto"),
        )
    ]
