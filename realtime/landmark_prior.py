"""Learned landmark prior: expression and identity regressed from MediaPipe's 478 points by a small MLP.

Why: MediaPipe's points slide over the skin as the face moves and respond only partly to an expression (on
renders of the model a full one-sided blink moves its lid points about half way), so a least-squares fit of
the morphable model to them alone under-reads every expression and confuses those that move the same points
(a blink, a downward gaze and a squint all lower the upper lid). A regressor trained on renders of the model
through the real MediaPipe learns that response and its ambiguities. The fitter uses its output as the
*centre* of its expression and identity priors (``FitOptions.landmark_prior``): the landmarks still decide
the pose and every expression they clearly show; where they are ambiguous the fit falls back on the
regressor instead of on zero.

Inputs are pose- and scale-free: the 468 surface points are aligned to a template by a similarity
Procrustes, the iris points are taken relative to their eye corners, and the alignment's rotation and the
iris size in template units (the only absolute-size cue) are appended. Trained by
``tools/train_landmark_prior.py``; the weights ship as ``realtime/data/landmark_prior_<model>.npz``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.special import expit

from realtime.errors import MissingResourceError
from realtime.paths import data_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
N_SURFACE = 468
_EYE_CORNERS = ((33, 133), (362, 263))        # subject's right eye, left eye
_IRIS = (np.arange(468, 473), np.arange(473, 478))
_IRIS_CHORDS = ((469, 471), (470, 472), (474, 476), (475, 477))


def align_to_template(landmarks: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity-align (B, 478, 3) landmark sets to a centred (468, 3) template by their 468 surface points.

    Returns the aligned (B, 478, 3) points (irises moved with the face), the scale (B,) that maps the input
    to template units and the rotation (B, 3, 3) (``aligned = scale · (x − centre) @ rotation``).
    """
    x = np.asarray(landmarks, np.float64)
    surf = x[:, :N_SURFACE]
    centre = surf.mean(axis=1, keepdims=True)
    xc = surf - centre
    m = np.einsum("bla,lc->bac", xc, template)
    u, s, vt = np.linalg.svd(m)
    det = np.sign(np.linalg.det(u @ vt))
    s[:, 2] *= det
    u[:, :, 2] *= det[:, None]
    rotation = u @ vt
    scale = s.sum(axis=1) / np.einsum("blc,blc->b", xc, xc)
    aligned = scale[:, None, None] * ((x - centre) @ rotation)
    return aligned, scale, rotation


def features(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(B, 478, 3) MediaPipe landmarks (px, relative depth px) -> (B, F) regressor inputs (float32)."""
    x = np.asarray(landmarks, np.float64)
    if x.ndim == 2:
        x = x[None]
    b = x.shape[0]
    aligned, scale, rotation = align_to_template(x, template)
    shape = (aligned[:, :N_SURFACE] - template).reshape(b, -1)
    irises = [aligned[:, ids] - aligned[:, list(corners)].mean(axis=1, keepdims=True)
              for ids, corners in zip(_IRIS, _EYE_CORNERS, strict=True)]
    chords = np.stack([np.linalg.norm(x[:, i, :2] - x[:, j, :2], axis=1) for i, j in _IRIS_CHORDS], axis=1)
    iris_size = np.log(np.maximum(chords * scale[:, None], 1e-3))
    return np.concatenate([shape, np.concatenate(irises, axis=1).reshape(b, -1), rotation.reshape(b, 9),
                           iris_size], axis=1).astype(np.float32)


@dataclass(frozen=True, eq=False)
class LandmarkPrior:
    """The trained regressor: ``predict(landmarks) -> LandmarkEstimate``."""

    template: np.ndarray
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    """MLP (GELU between layers) -> expression logits."""
    identity_map: tuple[np.ndarray, np.ndarray]
    """Ridge regression (F, K) and bias (K,) -> identity coefficients (measured better than an MLP head)."""
    n_expressions: int
    n_identity: int
    expression_sd: np.ndarray
    """(E,) held-out residual standard deviation of each expression weight (prior width in the fit)."""
    identity_sd: np.ndarray
    """(K,) held-out residual standard deviation of each identity coefficient."""
    model_name: str = ""
    topology: str = ""
    source: str = ""

    def predict(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(478, 3) or (B, 478, 3) landmarks -> expression (B, E) in [0, 1] and identity (B, K)."""
        x = (features(landmarks, self.template) - self.feature_mean) * self.feature_scale
        h = x
        last = len(self.layers) - 1
        for i, (w, bias) in enumerate(self.layers):
            h = h @ w + bias
            if i < last:
                h = _gelu(h)
        expression = np.clip(expit(h) * 1.1 - 0.05, 0.0, 1.0)
        return expression, x @ self.identity_map[0] + self.identity_map[1]

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION), "template": self.template.astype(np.float32),
            "feature_mean": self.feature_mean.astype(np.float32),
            "feature_scale": self.feature_scale.astype(np.float32),
            "n_expressions": np.array(self.n_expressions), "n_identity": np.array(self.n_identity),
            "expression_sd": self.expression_sd.astype(np.float32),
            "identity_sd": self.identity_sd.astype(np.float32),
            "model_name": np.array(self.model_name), "topology": np.array(self.topology),
            "source": np.array(self.source), "n_layers": np.array(len(self.layers)),
            "identity_w": self.identity_map[0].astype(np.float16),
            "identity_b": self.identity_map[1].astype(np.float32),
        }
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"] = w.astype(np.float16)   # half the file; inference runs in float32
            arrays[f"b{i}"] = b.astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LandmarkPrior:
        try:
            z = np.load(path)
        except (OSError, ValueError) as exc:
            raise MissingResourceError(f"cannot read the landmark prior {path}: {exc}") from exc
        with z:
            if int(z["format_version"]) != FORMAT_VERSION:
                raise MissingResourceError(f"{path}: landmark prior format {int(z['format_version'])}, this "
                                           f"version reads {FORMAT_VERSION}; retrain it")
            layers = tuple((z[f"w{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32))
                           for i in range(int(z["n_layers"])))
            return cls(template=z["template"].astype(np.float64), feature_mean=z["feature_mean"],
                       feature_scale=z["feature_scale"], layers=layers,
                       identity_map=(z["identity_w"].astype(np.float32), z["identity_b"].astype(np.float32)),
                       n_expressions=int(z["n_expressions"]),
                       n_identity=int(z["n_identity"]), expression_sd=z["expression_sd"].astype(np.float64),
                       identity_sd=z["identity_sd"].astype(np.float64), model_name=str(z["model_name"]),
                       topology=str(z["topology"]), source=str(path))


def _gelu(x: np.ndarray) -> np.ndarray:
    # tanh approximation (torch.nn.GELU(approximate="tanh")), the form the tool trains with
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def default_path(model_name: str) -> Path:
    return data_dir() / f"landmark_prior_{model_name}.npz"


@lru_cache(maxsize=4)
def load_landmark_prior(model_name: str, topology: str | None = None) -> LandmarkPrior | None:
    """The shipped prior for a model, or None when there is none (a user's own model: the fit runs without)."""
    path = default_path(model_name)
    if not path.exists():
        log.info("no landmark prior for %s (%s): fitting without it", model_name, path)
        return None
    prior = LandmarkPrior.load(path)
    if topology is not None and prior.topology and prior.topology != topology:
        log.warning("landmark prior %s was trained for another topology of %s: fitting without it", path,
                    model_name)
        return None
    return prior
