"""Small labelled sets for fine-tuning tests: EMT copper, CHGNet-labelled iron and real mlearn Si subsets.

The mlearn frames are the subsets shipped in the repository's ``data/mlip`` (BSD-3-Clause, see
data/README.md), so these tests run wherever the repository is checked out.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_moma.finetune.potential_data import label_frames

MLIP = Path(__file__).resolve().parents[1] / "data" / "mlip"


def emt_copper(count: int, seed: int) -> list[Atoms]:
    """``count`` strained, rattled 4-atom fcc Cu cells labelled by ASE's EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    return label_frames(frames, EMT())


def small_mlearn_si(tmp: Path) -> tuple[Path, Path]:
    """The smallest (≤ 24 atoms) real mlearn Si training frames, and the two smallest test frames."""
    train, test = MLIP / "mlearn_Si_training.extxyz", MLIP / "mlearn_Si_test.extxyz"
    frames = [a for a in ase.io.read(train, ":") if len(a) <= 24]
    valid = sorted(ase.io.read(test, ":"), key=len)[:2]
    ase.io.write(tmp / "si_train.extxyz", frames)
    ase.io.write(tmp / "si_valid.extxyz", valid)
    return tmp / "si_train.extxyz", tmp / "si_valid.extxyz"


def small_iron(tmp: Path, count: int = 12) -> Path:
    """``count`` iron cells of 4–8 atoms labelled by CHGNet 0.3.0 (energy, forces, stress, moments).

    bcc, fcc and hcp cells, each scaled by 0.94–1.06 in length, strained and rattled (seeded), so the moment
    magnitudes CHGNet gives follow the geometry (about 0.7–2.8 μB); each moment points along a seeded
    random direction (``arrays["magmoms_vector"]``, μB, N×3), its size in ``arrays["magmom_magnitude"]``.
    fe_spin (GPL-2.0) cannot ship with this MIT package, and a real model's moments are a known answer.
    """
    path = tmp / "fe_small.extxyz"
    if not path.is_file():
        ase.io.write(path, iron_frames(count))
    return path


def iron_frames(count: int) -> list[Atoms]:
    from ase_moma import load_calculator

    calc, rng, frames = load_calculator("chgnet", device="cpu"), np.random.default_rng(7), []
    for index in range(count):
        kind = ("bcc", "fcc", "hcp")[index % 3]
        atoms = (bulk("Fe", "hcp", a=2.48, c=4.0) if kind == "hcp" else
                 bulk("Fe", kind, a={"bcc": 2.83, "fcc": 3.6}[kind], cubic=True)) * (2, 1, 1)
        strain = rng.uniform(0.94, 1.06) * (np.eye(3) + rng.normal(0, 0.01, (3, 3)))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = calc
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        magnitude = np.abs(atoms.get_magnetic_moments())
        directions = rng.normal(size=(len(atoms), 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        labelled = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces, stress=stress)
        labelled.arrays["magmoms_vector"] = magnitude[:, None] * directions
        labelled.arrays["magmom_magnitude"] = magnitude
        frames.append(labelled)
    return frames
