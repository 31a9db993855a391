"""Fusion of a regressor's estimate with the landmark fit, with a weight that grows with |yaw|.

Why: at large yaw the landmark fit is worse than no fit at all on shape. Measured on 30 synthetic renders
(512 px, real MediaPipe, ``FitOptions.single_image()``, the fitter before its landmark prior): MediaPipe's
2D error on the true surface points grows from a median of 2.3 px (|yaw| < 30°) to 6.6 px (45–75°, p90
14 px) because the far-side points are hallucinated; fitted to them, the identity part of the model-space
error is 4.8 mm against 4.0 mm for the mean face, and the fitted expressions add 2.7 mm of error where
all-zero weights add 1.0 mm. The fit's *pose* stays good (rotation error 8° at 45–60° against 17° for
Mobile-FaceRNet), so only the shape coefficients are fused.

The fused coefficients are a fixed-ratio posterior mean of two estimates,

    c = (1 − w)·c_fit + w·c_engine,    w(|yaw|) = w_max · smoothstep((|yaw| − yaw_start) / (yaw_full − yaw_start)),

separately for identity and expression (both are linear in the mesh, so this is also the vertex-space
blend). ``w_max`` and the yaw ramp are calibrated per engine file on renders disjoint from the training and
the benchmark sets (``tools/calibrate_fusion.py``) and stored beside the engine as
``<engine>.fusion.json`` with the ONNX file's SHA-256: another network file (e.g. an imported Deep3D) has
no calibration and is not fused. The yaw is the fit's. A locked identity (many frontal frames) is kept.
The same blend towards zero coefficients (the mean face), calibrated the same way, is the no-network
baseline the benchmark prints beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from realtime.camera import Intrinsics
from realtime.errors import BadInputError
from realtime.results import EngineEstimate, FaceFit, FrameResult

if TYPE_CHECKING:
    from realtime.fitting import IntrinsicsResolver, MeshBuilder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionPolicy:
    """Weight of the engine's identity/expression in the fused estimate, as a function of |yaw|."""

    identity_weight: float = 0.0
    """w_max for identity (reached at ``yaw_full_deg``)."""
    expression_weight: float = 0.0
    """w_max for the expression weights."""
    yaw_start_deg: float = 30.0
    """Below this |yaw| the fit is used as it is."""
    yaw_full_deg: float = 60.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.identity_weight <= 1.0 and 0.0 <= self.expression_weight <= 1.0):
            raise BadInputError("fusion weights must lie in [0, 1]")
        if not self.yaw_full_deg > self.yaw_start_deg >= 0.0:
            raise BadInputError("fusion yaw ramp needs 0 <= yaw_start_deg < yaw_full_deg")

    def ramp(self, yaw_deg: float) -> float:
        """smoothstep in [0, 1] of |yaw| between the two ramp ends."""
        t = (abs(float(yaw_deg)) - self.yaw_start_deg) / (self.yaw_full_deg - self.yaw_start_deg)
        t = min(max(t, 0.0), 1.0)
        return t * t * (3.0 - 2.0 * t)

    def weights(self, yaw_deg: float) -> tuple[float, float]:
        """(identity, expression) weights of the engine at this yaw."""
        r = self.ramp(yaw_deg)
        return self.identity_weight * r, self.expression_weight * r

    @property
    def active(self) -> bool:
        return self.identity_weight > 0.0 or self.expression_weight > 0.0


