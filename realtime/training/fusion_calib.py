"""Held-out synthetic cases for the engines' evaluation and the fusion calibration (no torch).

A *case* is one synthetic render (yaw-stratified), tracked by real MediaPipe (static mode), fitted by the
landmark fitter alone (``FitOptions.single_image()``), and run through each engine; it keeps the
coefficients of every path and the ground truth, so that any fusion policy is evaluated without fitting
again (the fused shape is linear in the blend weights).

:func:`calibrate` grid-searches a :class:`realtime.engines.fusion.FusionPolicy` on such cases; the same
search towards zero coefficients gives the no-network (mean-face) baseline policy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from realtime.engines.fusion import FusionPolicy

if TYPE_CHECKING:
    from pathlib import Path

    from realtime.facemodel import MorphableModel

log = logging.getLogger(__name__)

BINS = ((0, 15), (15, 30), (30, 45), (45, 60), (60, 75))
PROFILE_DEG = 45.0


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    c = (np.trace(a.T @ b) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0))))


@dataclass
class EnginePrediction:
    identity: np.ndarray
    expression: np.ndarray
    rotation_deg: float
    """Rotation error of the engine alone."""
    warm: tuple[np.ndarray, np.ndarray, float]
    """(identity, expression, rotation error) of the fit warm-started by the engine."""


@dataclass
class Case:
    yaw_deg: float
    """True yaw."""
    identity: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    tracked: bool = False
    fit_yaw_deg: float = 0.0
    fit_identity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_expression: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_rotation_deg: float = 0.0
    meanid: tuple[np.ndarray, np.ndarray, float] | None = None
    """Fit with the identity locked to the mean face where the fit's |yaw| > 45° (previous baseline)."""
    engines: dict[str, EnginePrediction] = field(default_factory=dict)


def collect_cases(
    model: MorphableModel,
    engine_files: dict[str, Path],
    n: int,
    seed: int,
    size: int = 512,
    threads: dict[str, int] | None = None,
    progress_every: int = 20,
) -> list[Case]:
    """``n`` renders, yaw stratified over ``BINS`` (either side), seeds ``seed·10⁷ + i``."""
    from realtime.correspondence import load_correspondence
    from realtime.engines.regressors import Regressor
    from realtime.fitting import FaceFitter, FitOptions
    from realtime.landmarks import FaceMeshTracker
    from realtime.synthetic import SyntheticGenerator

    corr = load_correspondence(model)
    opts = FitOptions.single_image()
    threads = threads or {}
    regs = {e: Regressor(e, path=p, prefer="cpu", threads=threads.get(e, 1)) for e, p in engine_files.items()}
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    try:
        with SyntheticGenerator(model, size, size, seed=seed) as gen, FaceMeshTracker(static=True) as tracker:
            for i in range(n):
                lo, hi = BINS[i % len(BINS)]
                yaw = float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1)
                s = gen.sample(seed=seed * 10_000_000 + i, yaw_deg=yaw)
                case = Case(float(s.pose.euler_deg()[0]), s.identity, s.expression, s.pose.rotation)
                tracks = tracker.track(s.image)
                if tracks:
                    track = tracks[0]
                    case.tracked = True
                    fit = FaceFitter(model, corr, s.intrinsics, opts).fit(track)
                    case.fit_yaw_deg = float(fit.pose.euler_deg()[0])
                    case.fit_identity, case.fit_expression = fit.identity, fit.expression
                    case.fit_rotation_deg = rotation_error_deg(fit.pose.rotation, s.pose.rotation)
                    mf = fit
                    if abs(case.fit_yaw_deg) > PROFILE_DEG:
                        f2 = FaceFitter(model, corr, s.intrinsics, opts)
                        f2.lock_identity(np.zeros(model.n_identity))
                        mf = f2.fit(track)
                    case.meanid = (
                        mf.identity, mf.expression, rotation_error_deg(mf.pose.rotation, s.pose.rotation)
                    )
                    for e, reg in regs.items():
                        est = reg.predict(s.image, track, s.intrinsics)
                        wf = FaceFitter(model, corr, s.intrinsics, opts).fit(track, warm_start=est)
                        case.engines[e] = EnginePrediction(
                            est.identity,
                            est.expression,
                            rotation_error_deg(est.rotation, s.pose.rotation),
                            (wf.identity, wf.expression, rotation_error_deg(wf.pose.rotation, s.pose.rotation)),
                        )
                cases.append(case)
                if progress_every and (i + 1) % progress_every == 0:
                    log.info("synthetic cases %d/%d", i + 1, n)
    finally:
        for reg in regs.values():
            reg.close()
    return cases


