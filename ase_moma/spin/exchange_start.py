"""A closed-form start for the spin head's exchange coupling J: least squares on the training residuals.

At a fixed spin configuration the exchange energy ½ Σ_ij J(r_ij) (m_i·m_j −
|m_i||m_j|) is linear in the last layer of J's network, and so are its forces. So, as the
moment magnitudes start at a ridge probe, J starts at the weighted ridge fit of
the energy-per-atom and force residuals the backbone leaves on the training
set (DFT − backbone), weighted as the loss weights them. Training then starts
from a head that already carries the data's magnetic energetics: a handful of
optimiser steps, or a validation that keeps the start, can no longer leave
J ≡ 0 and every spin configuration of a structure at one energy.

The head's exchange is referenced to the parallel order (zero when every
moment is parallel, :mod:`ase_moma.spin.head`), so a ferromagnetic frame
gives J nothing to fit and J only takes what the spins' relative orientation
explains. The level that reference moves out of the head (½ Σ J |m_i||m_j|, a
constant per atom on one lattice) is the backbone's to carry: beside J the fit
holds one energy per atom of each element, barely shrunk, which the trainer adds
to the refitted reference energies. Where the frames that are not ferromagnetic
are also where the backbone errs most (on fe_spin, compressed cells along the
bcc–hcp path), J would still take that error, so the fit can carry a nuisance
pair term ½ Σ φ(r_ij) |m_i||m_j| with J's radial features, fitted on every
frame and dropped: it is kept in the fit where it beats no pair term on
held-out structures (and on generated Heisenberg data, with no such error, it
is left out). J's ridge strength is chosen by cross-validation over whole
structures, and J stays zero when no strength beats J = 0 (the per-element
energies, and φ where kept) on the held-out structures. A geometry given in
different orders (a user's FM and AFM frames of one cell) also gets an energy of
its own in the fit: its orders share the backbone's error there, so J is fitted
to the differences between them rather than to the backbone's error across
geometries (bench/RESULTS.md, "The spin-aware head"). A geometry given only as
one order turned as a whole tells J nothing that way and is left as it was.
The per-element energies returned are refitted with J fixed and without those
per-geometry energies, which would otherwise share them. The start
treats the moments' magnitudes, and the environments J reads, as constants of
the positions (their slope through the backbone's features is left to
training, which follows the exact derivative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ase_moma.backbone import Edges, NodeFeatures
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.labelled_set import LabelledSet
from ase_moma.spin.orders import differ_in_order, repeated_geometries

RIDGE_GRID = np.logspace(-8, 0, 9)
"""Ridge strengths, relative to the mean diagonal of the normal matrix: from a plain least-squares fit of
the H + 1 read-out coefficients to one that keeps them near zero."""
FOLDS = 5  # structures are left out in this many folds to choose the strength
LEVEL_RIDGE = 1e-6
"""The nuisances' relative ridge (per-element energies, pair term): only enough to keep the solve well-posed (an
element present in every structure in one proportion is one column with the others; an ideal lattice fixes φ
only up to a constant), so what they explain stays with them, not with J."""


@dataclass
class ExchangeFit:
    """The start: ``coefficients`` (:meth:`SpinHead.readout_size`,) of J's last layer [w; b] and a
    longitudinal head's Landau layer; ``alpha`` and ``landau_alpha``, their chosen relative ridge strengths
    (None: that part stays zero, no strength with it beat the same fit without it); ``held_out`` and
    ``zero``, the cross-validated weighted squared error of the fit and of a head adding no energy (the
    per-element energies alone); ``structures``, how many frames it saw; ``reference_shifts``, eV per atom
    of each element fitted beside the head (empty when it stays zero), for the backbone's reference energies."""

    coefficients: np.ndarray
    alpha: float | None
    held_out: float
    zero: float
    structures: int
    reference_shifts: dict[int, float]
    landau_alpha: float | None = None

    def record(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "landau_alpha": self.landau_alpha, "held_out_error": self.held_out,
                "zero_error": self.zero,
                "structures": self.structures,
                "reference_shifts": {str(z): v for z, v in self.reference_shifts.items()}}


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


