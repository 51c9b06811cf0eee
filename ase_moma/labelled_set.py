"""Structures and their labels: the one dataset class under every model ase-moma trains.

A property model reads one number per structure (``targets``, named by ``key``); a potential reads
energies, forces, stresses and, for a spin head, magnetic moments. Both are a :class:`LabelledSet`
holding the labels it has (the others are None); the readers — ``labelled_data.read_labelled`` for
properties, ``finetune.potential_data.read_potential_set`` for potentials — check them and name the
frame at fault.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms

from ase_moma.structures import add_geometry


@dataclass
class LabelledSet:
    """Frames and their labels.

    frames: the structures; source: the file (or a description) they came from; indices: each
    frame's position in ``source``.
    targets: (M,) float64, one property per structure, read from ``atoms.info[key]``.
    energy: (M,) eV. forces: one (n_i, 3) eV/Å array per frame. stress: (M, 3, 3) eV/Å³ (ASE sign).
    magmoms: one (n_i, 3) or (n_i,) μB array per frame. A label the set does not carry is None.
    dropped: positions in ``source`` of frames left out while reading (a stress above the bound).
    """

    frames: list[Atoms]
    source: str
    indices: list[int]
    targets: np.ndarray | None = None
    key: str | None = None
    energy: np.ndarray | None = None
    forces: list[np.ndarray] | None = None
    stress: np.ndarray | None = None
    magmoms: list[np.ndarray] | None = None
    dropped: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, positions: Sequence[int]) -> "LabelledSet":
        """The frames at ``positions`` (positions in this set, not in the file) with their labels."""
        rows = [int(i) for i in positions]

        def pick(labels):
            if labels is None:
                return None
            return labels[rows] if isinstance(labels, np.ndarray) else [labels[i] for i in rows]

        return LabelledSet([self.frames[i] for i in rows], self.source, [self.indices[i] for i in rows],
                           pick(self.targets), self.key, pick(self.energy), pick(self.forces), pick(self.stress),
                           pick(self.magmoms), list(self.dropped))

    def n_atoms(self) -> np.ndarray:
        """(M,) atoms per frame."""
        return np.array([len(atoms) for atoms in self.frames])

    def elements(self) -> list[str]:
        """The chemical symbols present in any frame, in order of atomic number."""
        from ase.data import chemical_symbols

        numbers = sorted({int(z) for atoms in self.frames for z in atoms.numbers})
        return [chemical_symbols[z] for z in numbers]

    def data_hash(self) -> str:
        """sha256 of the structures (see :func:`structures_hash`) and every label the set carries, in order
        (targets, energy, forces, stress, magmoms)."""
        digest = hashlib.sha256(structures_hash(self.frames).encode())
        for labels in (self.targets, self.energy, self.forces, self.stress, self.magmoms):
            if labels is None:
                continue
            for part in ([labels] if isinstance(labels, np.ndarray) else labels):
                digest.update(np.ascontiguousarray(part, dtype=np.float64).tobytes())
        return digest.hexdigest()


def structures_hash(frames: Sequence[Atoms]) -> str:
    """sha256 of the species, positions, cells and pbc of ``frames``, in order."""
    digest = hashlib.sha256()
    for atoms in frames:
        add_geometry(digest, atoms)
    return digest.hexdigest()
