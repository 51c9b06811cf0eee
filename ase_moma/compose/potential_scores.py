"""Scoring potentials on a user's labelled frames: each candidate's predictions and its errors there.

The errors are those fine-tuning would see: per-atom energies after refitting
each element's reference energy to the frames by least squares (a different
DFT set-up shifts them; fine-tuning refits them first), forces and stress, and
the fine-tuning loss (:class:`~ase_moma.finetune.loss.PotentialLoss`) built
from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from ase_moma.backbone import Backbone
from ase_moma.finetune.loss import EV_PER_A3_IN_GPA, PotentialLoss
from ase_moma.labelled_set import LabelledSet


@dataclass
class FramePredictions:
    """One model's predictions on a set of frames: energy (B,) eV, forces (N, 3) eV/Å over all atoms in
    frame order (None when not asked), stress (B, 3, 3) eV/Å³ with ASE's sign (None when not asked)."""

    energy: np.ndarray
    forces: np.ndarray | None
    stress: np.ndarray | None


def predict_frames(backbone: Backbone, graphs: Sequence[Any], *, forces: bool, stress: bool,
                   batch_size: int = 8) -> FramePredictions:
    """``backbone``'s predictions on prebuilt ``graphs``, in float64 numpy arrays."""
    energy, force, stresses = [], [], []
    for start in range(0, len(graphs), batch_size):
        out = backbone.forward(backbone.collate(graphs[start:start + batch_size]), forces=forces, stress=stress)
        energy.append(out.energy.detach().double().cpu().numpy())
        if forces:
            force.append(out.forces.detach().double().cpu().numpy())
        if stress:
            stresses.append(out.stress.detach().double().cpu().numpy())
    return FramePredictions(np.concatenate(energy), np.concatenate(force) if forces else None,
                            np.concatenate(stresses) if stress else None)


def composition_matrix(frames: Sequence[Atoms]) -> tuple[np.ndarray, list[int]]:
    """(B, Z) atom counts of each element present, and those elements' atomic numbers (ascending)."""
    elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
    column = {z: i for i, z in enumerate(elements)}
    counts = np.zeros((len(frames), len(elements)))
    for row, atoms in enumerate(frames):
        for z in atoms.numbers:
            counts[row, column[int(z)]] += 1
    return counts, elements


def reference_shifts(predicted_energy: np.ndarray, data: LabelledSet) -> dict[int, float]:
    """``{Z: shift}`` (eV per atom of Z): the least-squares fit of the labels' energies minus the predicted
    ones over the frames' compositions, as fine-tuning refits them."""
    counts, elements = composition_matrix(data.frames)
    shifts = np.linalg.lstsq(counts, data.energy - predicted_energy, rcond=None)[0]
    return {z: float(s) for z, s in zip(elements, shifts)}


def frame_errors(predicted: FramePredictions, data: LabelledSet, loss: PotentialLoss,
                 refit_references: bool = True) -> dict[str, float]:
    """Errors of ``predicted`` on ``data``: ``energy_mae`` (meV/atom, after the reference refit when
    ``refit_references``), ``forces_mae`` (meV/Å), ``stress_mae`` (GPa) where both sides have them, and
    ``loss``, the fine-tuning loss of the same residuals."""
    energy = predicted.energy
    if refit_references:
        counts, elements = composition_matrix(data.frames)
        shifts = reference_shifts(energy, data)
        energy = energy + counts @ np.array([shifts[z] for z in elements])
    n_atoms = data.n_atoms()
    huber = lambda residual: mean_huber(residual, loss.huber_delta)  # noqa: E731
    residual = (energy - data.energy) / n_atoms
    errors = {"energy_mae": 1000 * float(np.abs(residual).mean())}
    value = loss.energy * huber(residual)
    if predicted.forces is not None and data.forces is not None and loss.forces > 0:
        residual = predicted.forces - np.concatenate(data.forces)
        errors["forces_mae"] = 1000 * float(np.abs(residual).mean())
        value += loss.forces * huber(residual)
    if predicted.stress is not None and data.stress is not None and loss.stress > 0:
        residual = predicted.stress - data.stress
        errors["stress_mae"] = EV_PER_A3_IN_GPA * float(np.abs(residual).mean())
        value += loss.stress * huber(residual)
    errors["loss"] = value
    return errors


def mean_huber(residual: np.ndarray, delta: float) -> float:
    """The mean Huber loss of ``residual`` as torch's ``huber_loss`` computes it: ½x² inside δ, δ(|x| − ½δ)
    outside."""
    size = np.abs(residual)
    return float(np.where(size < delta, 0.5 * size ** 2, delta * (size - 0.5 * delta)).mean())