def fit_exchange(spin: Any, graphs: Sequence[Any], data: LabelledSet, loss: PotentialLoss, *,
                 geometries: dict[int, int], batch_size: int = 16, seed: int = 0) -> ExchangeFit:
    """Fit J's last layer to ``data``'s energy and force residuals and set it on ``spin.head``.

    spin: a :class:`~ase_moma.spin.model.SpinBackbone` (residuals are taken from its base
    alone, so whatever J it holds now is replaced); graphs: its graphs of ``data``'s frames (with
    their spin configurations); loss: its weights of energy per atom and forces set the rows' weights;
    geometries: :func:`ordered_geometries` of the frames, each of which gets an energy of its own.
    The per-element energies fitted beside J are returned, not applied.
    """
    head = spin.head
    elements = sorted({int(z) for atoms in data.frames for z in atoms.numbers})
    column = {z: k for k, z in enumerate(elements)}
    n_coupling, n_head = head.exchange[-1].in_features + 1, head.readout_size()
    n_design = n_head + n_coupling
    geometry, n_geometries = geometries, len(set(geometries.values()))
    # the head's read-out (J's, then a longitudinal head's Landau layer), the pair term's, the per-element
    # energies, then one energy per repeated geometry
    width = n_design + len(elements) + n_geometries
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
            design = np.zeros(width)
            design[:n_design] = energy_design[k]
            np.add.at(design, [n_design + column[int(z)] for z in data.frames[row].numbers], 1.0)
            if row in geometry:  # the backbone's error at this geometry, whatever the order: eV per atom
                design[n_design + len(elements) + geometry[row]] = count
            residual = (data.energy[row] - energy[k]) / count
            normal.add(folds[row], design[None] / count, np.array([residual]), energy_weight)
            if use_forces:
                target = (data.forces[row] - forces[start:start + count]).reshape(-1)
                rows_design = np.zeros((3 * count, width))
                rows_design[:, :n_design] = force_design[start:start + count].reshape(-1, n_design)
                normal.add(folds[row], rows_design, target, force_weight)
            start += count
    fit = _choose_ridge(normal, len(data), n_coupling, n_head, elements, n_geometries=n_geometries)
    head.set_energy_readout(torch.as_tensor(fit.coefficients))
    return fit


def _choose_ridge(normal: _Normal, structures: int, n_coupling: int, n_head: int, elements: list[int],
                  n_geometries: int = 0) -> ExchangeFit:
    """Fit J (and a longitudinal head's A, B) beside the nuisances (the pair term φ where it beats none on
    held-out folds, the per-element energies of ``elements`` and one energy per repeated geometry; the
    normal matrix's columns are J's ``n_coupling``, the Landau layer's up to ``n_head``, φ's
    ``n_coupling``, one per element, then one per geometry), J's and the Landau layer's ridge strengths
    cross-validated over the folds, each on its own grid with "left at zero" as one more choice (a Landau
    layer whose columns carry nothing but noise, where no order changes a moment's size, would otherwise fit
    that noise at a strength scaled to it). The baseline is the head's energy at zero. The per-element energies returned are refitted with the head fixed and no
    per-geometry energies, which would otherwise share them."""
    coupling, landau = slice(None, n_coupling), slice(n_coupling, n_head)
    pair = slice(n_head, n_head + n_coupling)
    level = slice(n_head + n_coupling, n_head + n_coupling + len(elements))
    geometries = slice(level.stop, level.stop + n_geometries)

    def fit(gram: np.ndarray, cross: np.ndarray, with_pair: bool, alphas: tuple[float | None, float | None],
            per_geometry: bool = True) -> np.ndarray:
        blocks = [(level, LEVEL_RIDGE)] + ([(geometries, LEVEL_RIDGE)] if per_geometry and n_geometries else [])
        blocks += [(pair, LEVEL_RIDGE)] if with_pair else []
        blocks += [(block, alpha) for block, alpha in zip((coupling, landau), alphas) if alpha is not None]
        columns = np.concatenate([np.arange(len(cross))[block] for block, _ in blocks])
        ridge = np.concatenate([strength * _scale(gram[block, block]) for block, strength in blocks])
        c = np.zeros(len(cross))
        c[columns] = _solve(gram[np.ix_(columns, columns)], cross[columns], ridge)
        return c

    def held_out(with_pair: bool, alphas: tuple[float | None, float | None]) -> float:
        error = 0.0
        for fold in range(len(normal.square)):
            c = fit(normal.gram.sum(0) - normal.gram[fold], normal.cross.sum(0) - normal.cross[fold], with_pair,
                    alphas)
            error += float(c @ normal.gram[fold] @ c - 2 * c @ normal.cross[fold] + normal.square[fold])
        return error

    alone, paired = held_out(False, (None, None)), held_out(True, (None, None))
    with_pair, zero = paired < alone, min(alone, paired)
    grid = [None, *map(float, RIDGE_GRID)]
    trials = [(a, b) for a in grid for b in (grid if n_head > n_coupling else [None]) if (a, b) != (None, None)]
    alphas, error = min(((trial, held_out(with_pair, trial)) for trial in trials), key=lambda trial: trial[1])
    if error >= zero:
        return ExchangeFit(np.zeros(n_head), None, zero, zero, structures, {})
    gram, cross = normal.gram.sum(0), normal.cross.sum(0)
    c = fit(gram, cross, with_pair, alphas)
    fixed = np.zeros(len(cross))
    fixed[:n_head] = c[:n_head]
    levels = fit(gram, cross - gram @ fixed, with_pair, (None, None), per_geometry=False)
    return ExchangeFit(c[:n_head], alphas[0], error, zero, structures,
                       {z: float(v) for z, v in zip(elements, levels[level])}, landau_alpha=alphas[1])