def fuse_coefficients(
    fit_identity: np.ndarray,
    fit_expression: np.ndarray,
    engine_identity: np.ndarray,
    engine_expression: np.ndarray,
    yaw_deg: float,
    policy: FusionPolicy,
    identity_locked: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused (identity, expression); a locked identity is returned unchanged."""
    w_id, w_exp = policy.weights(yaw_deg)
    if identity_locked:
        w_id = 0.0
    fi = np.asarray(fit_identity, np.float64)
    fe = np.asarray(fit_expression, np.float64)
    identity = fi + w_id * (np.asarray(engine_identity, np.float64) - fi)
    expression = fe + w_exp * (np.asarray(engine_expression, np.float64) - fe)
    return identity, np.clip(expression, 0.0, 1.0)


def fuse_fit(
    fit: FaceFit,
    estimate: EngineEstimate,
    policy: FusionPolicy,
    mesher: MeshBuilder,
    intrinsics: Intrinsics,
    mesh: bool = True,
) -> FaceFit:
    """The fit with its identity/expression fused with the engine's (same pose, residual, confidence);
    ``fit`` itself when the weights are 0 at its yaw."""
    yaw = fit.pose.euler_deg()[0]
    w_id, w_exp = policy.weights(yaw)
    if w_exp <= 0.0 and (w_id <= 0.0 or fit.identity_locked):
        return fit
    identity, expression = fuse_coefficients(
        fit.identity, fit.expression, estimate.identity, estimate.expression, yaw, policy, fit.identity_locked
    )
    return mesher.make_fit(
        intrinsics,
        identity,
        expression,
        fit.pose.rotation,
        fit.pose.translation_mm,
        fit.residual_px,
        fit.confidence,
        fit.identity_locked,
        fit.scale_source,
        mesh=mesh,
    )


# --- calibration files ---------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def policy_path(engine_file: Path) -> Path:
    """``engines/mobile_facernet.onnx`` -> ``engines/mobile_facernet.fusion.json``."""
    return engine_file.with_suffix(".fusion.json")


def save_policy(engine_file: Path, policy: FusionPolicy, calibration: dict[str, object]) -> Path:
    out = policy_path(engine_file)
    doc = {"onnx_sha256": file_sha256(engine_file), "policy": asdict(policy), "calibration": calibration}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return out


def load_policy(engine_file: Path) -> FusionPolicy | None:
    """The calibrated policy of this exact engine file; None when there is none or it belongs to another
    file (a retrained or imported network must be calibrated again)."""
    p = policy_path(engine_file)
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text())
        policy = FusionPolicy(**doc["policy"])
        sha = str(doc["onnx_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{p}: not a fusion calibration file ({exc})") from None
    if sha != file_sha256(engine_file):
        log.warning("%s was calibrated for another %s: engine not fused", p.name, engine_file.name)
        return None
    return policy


class FusionStage:
    """Pipeline stage "fuse" (between "fit" and "smooth"): replaces ``FaceResult.fit`` by the fused fit
    where the frame's face has an engine estimate and the fit's |yaw| is on the policy's ramp."""

    name = "fuse"

    def __init__(
        self, policy: FusionPolicy, mesher: MeshBuilder, intrinsics: IntrinsicsResolver, mesh: bool = True
    ) -> None:
        self.policy = policy
        self.mesher = mesher
        self.intrinsics = intrinsics
        self.mesh = mesh

    def process(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        intr = self.intrinsics.for_size(result.frame.width, result.frame.height)
        for face in result.faces:
            if face.fit is not None and face.engine is not None:
                face.fit = fuse_fit(face.fit, face.engine, self.policy, self.mesher, intr, self.mesh)
        result.timings_ms[self.name] = (time.perf_counter() - t0) * 1000.0

    def close(self) -> None:
        pass


def fusion_stage_for(
    engine: str, mesher: MeshBuilder, intrinsics: IntrinsicsResolver, mesh: bool = True
) -> FusionStage | None:
    """The "fuse" stage for an engine's file when it has a current calibration, else None (for "fit", an
    uncalibrated/imported network, or a missing file). Put it right after the fit stage."""
    from realtime.engines.regressors import ENGINE_FILES, engine_path

    if engine not in ENGINE_FILES:
        return None
    from realtime.errors import MissingResourceError

    try:
        policy = load_policy(engine_path(engine))
    except MissingResourceError:
        return None
    if policy is None or not policy.active:
        return None
    return FusionStage(policy, mesher, intrinsics, mesh)
