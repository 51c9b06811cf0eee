"""Module weights: least squares on the simplex over kNN proxy predictions (MoMa Eq. 2–3)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

DEFAULT_SOLVERS = ("CLARABEL", "OSQP")
MIXED_INTEGER_QP_SOLVERS = ("GUROBI", "CPLEX", "MOSEK", "XPRESS", "COPT", "SCIP")


@dataclass
class WeightSolution:
    """weights: (N,) on the simplex; proxy_error: (1/M)‖Σ_j w_j ŷ^j − y‖²; status and
    solver as cvxpy reports them; seconds: solve wall time."""

    weights: np.ndarray
    proxy_error: float
    status: str
    solver: str
    seconds: float


def solve_weights(predictions: np.ndarray, targets: np.ndarray, solver: str | None = None,
                  max_modules: int | None = None) -> WeightSolution:
    """argmin_w (1/M)‖Pᵀw − y‖² s.t. Σw = 1, w ≥ 0 (optionally at most ``max_modules`` w ≠ 0).

    predictions: (N, M) kNN proxy predictions of N modules for M structures;
    targets: (M,). solver: a cvxpy solver name (default: Clarabel, else OSQP).
    A module cap makes the problem mixed-integer; without a solver for that
    installed, a RuntimeError says so.
    """
    import cvxpy as cp

    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if p.ndim != 2 or p.shape[1] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(f"predictions must be (N >= 1, M={y.shape[0]}), got {p.shape}")
    if not (np.isfinite(p).all() and np.isfinite(y).all()):
        raise ValueError("predictions and targets must be finite")
    installed = cp.installed_solvers()
    solver = pick_solver(solver)
    n, m = p.shape
    w = cp.Variable(n)
    constraints = [cp.sum(w) == 1, w >= 0]
    if max_modules is not None and max_modules < n:
        capable = [s for s in MIXED_INTEGER_QP_SOLVERS if s in installed]
        if solver not in capable:
            raise RuntimeError(
                f"capping the composition at {max_modules} modules is a mixed-integer QP; solver "
                f"{solver} cannot solve it and none that can ({', '.join(MIXED_INTEGER_QP_SOLVERS)}) is "
                f"installed{': use ' + capable[0] if capable else ''}. Leave max_modules unset for the "
                "convex problem."
            )
        chosen = cp.Variable(n, boolean=True)
        constraints += [w <= chosen, cp.sum(chosen) <= max_modules]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(p.T @ w - y) / m), constraints)
    solution = solve_for_weights(problem, w, solver)
    solution.proxy_error = float(np.mean((p.T @ solution.weights - y) ** 2))
    return solution


def pick_solver(solver: str | None) -> str:
    """``solver`` upper-cased if cvxpy has it, else a clear error; None picks Clarabel, else OSQP."""
    import cvxpy as cp

    installed = cp.installed_solvers()
    if solver is None:
        solver = next((s for s in DEFAULT_SOLVERS if s in installed), None)
        if solver is None:
            raise RuntimeError(f"no QP solver for the weights: install clarabel or osqp (have {installed})")
    elif solver.upper() not in installed:
        raise ValueError(f"solver {solver!r} is not installed; installed: {', '.join(installed)}")
    return solver.upper()


def solve_for_weights(problem, w, solver: str) -> WeightSolution:
    """Solve ``problem`` (a cvxpy problem over simplex weights ``w``); the weights clipped at 0 and
    renormalised, with the objective's value as the proxy error."""
    start = time.perf_counter()
    problem.solve(solver=solver)
    seconds = time.perf_counter() - start
    if w.value is None:
        raise RuntimeError(f"solver {solver} found no solution (status {problem.status})")
    weights = np.clip(np.asarray(w.value, dtype=np.float64), 0.0, None)
    weights /= weights.sum()
    return WeightSolution(weights, float(problem.value), str(problem.status), solver, seconds)
