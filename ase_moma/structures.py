"""Turning user input into checked ``ase.Atoms``.

Every structure that reaches a model passes :func:`check_atoms`, so bad input
fails with a message naming the problem rather than deep inside a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols


def as_atoms(structure: Any) -> Atoms:
    """An ``ase.Atoms`` from an ``ase.Atoms`` or a pymatgen ``Structure``/``Molecule``."""
    if isinstance(structure, Atoms):
        return structure
    module = type(structure).__module__
    if module.startswith("pymatgen"):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise TypeError(
        f"expected ase.Atoms or a pymatgen Structure/Molecule, got {type(structure).__name__}"
    )


def check_atoms(atoms: Atoms, covered_numbers: Iterable[int], model: str) -> None:
    """Raise ValueError/TypeError naming the problem if ``atoms`` cannot be evaluated.

    Checks: an ``ase.Atoms``; at least one atom; finite positions and cell; a
    non-singular cell along periodic directions; elements the model covers.
    """
    if not isinstance(atoms, Atoms):
        raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError("the structure has zero atoms")
    positions = atoms.positions
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise ValueError(f"non-finite (NaN/inf) positions for atoms {bad[:10].tolist()}")
    cell = np.asarray(atoms.cell)
    if not np.all(np.isfinite(cell)):
        raise ValueError("the cell has non-finite (NaN/inf) entries")
    if atoms.pbc.any():
        periodic = cell[atoms.pbc]
        if np.linalg.matrix_rank(periodic, tol=1e-8) < len(periodic):
            raise ValueError(
                f"the cell is singular along periodic directions (pbc={atoms.pbc.tolist()}, "
                f"cell={cell.round(6).tolist()}): give each periodic direction a non-zero, "
                "independent cell vector, or set pbc=False there"
            )
    covered = set(covered_numbers)
    missing = sorted(set(atoms.numbers.tolist()) - covered)
    if missing:
        names = ", ".join(_symbol(z) for z in missing)
        supported = " ".join(_symbol(z) for z in sorted(covered))
        raise ValueError(
            f"{model} does not cover element(s) {names}; it covers: {supported}"
        )


def add_geometry(digest: "hashlib._Hash", atoms: Atoms, decimals: int | None = None) -> None:
    """Feed a structure's geometry to a hashlib ``digest``: atomic numbers (int64), positions and cell
    (float64, rounded to ``decimals`` places of Å when given, so coordinates that differ only in the last
    bits of a file's text hash alike), periodicity (one byte each). The one geometry hash behind the data
    hashes, the description cache and the spin-order pairs."""
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for array in (atoms.positions, atoms.cell.array):
        values = np.asarray(array, dtype=np.float64)
        digest.update(np.ascontiguousarray(values if decimals is None else np.round(values, decimals)).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=bool).tobytes())


def has_volume(atoms: Atoms) -> bool:
    """True when the cell spans three dimensions, so stress is defined."""
    return bool(atoms.cell.rank == 3 and abs(atoms.cell.volume) > 1e-8)


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


def read_structures(path: str | Path, what: str = "structure file") -> list[Atoms]:
    """Every frame of ``path`` (any format ase.io reads); ValueError if it holds none."""
    import ase.io

    from ase_moma.checkpoints import require_file

    path = require_file(path, what)
    if Path(path).stat().st_size == 0:
        raise ValueError(f"{path} is empty: it holds no structures")
    try:
        frames = ase.io.read(path, ":")
    except StopIteration:
        frames = []
    if not frames:
        raise ValueError(f"{path} holds no structures")
    return frames
