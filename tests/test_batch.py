"""Batched predict gives the numbers of one-at-a-time calls, for every input kind."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from conftest import BACKBONES, real_frames


def _structures():
    crystals = [bulk("Si", "diamond", 5.40 + 0.02 * i) for i in range(3)]
    for i, atoms in enumerate(crystals):
        atoms.rattle(0.03, seed=i)
    return crystals + [molecule("CH4"), bulk("SiC", "zincblende", 4.36).repeat((2, 1, 1))]


@pytest.mark.parametrize("name", BACKBONES)
def test_batch_equals_single_calls(calculator, name):
    calc = calculator(name, "float64")
    structures = _structures()
    batched = calc.predict(structures, batch_size=3)
    tol = 1e-5 if name == "chgnet" else 1e-9
    for atoms, result in zip(structures, batched):
        atoms.calc = calc
        assert abs(result["energy"] - atoms.get_potential_energy()) < tol * len(atoms)
        assert np.abs(result["forces"] - atoms.get_forces()).max() < 10 * tol
        if atoms.pbc.all():
            assert np.abs(result["stress"] - atoms.get_stress()).max() < tol
        else:
            assert "stress" not in result


def test_batch_accepts_pymatgen_structures_and_real_frames(calculator):
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = calculator("sevennet", "float32")
    frames = real_frames("mlearn_Si_test.extxyz", 4)
    structures = [AseAtomsAdaptor.get_structure(a) for a in frames]
    from_pymatgen = calc.predict(structures, batch_size=2)
    from_ase = calc.predict(frames, batch_size=4)
    for a, b in zip(from_pymatgen, from_ase):
        assert abs(a["energy"] - b["energy"]) < 1e-4
        assert np.abs(a["forces"] - b["forces"]).max() < 1e-4


def test_chgnet_batch_returns_magnetic_moments(calculator):
    calc = calculator("chgnet")
    iron = bulk("Fe", "bcc", 2.86, cubic=True)
    results = calc.predict([iron, iron.repeat((2, 1, 1))])
    assert results[0]["magmoms"].shape == (2,)
    assert results[1]["magmoms"].shape == (4,)
    assert results[0]["magmom"] == pytest.approx(results[0]["magmoms"].sum())
    iron.calc = calc
    assert np.allclose(iron.get_magnetic_moments(), results[0]["magmoms"], atol=1e-5)
    assert iron.get_magnetic_moment() == pytest.approx(results[0]["magmom"], abs=1e-5)


def test_progress_bar_shows_for_long_lists(calculator, capsys):
    calc = calculator("sevennet", "float32")
    calc.predict([bulk("Si", "diamond", 5.43)] * 3, progress=True)
    assert "predict" in capsys.readouterr().err
    calc.predict([bulk("Si", "diamond", 5.43)] * 3)
    assert capsys.readouterr().err == ""
