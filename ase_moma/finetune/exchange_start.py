"""A closed-form start for the spin head's exchange coupling J: least squares on the training residuals.

At a fixed spin configuration the exchange energy ½ Σ_ij J(r_ij) m_i·m_j is
linear in the last layer of J's network, and so are its forces. So, as the
moment magnitudes start at a ridge probe, J starts at the weighted ridge fit of
the energy-per-atom and force residuals the backbone leaves on the training
set (DFT − backbone), weighted as the loss weights them. Training then starts
from a head that already carries the data's magnetic energetics: a handful of
optimiser steps, or a validation that keeps the start, can no longer leave
J ≡ 0 and every spin configuration of a structure at one energy.

J is only given what the spins' orientation explains. Beside J's columns the
fit can carry a nuisance pair term ½ Σ φ(r_ij) |m_i||m_j| with the same radial
features: for a ferromagnet the two are one function, so without φ a training
set of mostly ferromagnetic frames hands J every pair-like error of the
backbone, which J then flips on an antiparallel order. Where φ beats nothing on
held-out structures it is fitted first, barely shrunk, and dropped, and J is
fitted to what it leaves; where it does not (no pair-like error to take, as in
generated Heisenberg data) it would only bias J, and J is fitted alone. (Fitted
jointly, the two nearly collinear terms cancel each other with large
coefficients.) J's ridge strength is chosen by cross-validation over whole
structures, and J stays zero when no strength beats J = 0 on the held-out
structures. The start treats the moments' magnitudes as constants of the
positions (their slope through the backbone's features is left to training,
which follows the exact derivative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ase_moma.backbone import Edges, NodeFeatures
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.finetune.potential_data import PotentialSet

RIDGE_GRID = np.logspace(-8, 0, 9)
"""Ridge strengths, relative to the mean diagonal of the normal matrix: from a plain least-squares fit of
the H + 1 read-out coefficients to one that keeps them near zero."""
FOLDS = 5  # structures are left out in this many folds to choose the strength
NUISANCE_RIDGE = 1e-6
"""The pair term's relative ridge: only enough to keep the solve well-posed where φ is not determined (an
ideal lattice fixes it up to a constant), so whatever an orientation-independent term explains stays with it."""


@dataclass
class ExchangeFit:
    """The start: ``coefficients`` (H + 1,) of J's last layer [w; b]; ``alpha``, the chosen relative ridge
    strength (None: J stays zero, no strength beat it); ``held_out`` and ``zero``, the cross-validated
    weighted squared error of the fit and of J = 0 (the pair term alone); ``structures``, how many
    frames it saw."""

    coefficients: np.ndarray
    alpha: float | None
    held_out: float
    zero: float
    structures: int

    def record(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "held_out_error": self.held_out, "zero_error": self.zero,
                "structures": self.structures}


class _Normal:
    """Σ AᵀA, Σ Aᵀy and Σ yᵀy of weighted rows, one set per fold."""

    def __init__(self, folds: int, width: int) -> None:
        self.gram = np.zeros((folds, width, width))
        self.cross = np.zeros((folds, width))
        self.square = np.zeros(folds)

    def add(self, fold: int, design: np.ndarray, target: np.ndarray, weight: float) -> None:
        self.gram[fold] += weight * design.T @ design
        self.cross[fold] += weight * design.T @ target
        self.square[fold] += weight * float(target @ target)


def fit_exchange(spin: Any, graphs: Sequence[Any], data: PotentialSet, loss: PotentialLoss, *,
                 batch_size: int = 16, seed: int = 0) -> ExchangeFit:
    """Fit J's last layer to ``data``'s energy and force residuals and set it on ``spin.head``.

    spin: a :class:`~ase_moma.finetune.spin_model.SpinBackbone` (residuals are taken from its base
    alone, so whatever J it holds now is replaced); graphs: its graphs of ``data``'s frames (with
    their spin configurations); loss: its weights of energy per atom and forces set the rows' weights.
    """
    head = spin.head
    width = 2 * (head.exchange[-1].in_features + 1)  # J's read-out, then the pair term's
    n_folds = min(FOLDS, len(data))
    folds = np.random.default_rng(seed).permutation(len(data)) % n_folds
    normal = _Normal(n_folds, width)
    use_forces = loss.forces > 0 and data.forces is not None
    n_atoms = data.n_atoms()
    energy_weight = loss.energy / len(data)
    force_weight = loss.forces / (3 * int(n_atoms.sum())) if use_forces else 0.0
    for begin in range(0, len(data), batch_size):
        rows = list(range(begin, min(begin + batch_size, len(data))))
        energy, forces, energy_design, force_design = _residual_design(spin, [graphs[i] for i in rows], use_forces)
        start = 0
        for k, row in enumerate(rows):
            count = int(n_atoms[row])
            residual = (data.energy[row] - energy[k]) / count
            normal.add(folds[row], energy_design[k][None] / count, np.array([residual]), energy_weight)
            if use_forces:
                target = (data.forces[row] - forces[start:start + count]).reshape(-1)
                normal.add(folds[row], force_design[start:start + count].reshape(-1, width), target, force_weight)
            start += count
    fit = _choose_ridge(normal, len(data))
    head.set_exchange_readout(torch.as_tensor(fit.coefficients))
    return fit


def _choose_ridge(normal: _Normal, structures: int) -> ExchangeFit:
    """Fit the pair term φ first where it beats nothing on held-out folds, then J to what it leaves, J's ridge
    strength cross-validated over the folds; J's part is kept. The baseline is φ alone (or nothing): J = 0."""
    half = len(normal.cross[0]) // 2
    pair, spin = slice(half, None), slice(None, half)

    def pair_fit(gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
        block = gram[pair, pair]
        return _solve(block, cross[pair], NUISANCE_RIDGE * _scale(block))

    def fit(gram: np.ndarray, cross: np.ndarray, nuisance: bool, alpha: float | None) -> np.ndarray:
        """[c_J; c_φ]: φ first where ``nuisance``, then J (unless ``alpha`` is None) on what φ leaves,
        A_Jᵀ(y − A_φ c_φ) = A_Jᵀy − (A_JᵀA_φ) c_φ."""
        c = np.zeros(len(cross))
        if nuisance:
            c[pair] = pair_fit(gram, cross)
        if alpha is not None:
            block = gram[spin, spin]
            c[spin] = _solve(block, cross[spin] - gram[spin, pair] @ c[pair], alpha * _scale(block))
        return c

    def held_out(nuisance: bool, alpha: float | None) -> float:
        error = 0.0
        for fold in range(len(normal.square)):
            c = fit(normal.gram.sum(0) - normal.gram[fold], normal.cross.sum(0) - normal.cross[fold], nuisance, alpha)
            error += float(c @ normal.gram[fold] @ c - 2 * c @ normal.cross[fold] + normal.square[fold])
        return error

    with_pair, without = held_out(True, None), held_out(False, None)
    nuisance = with_pair < without  # is there a pair-like error for φ to take?
    zero = min(with_pair, without)
    alpha, error = min(((float(a), held_out(nuisance, float(a))) for a in RIDGE_GRID), key=lambda trial: trial[1])
    if error >= zero:
        return ExchangeFit(np.zeros(half), None, zero, zero, structures)
    return ExchangeFit(fit(normal.gram.sum(0), normal.cross.sum(0), nuisance, alpha)[spin], alpha, error, zero,
                       structures)


def _scale(gram: np.ndarray) -> np.ndarray:
    """A ridge of 1 relative to the mean diagonal of ``gram``, per column."""
    return np.full(len(gram), max(float(np.diag(gram).mean()), 1e-300))


def _solve(gram: np.ndarray, cross: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """The ridge solution with a per-column strength ``ridge``."""
    return np.linalg.solve(gram + np.diag(ridge), cross)


def _residual_design(spin: Any, graphs: Sequence[Any], forces: bool
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """For one batch: the model's energies (B,) eV and forces (N, 3) eV/Å, and the design for energies
    (B, 2(H + 1)) and forces (N, 3, 2(H + 1)): the energy and forces each read-out coefficient adds per
    unit, J's (weighting the pair by m_i·m_j) then the pair term's (by |m_i||m_j|)."""
    inner, spins, _ = spin.collate(list(graphs))
    head = spin.head
    captured: dict[str, torch.Tensor] = {}

    def record(features: NodeFeatures, edges: Edges, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            magnitudes = head.magnitudes(features)
            moments = magnitudes[:, None] * spins.to(magnitudes.dtype)
            vectors = edges.vectors.detach()
            length = vectors.norm(dim=-1).clamp(min=1e-9)
            centre, neighbour = edges.index
            weights = 0.5 * torch.stack([(moments[centre] * moments[neighbour]).sum(-1),
                                         magnitudes[centre] * magnitudes[neighbour]], dim=1).to(length.dtype)
        radial, slope = torch.func.jvp(lambda r: head.exchange_design(r, edges), (length,), (torch.ones_like(length),))
        design = torch.cat([radial * weights[:, :1], radial * weights[:, 1:]], dim=1)  # (E, 2(H + 1))
        per_atom = torch.zeros(features.batch.shape[0], design.shape[1], dtype=design.dtype, device=design.device)
        per_atom.index_add_(0, centre, design)
        captured["energy"] = torch.zeros(n_graphs, design.shape[1], dtype=design.dtype,
                                         device=design.device).index_add_(0, features.batch, per_atom)
        if forces:  # ∂E/∂v_e along the edge, then onto its two atoms: v_e = r_neighbour − r_centre
            radial_slope = torch.cat([slope * weights[:, :1], slope * weights[:, 1:]], dim=1)
            along = radial_slope[:, :, None] * (vectors / length[:, None])[:, None, :]
            gradient = torch.zeros(features.batch.shape[0], *along.shape[1:], dtype=along.dtype, device=along.device)
            gradient.index_add_(0, neighbour, along)
            gradient.index_add_(0, centre, -along)
            captured["forces"] = -gradient.transpose(1, 2)
        return torch.zeros(n_graphs, dtype=length.dtype, device=length.device), moments

    output = spin.base.forward_with(inner, record, forces=forces, stress=False)
    as_numpy = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return (as_numpy(output.energy), as_numpy(output.forces) if forces else None,
            as_numpy(captured["energy"]), as_numpy(captured["forces"]) if forces else None)
