"""How module weights are chosen: AMC and the baselines the MoMa paper compares it with.

Every strategy maps the kNN proxy predictions of N modules to N weights on the
simplex (``no_hub`` to none: the plain backbone is fine-tuned), so AMC and its
baselines share the rest of the pipeline: merge, fine-tune, evaluate.
"""

from __future__ import annotations

import numpy as np

from ase_moma.compose.merge import MIN_WEIGHT
from ase_moma.compose.weights import WeightSolution, solve_weights

STRATEGIES = ("amc", "all_average", "select_average", "random", "softmax", "best_single", "no_hub")
_NEEDS_AMC = ("amc", "select_average", "random")


def strategy_weights(strategy: str, predictions: np.ndarray, targets: np.ndarray, proxy_mae: np.ndarray, *,
                     solver: str | None = None, seed: int = 0,
                     softmax_temperature: float = 1.0) -> tuple[np.ndarray, WeightSolution | None]:
    """(N,) weights for ``strategy`` and the AMC solution when it was solved.

    predictions: (N, M) kNN proxy predictions; targets: (M,); proxy_mae: (N,).
    amc: the simplex least-squares weights. all_average: 1/N each (model
    soup). select_average: uniform over AMC's support. random: uniform over a
    seeded random pick of as many modules as AMC's support. softmax:
    w_j ∝ exp(−MAE_j / T), T = ``softmax_temperature`` in the target's unit
    (MoMa Eq. 4). best_single: all weight on the lowest proxy MAE. no_hub: an
    empty array. Weights below MIN_WEIGHT (1e-6) are set to zero and the rest
    renormalised, so the weights returned are exactly the ones merged.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n = len(proxy_mae)
    if strategy == "no_hub":
        return np.zeros(0), None
    if n == 0:
        raise ValueError(f"strategy {strategy!r} needs at least one module")
    solution = solve_weights(predictions, targets, solver=solver) if strategy in _NEEDS_AMC else None
    if solution is not None:
        amc = np.where(solution.weights >= MIN_WEIGHT, solution.weights, 0.0)
        amc /= amc.sum()
    if strategy == "amc":
        return amc, solution
    weights = np.zeros(n)
    if strategy == "all_average":
        weights[:] = 1.0 / n
    elif strategy == "select_average":
        support = amc > 0
        weights[support] = 1.0 / support.sum()
    elif strategy == "random":
        count = int((amc > 0).sum())
        weights[np.random.default_rng(seed).choice(n, count, replace=False)] = 1.0 / count
    elif strategy == "softmax":
        if not softmax_temperature > 0:
            raise ValueError(f"softmax temperature must be positive, got {softmax_temperature}")
        logits = -np.asarray(proxy_mae, dtype=np.float64) / softmax_temperature
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        weights = np.where(weights >= MIN_WEIGHT, weights, 0.0)
        weights /= weights.sum()
    else:  # best_single
        weights[int(np.argmin(proxy_mae))] = 1.0
    return weights, solution
