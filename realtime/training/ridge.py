"""Closed-form refit of the identity rows of a regressor's output layer (ridge regression on its pooled
features).

Why: in a CPU time budget the jointly trained head learns pose and landmarks but not identity (validation
vertex error no better than the mean face), while the identity is what the fit cannot recover at large yaw.
The identity outputs are linear in the pooled features (no output activation), so their rows of the final
``nn.Linear`` can be solved exactly: ridge regression of the true identity coefficients on the features of
the training crops, one penalty per coefficient chosen on the held-out shard. A penalty → ∞ gives the
training mean, so a coefficient the features do not predict stays at the mean face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from realtime.engines.coeffs import CoefficientLayout
from realtime.training.data import ArrayDataset

log = logging.getLogger(__name__)

LAMBDAS = tuple(float(x) for x in np.logspace(-2, 5, 15))
"""Penalties tried (relative to the number of training samples; features are standardised)."""


@torch.no_grad()
def pooled_features(net: nn.Module, data: ArrayDataset, batch_size: int = 128) -> np.ndarray:
    """(N, F) inputs of ``net.fc`` (the pooled features) for every sample, network in eval mode."""
    from realtime.training.trainer import to_tensors

    fc = net.fc
    assert isinstance(fc, nn.Linear)
    captured: list[torch.Tensor] = []
    hook = fc.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].detach().clone()))
    try:
        net.eval()
        for b in data.batches(batch_size, np.random.default_rng(0), shuffle=False):
            _, img = to_tensors(b, None)
            net(img)
    finally:
        hook.remove()
    return torch.cat(captured).double().numpy()


@dataclass
class RidgeReport:
    val_rms_before: float
    """RMS identity-coefficient error on the held-out shard with the trained head."""
    val_rms_after: float
    val_rms_mean: float
    """The same for the training mean (the mean face's identity when the data is centred)."""
    lambdas: list[float]

    def as_dict(self) -> dict[str, object]:
        return {
            "val_rms_before": round(self.val_rms_before, 4),
            "val_rms_after": round(self.val_rms_after, 4),
            "val_rms_train_mean": round(self.val_rms_mean, 4),
            "lambda_median": float(np.median(self.lambdas)),
        }


def ridge_identity_head(
    net: nn.Module, layout: CoefficientLayout, train: ArrayDataset, val: ArrayDataset
) -> RidgeReport:
    """Replace the identity rows of ``net.fc`` by the per-coefficient ridge solution (in place)."""
    fc = net.fc
    assert isinstance(fc, nn.Linear)
    sl = layout.slices()["identity"]
    x_tr, x_va = pooled_features(net, train), pooled_features(net, val)
    y_tr = train.arrays["identity"].astype(np.float64)
    y_va = val.arrays["identity"].astype(np.float64)
    with torch.no_grad():
        before = fc(torch.from_numpy(x_va).float())[:, sl].double().numpy()
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    y_mu = y_tr.mean(0)
    z_tr, z_va = (x_tr - mu) / sd, (x_va - mu) / sd
    u, s, vt = np.linalg.svd(z_tr, full_matrices=False)
    uty = u.T @ (y_tr - y_mu)                                  # (r, K)
    n = z_tr.shape[0]
    best_err = np.full(y_tr.shape[1], np.inf)
    best_w = np.zeros((z_tr.shape[1], y_tr.shape[1]))
    best_lam = np.zeros(y_tr.shape[1])
    for lam in LAMBDAS:
        w = vt.T @ ((s / (s * s + lam * n))[:, None] * uty)     # (F, K)
        err = ((z_va @ w + y_mu - y_va) ** 2).mean(0)
        better = err < best_err
        best_err[better] = err[better]
        best_w[:, better] = w[:, better]
        best_lam[better] = lam
    # Back to raw features: y = ((x - mu) / sd) @ W + y_mu.
    weight = (best_w / sd[:, None]).T                           # (K, F)
    bias = y_mu - weight @ mu
    with torch.no_grad():
        fc.weight[sl] = torch.from_numpy(weight).to(fc.weight.dtype)
        fc.bias[sl] = torch.from_numpy(bias).to(fc.bias.dtype)
    rep = RidgeReport(
        val_rms_before=float(np.sqrt(((before - y_va) ** 2).mean())),
        val_rms_after=float(np.sqrt(best_err.mean())),
        val_rms_mean=float(np.sqrt(((y_mu - y_va) ** 2).mean())),
        lambdas=best_lam.tolist(),
    )
    log.info("ridge identity head: held-out RMS %.3f (trained head %.3f, training mean %.3f)",
             rep.val_rms_after, rep.val_rms_before, rep.val_rms_mean)
    return rep
