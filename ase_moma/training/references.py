"""The one per-element reference-energy fit, shared by energy modules and potential fine-tuning.

A different DFT set-up (or a property defined per atom, like a formation
energy) shifts each element's reference energy. The shifts are the
least-squares solution of Σ_Z n_Z(structure) · shift_Z = E_label − E_backbone
over the training structures.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.backbone import Backbone
from ase_moma.heads import EnergyReference

BATCH = 16


@torch.no_grad()
def fit_reference_energies(backbone: Backbone, graphs: Sequence[Any], frames: Sequence[Atoms],
                           energies: np.ndarray) -> EnergyReference:
    """Shifts (eV per atom of each element) bridging the backbone's total energies and ``energies``
    (eV, (B,), one per frame of ``frames``, whose graphs are ``graphs``)."""
    predicted = torch.cat([backbone.energy(backbone.collate(graphs[start:start + BATCH])).double().cpu()
                           for start in range(0, len(graphs), BATCH)])
    compositions = [{int(z): int(n) for z, n in zip(*np.unique(atoms.numbers, return_counts=True))}
                    for atoms in frames]
    reference = EnergyReference()
    reference.fit(compositions, torch.as_tensor(np.asarray(energies, dtype=np.float64)) - predicted)
    return reference


def shifts_of(reference: EnergyReference, frames: Sequence[Atoms]) -> dict[int, float]:
    """``{Z: shift}`` for the elements present in ``frames``."""
    present = sorted({int(z) for atoms in frames for z in atoms.numbers})
    return {z: float(reference.shift[z]) for z in present}