class ShapeError:
    """Model-space mean vertex distance (mm) over the narrow face area, from coefficients."""

    def __init__(self, model: MorphableModel, stride: int = 1) -> None:
        region = model.narrow_face_area_vertices or model.face_area_vertices
        sel = slice(0, region, stride)
        self.mean = model.mean_mm[sel].astype(np.float64)
        self.id_basis = model.identity_basis_mm[:, sel].astype(np.float64)
        self.exp_basis = model.expression_basis_mm[:, sel].astype(np.float64)

    def vertices(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        return (
            self.mean
            + np.tensordot(np.asarray(identity, np.float64), self.id_basis, axes=1)
            + np.tensordot(np.asarray(expression, np.float64), self.exp_basis, axes=1)
        )

    def __call__(self, case: Case, identity: np.ndarray, expression: np.ndarray) -> float:
        gt = self.vertices(case.identity, case.expression)
        return float(np.linalg.norm(self.vertices(identity, expression) - gt, axis=1).mean())


def fused(case: Case, target: tuple[np.ndarray, np.ndarray], policy: FusionPolicy) -> tuple[np.ndarray, np.ndarray]:
    from realtime.engines.fusion import fuse_coefficients

    return fuse_coefficients(
        case.fit_identity, case.fit_expression, target[0], target[1], case.fit_yaw_deg, policy
    )


def calibrate(
    cases: list[Case],
    target: str | None,
    err: ShapeError,
    weights: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2)),
    ramps: tuple[tuple[float, float], ...] = (
        (20, 50), (20, 60), (30, 50), (30, 60), (35, 55), (40, 60), (45, 70)
    ),
) -> tuple[FusionPolicy, float]:
    """The policy with the lowest mean shape error over the tracked cases (exhaustive grid), and that error.

    ``target``: an engine name (blend towards its coefficients) or None (towards zero: the mean face).
    """
    use = [c for c in cases if c.tracked and (target is None or target in c.engines)]
    if not use:
        raise ValueError("no tracked cases to calibrate on")
    # The blend is linear: V(w_id, w_exp) = V_fit + w_id·D_id + w_exp·D_exp per case.
    v_fit, d_id, d_exp, gt = [], [], [], []
    for c in use:
        tid, texp = (
            (c.engines[target].identity, c.engines[target].expression)
            if target is not None
            else (np.zeros_like(c.fit_identity), np.zeros_like(c.fit_expression))
        )
        vf = err.vertices(c.fit_identity, c.fit_expression)
        v_fit.append(vf)
        d_id.append(err.vertices(tid, c.fit_expression) - vf)
        d_exp.append(err.vertices(c.fit_identity, texp) - vf)
        gt.append(err.vertices(c.identity, c.expression))
    vf_a, did_a, dexp_a, gt_a = (np.stack(a) for a in (v_fit, d_id, d_exp, gt))
    yaws = np.array([c.fit_yaw_deg for c in use])
    best: tuple[float, FusionPolicy] | None = None
    for start, full in ramps:
        ramp = np.array([FusionPolicy(0.0, 0.0, start, full).ramp(y) for y in yaws])[:, None, None]
        base = vf_a - gt_a
        for wi in weights:
            partial = base + (wi * ramp) * did_a
            for we in weights:
                e = float(np.linalg.norm(partial + (we * ramp) * dexp_a, axis=2).mean())
                if best is None or e < best[0] - 1e-9:
                    best = (e, FusionPolicy(float(wi), float(we), float(start), float(full)))
    assert best is not None
    return best[1], best[0]


def yaw_table(
    cases: list[Case],
    columns: dict[str, object],
    err: ShapeError,
    bins: tuple[tuple[int, int], ...] = BINS,
) -> list[dict[str, object]]:
    """Mean shape error (mm) / rotation error (deg) by |yaw| bin for each column.

    ``columns`` maps a name to a function ``case -> (identity, expression, rotation_deg) | None``.
    """
    table = []
    for lo, hi in bins:
        sel = [c for c in cases if lo <= abs(c.yaw_deg) < hi + 1e-6]
        tracked = [c for c in sel if c.tracked]
        row: dict[str, object] = {"bin": f"{lo}-{hi}", "renders": len(sel), "tracked": len(tracked)}
        for name, fn in columns.items():
            mm, deg = [], []
            for c in sel:
                out = fn(c)  # type: ignore[operator]
                if out is None:
                    continue
                mm.append(err(c, out[0], out[1]))
                deg.append(out[2])
            row[f"{name}_mm"] = round(float(np.mean(mm)), 2) if mm else None
            row[f"{name}_deg"] = round(float(np.mean(deg)), 2) if deg else None
        table.append(row)
    return table


def paired_difference(
    cases: list[Case], a: object, b: object, err: ShapeError, seed: int = 0, boots: int = 2000
) -> dict[str, object] | None:
    """Shape error of column ``a`` minus column ``b`` on the cases both have (negative: ``a`` is better):
    mean, bootstrap 95 % interval over cases, and how often ``a`` wins."""
    d = []
    for c in cases:
        oa, ob = a(c), b(c)  # type: ignore[operator]
        if oa is None or ob is None:
            continue
        d.append(err(c, oa[0], oa[1]) - err(c, ob[0], ob[1]))
    if not d:
        return None
    diff = np.asarray(d)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(boots, diff.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "n": int(diff.size),
        "mean_mm": round(float(diff.mean()), 3),
        "ci95_mm": [round(float(lo), 3), round(float(hi), 3)],
        "a_better": int((diff < 0).sum()),
    }
