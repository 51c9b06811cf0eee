"""Weights of potential modules from their errors on the user's frames: a convex fit in prediction space.

Merging deltas that are small against the pretrained weights is, to first order,
averaging the candidates' predictions: f(θ₀ + Σ_j w_j δ_j) ≈ Σ_j w_j f(θ₀ + δ_j)
when the weights, the pretrained candidate's included, sum to one. So the
weights are chosen to minimise the fine-tuning loss of the averaged predictions
on the frames,

    min_{w, s}  a_E · mean Huber((Σ_j w_j E_j + C s − E) / n)
              + a_F · mean Huber(Σ_j w_j F_j − F) + a_S · mean Huber(Σ_j w_j S_j − S)
    s.t.  Σ_j w_j = 1,  w ≥ 0,

with C the frames' element counts and s free per-element reference shifts (the
refit fine-tuning does), a the loss weights and Huber's δ the loss's. It is
convex (Huber of an affine map), and a candidate scored alone is its own error
there. The merged model's actual error is measured afterwards, not assumed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ase_moma.compose.potential_scores import FramePredictions, composition_matrix
from ase_moma.compose.weights import WeightSolution, pick_solver, solve_for_weights
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.labelled_set import LabelledSet


def solve_potential_weights(candidates: Sequence[FramePredictions], data: LabelledSet, loss: PotentialLoss,
                            solver: str | None = None) -> WeightSolution:
    """(N,) simplex weights of ``candidates`` minimising the loss of their averaged predictions on ``data``.

    proxy_error in the result is that loss at the solution (reference shifts refitted).
    """
    import cvxpy as cp

    if not candidates:
        raise ValueError("no candidates to weigh")
    solver = pick_solver(solver)
    n_atoms = data.n_atoms().astype(np.float64)
    counts, _ = composition_matrix(data.frames)
    w = cp.Variable(len(candidates))
    shifts = cp.Variable(counts.shape[1])
    delta = loss.huber_delta

    def term(columns: list[np.ndarray], target: np.ndarray, offset=None):
        """Torch's mean Huber (½ of cvxpy's huber) of Σ_j w_j column_j (+ offset) − target."""
        matrix = np.stack(columns, axis=1)
        residual = matrix @ w - target + (0 if offset is None else offset)
        return cp.sum(cp.huber(residual, delta)) / (2 * len(target))

    objective = loss.energy * term([c.energy / n_atoms for c in candidates], data.energy / n_atoms,
                                   (counts / n_atoms[:, None]) @ shifts)
    if loss.forces > 0 and data.forces is not None and all(c.forces is not None for c in candidates):
        objective += loss.forces * term([c.forces.reshape(-1) for c in candidates],
                                        np.concatenate(data.forces).reshape(-1))
    if loss.stress > 0 and data.stress is not None and all(c.stress is not None for c in candidates):
        objective += loss.stress * term([c.stress.reshape(-1) for c in candidates], data.stress.reshape(-1))
    return solve_for_weights(cp.Problem(cp.Minimize(objective), [cp.sum(w) == 1, w >= 0]), w, solver)
