"""One dataset class for property and potential labels: reading, subsets and the data hash."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from ase_moma.finetune.potential_data import label_frames, read_potential_set
from ase_moma.labelled_data import read_labelled
from ase_moma.labelled_set import LabelledSet


def _frames(count: int = 4):
    frames = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.02 * k, cubic=True)
        atoms.rattle(0.02, seed=k)
        atoms.info["gap"] = 0.5 * k
        frames.append(atoms)
    return label_frames(frames, EMT())


def test_both_readers_give_the_one_class_with_aligned_subsets(tmp_path):
    path = tmp_path / "cu.extxyz"
    write(path, _frames())
    potential = read_potential_set(path, forces=True, stress=True)
    prop = read_labelled(path, "gap", [3, 1, 2])
    assert type(potential) is LabelledSet and type(prop) is LabelledSet
    assert potential.targets is None and prop.energy is None and prop.key == "gap"

    picked = potential.subset([2, 0])
    assert picked.indices == [2, 0]
    np.testing.assert_array_equal(picked.energy, potential.energy[[2, 0]])
    np.testing.assert_array_equal(picked.forces[0], potential.forces[2])
    np.testing.assert_array_equal(picked.stress[1], potential.stress[0])
    assert picked.frames[0] is potential.frames[2]

    again = prop.subset([1])
    assert again.indices == [1] and again.targets.tolist() == [0.5]


def test_the_data_hash_follows_every_label_and_only_them(tmp_path):
    path = tmp_path / "cu.extxyz"
    write(path, _frames())
    data = read_potential_set(path, forces=True, stress=True)
    assert data.data_hash() == read_potential_set(path, forces=True, stress=True).data_hash()
    assert data.data_hash() != read_potential_set(path, forces=True, stress=False).data_hash()
    shifted = data.subset(range(len(data)))
    shifted.forces[1] = shifted.forces[1] + 1e-6
    assert shifted.data_hash() != data.data_hash()
    assert data.subset([1, 0]).data_hash() != data.subset([0, 1]).data_hash()
