"""Labelled structures for fine-tuning a potential: DFT energies, forces and stress.

Labels are read the way ASE stores them (``atoms.get_potential_energy()``,
``get_forces()``, ``get_stress()``; extended XYZ puts them there): eV, eV/Å and
eV/Å³ with ASE's sign. Every check names the file and frame at fault.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from ase_moma.labelled_data import structures_hash
from ase_moma.structures import has_volume, read_structures

MAX_STRESS = 1.0  # eV/Å³ (160 GPa): a larger DFT stress was almost surely written in GPa or kbar


@dataclass
class PotentialSet:
    """Structures with their labels.

    energy: (B,) eV. forces: one (n_i, 3) eV/Å array per frame, or None when
    forces are not used. stress: (B, 3, 3) eV/Å³ (ASE sign), or None.
    source: the file (or a description) the frames came from.
    """

    frames: list[Atoms]
    energy: np.ndarray
    forces: list[np.ndarray] | None
    stress: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.frames)

    def n_atoms(self) -> np.ndarray:
        """(B,) atoms per frame."""
        return np.array([len(atoms) for atoms in self.frames])

    def data_hash(self) -> str:
        """sha256 of the structures and every label used, in order."""
        digest = hashlib.sha256(structures_hash(self.frames).encode())
        for part in (self.energy, *(self.forces or []), *([self.stress] if self.stress is not None else [])):
            digest.update(np.ascontiguousarray(part, dtype=np.float64).tobytes())
        return digest.hexdigest()


def read_potential_set(source: str | Path | Sequence[Atoms], *, forces: bool, stress: bool,
                       what: str = "data") -> PotentialSet:
    """Read and check a labelled set.

    source: a file any ase.io format reads, or frames with a calculator holding
    the labels. forces, stress: whether those labels are needed (their loss
    weight is positive); a frame without them is an error that names it.
    what: the set's role (``"training set"``), for messages.
    """
    if isinstance(source, (str, Path)):
        frames, name = read_structures(source, what), str(source)
    else:
        frames, name = list(source), f"the {what}"
    if not frames:
        raise ValueError(f"{name} ({what}) holds no structures; fine-tuning needs at least one")
    energy = np.array([_energy(atoms, i, name) for i, atoms in enumerate(frames)])
    return PotentialSet(
        frames=frames, energy=energy,
        forces=[_forces(atoms, i, name) for i, atoms in enumerate(frames)] if forces else None,
        stress=np.stack([_stress(atoms, i, name) for i, atoms in enumerate(frames)]) if stress else None,
        source=name,
    )


def _results(atoms: Atoms) -> dict:
    return atoms.calc.results if atoms.calc is not None else {}


def _energy(atoms: Atoms, index: int, name: str) -> float:
    value = _results(atoms).get("energy", _results(atoms).get("free_energy"))
    if value is None:
        raise ValueError(f"frame {index} of {name} has no energy label (extended XYZ: energy=... in the "
                         "comment line)")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"frame {index} of {name} has a non-finite energy ({value})")
    return value


def _forces(atoms: Atoms, index: int, name: str) -> np.ndarray:
    value = _results(atoms).get("forces")
    if value is None:
        raise ValueError(f"frame {index} of {name} has no forces, but the forces are weighted in the loss; "
                         "label every frame or set the forces weight to 0")
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (len(atoms), 3) or not np.all(np.isfinite(value)):
        raise ValueError(f"frame {index} of {name}: forces must be finite with shape ({len(atoms)}, 3), "
                         f"got shape {value.shape}")
    return value


def _stress(atoms: Atoms, index: int, name: str) -> np.ndarray:
    value = _results(atoms).get("stress")
    if value is None:
        raise ValueError(f"frame {index} of {name} has no stress (in eV/Å³), but the stress is weighted in "
                         "the loss; label every frame or set the stress weight to 0")
    if not has_volume(atoms):
        raise ValueError(f"frame {index} of {name} has a stress label but no three-dimensional cell")
    value = np.asarray(value, dtype=np.float64)
    if value.shape == (6,):
        xx, yy, zz, yz, xz, xy = value
        value = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if value.shape != (3, 3) or not np.all(np.isfinite(value)):
        raise ValueError(f"frame {index} of {name}: stress must be finite, Voigt (6,) or (3, 3)")
    largest = float(np.abs(value).max())
    if largest > MAX_STRESS:
        raise ValueError(f"frame {index} of {name} has a stress component of {largest:.4g}, over {MAX_STRESS} "
                         f"eV/Å³ (160 GPa): stress must be in eV/Å³ (ASE units); was it written in GPa or kbar? "
                         "Divide GPa by 160.2 (kbar by 1602) to convert")
    return value


def split_frames(frames: Sequence[Atoms], fractions: tuple[float, float, float], seed: int
                 ) -> tuple[list[Atoms], list[Atoms], list[Atoms]]:
    """A seeded random train/validation/test partition of ``frames`` by ``fractions`` (summing to 1)."""
    if abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_train = int(round(fractions[0] * len(frames)))
    n_val = int(round(fractions[1] * len(frames)))
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    return tuple([frames[i] for i in part] for part in parts)
