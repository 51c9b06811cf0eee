"""Small labelled sets for fine-tuning tests: EMT copper (always available) and real mlearn Si subsets."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_moma.finetune.potential_data import label_frames

MLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlip"


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
    if not train.is_file():
        pytest.skip(f"real data not found at {train} (../shared/data is absent)")
    frames = [a for a in ase.io.read(train, ":") if len(a) <= 24]
    valid = sorted(ase.io.read(test, ":"), key=len)[:2]
    ase.io.write(tmp / "si_train.extxyz", frames)
    ase.io.write(tmp / "si_valid.extxyz", valid)
    return tmp / "si_train.extxyz", tmp / "si_valid.extxyz"


def small_iron(tmp: Path, count: int = 12) -> Path:
    """The first ``count`` real fe_spin frames with at most 16 atoms (energy, forces, stress, moments)."""
    source = MLIP.parent / "magnetic" / "fe_spin.extxyz"
    if not source.is_file():
        pytest.skip(f"real data not found at {source} (../shared/data is absent)")
    frames = [a for a in ase.io.read(source, ":400") if len(a) <= 16][:count]
    ase.io.write(tmp / "fe_small.extxyz", frames)
    return tmp / "fe_small.extxyz"
