"""The linear probe: ridge regression on frozen features, closed form.

Every property model starts here (LP-FT: the head is first fitted on the
frozen per-structure features, then the backbone is fine-tuned from that
head), the spin head's magnitudes start at a probe on per-atom features, and
the benchmarks report the probe as the baseline a property model must beat.

Features are standardised per column; the ridge strength α is chosen from
ALPHAS by exact leave-one-out error on the training rows (for ridge with an
unpenalised intercept the leave-one-out residual of row i is
r_i / (1 − h_ii), h the hat matrix), so the choice needs no validation data
and no refit per candidate: one SVD of the centred feature matrix gives all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHAS = np.logspace(-3, 4, 29)
"""Candidate ridge strengths on standardised features: from almost ordinary least squares (1e-3) to
a model that predicts little more than the mean (1e4 against O(n) feature scatter)."""


@dataclass(frozen=True)
class RidgeProbe:
    """y ≈ features @ weight + bias in the targets' unit.

    weight: (F,) on the raw (unstandardised) features; alpha: the ridge
    strength chosen; loo_mae: its leave-one-out MAE on the training rows.
    """

    weight: np.ndarray
    bias: float
    alpha: float
    loo_mae: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(M,) predictions for (M, F) features."""
        return np.asarray(features, dtype=np.float64) @ self.weight + self.bias


def fit_ridge_probe(features: np.ndarray, targets: np.ndarray, alphas: np.ndarray = ALPHAS) -> RidgeProbe:
    """The ridge probe of ``targets`` (M,) on ``features`` (M, F), α chosen by leave-one-out MAE."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"a probe needs (M, F) features and (M,) targets, got {x.shape} and {y.shape}")
    if len(y) < 3:
        raise ValueError(f"a probe needs at least 3 structures, got {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a probe needs finite features and targets")
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - centre) / scale
    y_mean = y.mean()
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ (y - y_mean)
    best = None
    for alpha in alphas:
        shrink = s ** 2 / (s ** 2 + alpha)
        fitted = u @ (shrink * uty) + y_mean
        leverage = 1.0 / len(y) + (u ** 2) @ shrink
        loo = np.mean(np.abs((y - fitted) / np.clip(1.0 - leverage, 1e-12, None)))
        if best is None or loo < best[1]:
            best = (float(alpha), float(loo))
    alpha, loo_mae = best
    coefficients = vt.T @ (s / (s ** 2 + alpha) * uty)
    weight = coefficients / scale
    return RidgeProbe(weight=weight, bias=float(y_mean - centre @ weight), alpha=alpha, loo_mae=loo_mae)
