"""Batched evaluation of many structures through one backbone (property screening)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress
from tqdm.auto import tqdm

from ase_moma.backbone import Backbone, BackboneOutput
from ase_moma.structures import as_atoms, has_volume

PROGRESS_THRESHOLD = 64


def predict(backbone: Backbone, structures: Iterable[Any], batch_size: int = 16,
            progress: bool | None = None) -> list[dict[str, Any]]:
    """Energy, forces, stress (and moments) for each structure, ``batch_size`` at a time.

    structures: ``ase.Atoms`` or pymatgen ``Structure``/``Molecule`` objects.
    Returns one dict per structure in input order with ``energy``/``free_energy``
    (eV), ``forces`` (N, 3) eV/Å, ``stress`` (6,) eV/Å³ in ASE Voigt order when
    the cell is three-dimensional, and ``magmoms``/``magmom`` (μB) when the
    backbone predicts them. Every structure is checked before any is evaluated.
    progress: show a progress bar; None shows one for more than 64 structures.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    atoms_list = [as_atoms(s) for s in structures]
    graphs = []
    for index, atoms in enumerate(atoms_list):
        try:
            graphs.append(backbone.graph(atoms))
        except (ValueError, TypeError) as error:
            raise type(error)(f"structure {index}: {error}") from None
    show = len(atoms_list) > PROGRESS_THRESHOLD if progress is None else progress
    results: list[dict[str, Any]] = []
    with tqdm(total=len(atoms_list), disable=not show, unit="structure",
              desc=f"{backbone.name} predict") as bar:
        for start in range(0, len(graphs), batch_size):
            chunk = atoms_list[start:start + batch_size]
            out = backbone.forward(backbone.collate(graphs[start:start + batch_size]))
            results.extend(split_output(out, chunk))
            bar.update(len(chunk))
    return results


def split_output(out: BackboneOutput, atoms_list: list) -> list[dict[str, Any]]:
    """Per-structure ASE result dicts (float64 numpy) from a batched output."""
    energy = out.energy.detach().cpu().double().numpy()
    counts = [len(atoms) for atoms in atoms_list]
    bounds = np.cumsum([0] + counts)
    forces = _numpy(out.forces)
    stress = _numpy(out.stress)
    magmoms = _numpy(out.magmoms)
    rows = []
    for i, atoms in enumerate(atoms_list):
        lo, hi = bounds[i], bounds[i + 1]
        row: dict[str, Any] = {"energy": float(energy[i]), "free_energy": float(energy[i])}
        if forces is not None:
            row["forces"] = forces[lo:hi]
        if stress is not None and has_volume(atoms):
            row["stress"] = full_3x3_to_voigt_6_stress(stress[i])
        if magmoms is not None:
            row["magmoms"] = magmoms[lo:hi]
            row["magmom"] = float(magmoms[lo:hi].sum()) if magmoms.ndim == 1 else magmoms[lo:hi].sum(0)
        rows.append(row)
    return rows


def _numpy(tensor: Any) -> np.ndarray | None:
    return None if tensor is None else tensor.detach().cpu().double().numpy()
