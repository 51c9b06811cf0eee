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
Rows that are not independent — the atoms of one structure — are left out
together: with ``groups``, α is chosen by cross-validation over GROUP_FOLDS
folds of whole groups, refitted per fold. Leaving out one atom while its
symmetry-equivalent twin stays in measures nothing (the twin has the same
features and the same moment), and picks the least regularised α. (The
closed form (I − H_gg)⁻¹ r_g of leave-one-group-out is exact on paper but
singular in practice exactly there: two identical rows of one group with a
nearly unregularised fit.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ALPHAS = np.logspace(-3, 4, 29)
"""Candidate ridge strengths on standardised features: from almost ordinary least squares (1e-3) to
a model that predicts little more than the mean (1e4 against O(n) feature scatter)."""

GROUP_FOLDS = 10
"""Folds of whole groups for choosing α with ``groups`` (or one group per fold when there are fewer):
ten folds fit on 90 % of the groups, close to leave-one-group-out, for ten SVDs whatever the size."""


@dataclass(frozen=True)
class RidgeProbe:
    """y ≈ features @ weight + bias in the targets' unit.

    weight: (F,) on the raw (unstandardised) features; alpha: the ridge
    strength chosen; loo_mae: its leave-one-out MAE on the training rows (with groups: the MAE of
    whole groups left out, fold by fold).
    """

    weight: np.ndarray
    bias: float
    alpha: float
    loo_mae: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(M,) predictions for (M, F) features."""
        return np.asarray(features, dtype=np.float64) @ self.weight + self.bias


def fit_ridge_probe(features: np.ndarray, targets: np.ndarray, alphas: np.ndarray = ALPHAS,
                    groups: np.ndarray | None = None,
                    readout: Callable[[np.ndarray], np.ndarray] | None = None) -> RidgeProbe:
    """The ridge probe of ``targets`` (M,) on ``features`` (M, F), α chosen by leave-one-out MAE.

    groups: (M,) labels of rows that are left out together (e.g. the structure
    each atom belongs to); by default every row is its own group. readout: the
    map from the probe's scale to the one its error is judged on (a probe of
    softplus⁻¹|m| is judged on |m|); by default the identity. loo_mae is on that scale.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"a probe needs (M, F) features and (M,) targets, got {x.shape} and {y.shape}")
    if groups is not None and np.shape(groups) != y.shape:
        raise ValueError(f"groups must label each of the {len(y)} rows, got shape {np.shape(groups)}")
    independent = len(np.unique(groups)) if groups is not None else len(y)
    if independent < 3:
        raise ValueError(f"a probe needs at least 3 structures, got {independent}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a probe needs finite features and targets")
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - centre) / scale
    y_mean = y.mean()
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ (y - y_mean)
    grouped = (_cross_validated(z, y, _group_folds(groups, GROUP_FOLDS), alphas) if groups is not None
               else None)
    best = None
    for index, alpha in enumerate(alphas):
        if grouped is None:
            shrink = s ** 2 / (s ** 2 + alpha)
            leverage = 1.0 / len(y) + (u ** 2) @ shrink
            left_out = y - (y - (u @ (shrink * uty) + y_mean)) / np.clip(1.0 - leverage, 1e-12, None)
        else:
            left_out = grouped[index]
        loo = (np.mean(np.abs(left_out - y)) if readout is None
               else np.mean(np.abs(readout(left_out) - readout(y))))
        if best is None or loo < best[1]:
            best = (float(alpha), float(loo))
    alpha, loo_mae = best
    coefficients = vt.T @ (s / (s ** 2 + alpha) * uty)
    weight = coefficients / scale
    return RidgeProbe(weight=weight, bias=float(y_mean - centre @ weight), alpha=alpha, loo_mae=loo_mae)


def _group_folds(groups: np.ndarray, count: int) -> np.ndarray:
    """(M,) fold index of each row: whole groups dealt round-robin, in a seeded order, to ``count`` folds."""
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    fold_of_label = np.empty(len(labels), dtype=int)
    fold_of_label[np.random.default_rng(0).permutation(len(labels))] = np.arange(len(labels)) % count
    return fold_of_label[inverse.reshape(-1)]


def _cross_validated(z: np.ndarray, y: np.ndarray, folds: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(A, M) predictions of every row by ridge fits (one per α) on the folds that exclude it."""
    predictions = np.empty((len(alphas), len(y)))
    for fold in np.unique(folds):
        held = folds == fold
        centre, y_mean = z[~held].mean(axis=0), y[~held].mean()
        u, s, vt = np.linalg.svd(z[~held] - centre, full_matrices=False)
        uty = u.T @ (y[~held] - y_mean)
        projected = (z[held] - centre) @ vt.T
        for index, alpha in enumerate(alphas):
            predictions[index, held] = projected @ (s / (s ** 2 + alpha) * uty) + y_mean
    return predictions