def ordered_geometries(frames: Sequence[Any], spins: Sequence[np.ndarray]) -> dict[int, int]:
    """{frame position: geometry number} for the frames whose geometry (positions, cell, numbers) is given in
    different orders (``spins``: each frame's (n, 3) directions): they share the backbone's error there, which
    a per-geometry energy takes, so J is fitted to the differences between the orders rather than to that
    error. A geometry given only as one order turned as a whole tells J nothing that way, and is left as it is."""
    groups = [members for members in repeated_geometries(frames) if differ_in_order([spins[i] for i in members])]
    return {position: number for number, members in enumerate(groups) for position in members}


def _scale(gram: np.ndarray) -> np.ndarray:
    """A ridge of 1 relative to the mean diagonal of ``gram``, per column."""
    return np.full(len(gram), max(float(np.diag(gram).mean()), 1e-300))


def _solve(gram: np.ndarray, cross: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """The ridge solution with a per-column strength ``ridge``."""
    return np.linalg.solve(gram + np.diag(ridge), cross)


def _residual_design(spin: Any, graphs: Sequence[Any], forces: bool
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """For one batch: the model's energies (B,) eV and forces (N, 3) eV/Å, and the design for energies
    (B, C) and forces (N, 3, C): the energy and forces each read-out coefficient adds per unit, J's (weighting
    the pair by what the head's exchange multiplies), a longitudinal head's Landau layer's (no forces: the
    magnitudes are constants of the positions here), then the pair term's (by |m_i||m_j|)."""
    inner, spins, _ = spin.collate(list(graphs))
    head = spin.head
    captured: dict[str, torch.Tensor] = {}

    def record(features: NodeFeatures, edges: Edges, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            directions = spins.to(features.invariant.dtype)
            magnitudes = head.magnitudes(features)  # of the parallel order
            moments = magnitudes[:, None] * directions
            pair, onsite = head.energy_inputs(features, edges, directions)
            vectors = edges.vectors.detach()
            length = vectors.norm(dim=-1).clamp(min=1e-9)
            centre, neighbour = edges.index
            sizes = magnitudes * directions.norm(dim=-1)
            weights = 0.5 * torch.stack([pair, sizes[centre] * sizes[neighbour]], dim=1).to(length.dtype)
            environment = features.invariant.detach()
            landau = (head.landau_design(edges.numbers, environment, onsite.to(length.dtype)) if onsite is not None
                      else length.new_zeros(len(magnitudes), 0))
        radial, slope = torch.func.jvp(lambda r: head.exchange_design(r, edges, environment), (length,),
                                       (torch.ones_like(length),))
        on_edges = torch.cat([radial * weights[:, :1], radial * weights[:, 1:]], dim=1)  # (E, 2(H + 1))
        per_atom = torch.zeros(features.batch.shape[0], on_edges.shape[1], dtype=on_edges.dtype,
                               device=on_edges.device).index_add_(0, centre, on_edges)
        split = radial.shape[1]
        per_atom = torch.cat([per_atom[:, :split], landau, per_atom[:, split:]], dim=1)
        captured["energy"] = torch.zeros(n_graphs, per_atom.shape[1], dtype=per_atom.dtype,
                                         device=per_atom.device).index_add_(0, features.batch, per_atom)
        if forces:  # ∂E/∂v_e along the edge, then onto its two atoms: v_e = r_neighbour − r_centre
            radial_slope = torch.cat([slope * weights[:, :1], torch.zeros_like(slope[:, :1]).expand(-1, landau.shape[1]),
                                      slope * weights[:, 1:]], dim=1)
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
