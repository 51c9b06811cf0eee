"""The fine-tuning loss: Huber on energy per atom, forces and stress, with their weights.

Energies per atom in eV/atom, forces in eV/Å, stress in eV/Å³; the Huber
δ applies to each in its own unit (0.01 as in MACE's fine-tuning). Errors for
reports are MAEs in meV/atom, meV/Å and GPa.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ase_moma.backbone import Backbone, BackboneOutput
from ase_moma.finetune.chunks import evaluation_batches
from ase_moma.labelled_set import LabelledSet

EV_PER_A3_IN_GPA = 160.21766208


@dataclass
class PotentialLoss:
    """Σ weight · Huber(prediction, label) over energy per atom, forces, stress and moments.

    The weights of the four terms and the Huber δ; the moment term counts only
    when a spin head predicts moments. Called on a batch's output and labels.
    """

    energy: float = 1.0
    forces: float = 10.0
    stress: float = 100.0
    huber_delta: float = 0.01
    magmoms: float = 1.0

    def check(self) -> None:
        for name in ("energy", "forces", "stress", "magmoms"):
            if getattr(self, name) < 0:
                raise ValueError(f"the {name} loss weight must be non-negative, got {getattr(self, name)}")
        if self.energy == self.forces == self.stress == 0:
            raise ValueError("every loss weight is zero: nothing to fit")
        if not self.huber_delta > 0:
            raise ValueError(f"the Huber delta must be positive, got {self.huber_delta}")

    def __call__(self, out: BackboneOutput, labels: "Labels", *, structure_share: float = 1.0,
                 atom_share: float = 1.0) -> torch.Tensor:
        """The weighted sum over the terms this loss weights (a scalar, float64).

        structure_share, atom_share: for a chunk of a batch, its fraction of the batch's structures and
        of its atoms; the per-structure terms (energy, stress) are scaled by the first, the per-atom ones
        (forces, moments) by the second, so that the chunks' losses add up to the whole batch's.
        """
        huber = lambda a, b: torch.nn.functional.huber_loss(a.double(), b, delta=self.huber_delta)  # noqa: E731
        loss = self.energy * structure_share * huber(out.energy / labels.n_atoms, labels.energy_per_atom)
        if self.forces > 0:
            loss = loss + self.forces * atom_share * huber(out.forces, labels.forces)
        if self.stress > 0:
            loss = loss + self.stress * structure_share * huber(out.stress, labels.stress)
        if labels.magmoms is not None and self.magmoms > 0:
            loss = loss + self.magmoms * atom_share * huber(out.magmoms, labels.magmoms)
        return loss


@dataclass
class Labels:
    """Targets of one batch on the model's device: energy per atom (B,), forces (N, 3), stress (B, 3, 3),
    moments (N, 3) or (N,)."""

    energy_per_atom: torch.Tensor
    n_atoms: torch.Tensor
    forces: torch.Tensor | None
    stress: torch.Tensor | None
    magmoms: torch.Tensor | None = None


def batch_labels(data: LabelledSet, rows: Sequence[int], device: torch.device) -> Labels:
    """The labels of frames ``rows`` of ``data``, in float64 on ``device``."""
    counts = data.n_atoms()[list(rows)]
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)  # noqa: E731
    return Labels(
        energy_per_atom=as_tensor(data.energy[list(rows)] / counts),
        n_atoms=torch.as_tensor(counts, device=device),
        forces=as_tensor(np.concatenate([data.forces[i] for i in rows])) if data.forces is not None else None,
        stress=as_tensor(data.stress[list(rows)]) if data.stress is not None else None,
        magmoms=as_tensor(np.concatenate([data.magmoms[i] for i in rows])) if data.magmoms is not None else None,
    )



def evaluate(backbone: Backbone, graphs: Sequence[Any], data: LabelledSet, loss: PotentialLoss,
             max_atoms: int | None = None) -> dict[str, float]:
    """Loss and errors of ``backbone`` on ``data`` (graphs prebuilt): ``loss``, ``energy_mae``
    (meV/atom), ``forces_mae`` (meV/Å, over components), ``stress_mae`` (GPa) where labelled, and with
    moments ``magmoms_mae`` (μB, over components) and ``magmom_magnitude_mae`` (μB, of |m|). Frames are
    evaluated in batches of :func:`~ase_moma.finetune.chunks.evaluation_batches` (``max_atoms`` atoms)."""
    losses, sizes, energy, forces, stress, moments, magnitudes = [], [], [], [], [], [], []
    for rows in evaluation_batches(data.n_atoms(), max_atoms):
        labels = batch_labels(data, rows, backbone.device)
        out = backbone.forward(backbone.collate([graphs[i] for i in rows]), forces=labels.forces is not None,
                               stress=labels.stress is not None)
        losses.append(float(loss(out, labels).detach()) * len(rows))
        sizes.append(len(rows))
        energy.append((out.energy.detach().double() / labels.n_atoms - labels.energy_per_atom).abs().cpu())
        if labels.forces is not None:
            forces.append((out.forces.detach().double() - labels.forces).abs().reshape(-1).cpu())
        if labels.stress is not None:
            stress.append((out.stress.detach().double() - labels.stress).abs().reshape(-1).cpu())
        if labels.magmoms is not None:
            predicted = out.magmoms.detach().double()
            moments.append((predicted - labels.magmoms).abs().reshape(-1).cpu())
            magnitudes.append((_magnitude(predicted) - _magnitude(labels.magmoms)).abs().cpu())
    metrics = {"loss": sum(losses) / sum(sizes), "energy_mae": 1000 * float(torch.cat(energy).mean())}
    if forces:
        metrics["forces_mae"] = 1000 * float(torch.cat(forces).mean())
    if stress:
        metrics["stress_mae"] = EV_PER_A3_IN_GPA * float(torch.cat(stress).mean())
    if moments:
        metrics["magmoms_mae"] = float(torch.cat(moments).mean())
        metrics["magmom_magnitude_mae"] = float(torch.cat(magnitudes).mean())
    return metrics


def _magnitude(moments: torch.Tensor) -> torch.Tensor:
    """|m| per atom of (N, 3) vectors or (N,) signed scalars."""
    return moments.norm(dim=-1) if moments.ndim == 2 else moments.abs()
