"""Forces and stress are energy derivatives; energy and embeddings respect symmetry."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from conftest import BACKBONES, random_rotation

# float64 backbones: central differences with d = 1e-4 Å err by O(d²·E''') ~ 1e-8;
# chgnet runs in float32, where energy rounding (~1e-6 eV) over 2d dominates: ~5e-3.
FD_TOLERANCE = {"chgnet": (5e-3, 5e-4)}
FD_STEP = {"chgnet": (1e-2, 1e-3)}


@pytest.mark.parametrize("name", BACKBONES)
def test_forces_and_stress_match_finite_differences(calculator, sic, name):
    sic.calc = calculator(name)
    force_tol, stress_tol = FD_TOLERANCE.get(name, (1e-6, 1e-7))
    force_step, strain_step = FD_STEP.get(name, (1e-4, 1e-5))
    assert np.abs(calculate_numerical_forces(sic, force_step) - sic.get_forces()).max() < force_tol
    assert np.abs(calculate_numerical_stress(sic, strain_step) - sic.get_stress()).max() < stress_tol


@pytest.mark.parametrize("name", BACKBONES)
def test_molecule_forces_match_finite_differences(calculator, methane, name):
    methane.calc = calculator(name)
    force_tol = FD_TOLERANCE.get(name, (1e-6, 0))[0]
    step = FD_STEP.get(name, (1e-4, 0))[0]
    assert np.abs(calculate_numerical_forces(methane, step) - methane.get_forces()).max() < force_tol


def _transformed(atoms, rotation, shift, order):
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    moved.positions = atoms.positions @ rotation.T + shift
    return moved[order]


# Orb is not equivariant by construction (it learns rotational symmetry from data), so for
# it only translation and permutation symmetry are exact.
EXACTLY_ROTATION_INVARIANT = [name for name in BACKBONES if name != "orb"]


def test_orb_is_not_rotation_invariant_by_construction(calculator, silicon):
    rotated = _transformed(silicon, random_rotation(seed=11), np.zeros(3), np.arange(len(silicon)))
    silicon.calc = rotated.calc = calculator("orb")
    assert abs(rotated.get_potential_energy() - silicon.get_potential_energy()) > 1e-6


@pytest.mark.parametrize("name", BACKBONES)
def test_rotation_translation_permutation(calculator, silicon, name):
    calc = calculator(name)
    tol = 1e-4 if name == "chgnet" else 1e-8
    rotation = random_rotation(seed=11) if name in EXACTLY_ROTATION_INVARIANT else np.identity(3)
    order = np.random.default_rng(0).permutation(len(silicon))
    moved = _transformed(silicon, rotation, np.array([0.3, -1.2, 2.5]), order)
    silicon.calc, moved.calc = calc, calc
    energy, forces, stress = silicon.get_potential_energy(), silicon.get_forces(), silicon.get_stress(voigt=False)
    assert abs(moved.get_potential_energy() - energy) < tol * len(silicon)
    assert np.abs(moved.get_forces() - (forces @ rotation.T)[order]).max() < 10 * tol
    assert np.abs(moved.get_stress(voigt=False) - rotation @ stress @ rotation.T).max() < tol


@pytest.mark.parametrize("name", BACKBONES)
def test_embedding_is_invariant(calculator, silicon, methane, name):
    backbone = calculator(name).backbone
    rotation = random_rotation(seed=4) if name in EXACTLY_ROTATION_INVARIANT else np.identity(3)
    order = np.random.default_rng(1).permutation(len(silicon))
    moved = _transformed(silicon, rotation, np.array([1.0, 2.0, -0.5]), order)
    mol = methane.copy()
    mol.positions = methane.positions @ rotation.T + 3.0
    embeddings = backbone.embed([silicon, moved, methane, mol[::-1]])
    assert embeddings.ndim == 2 and embeddings.shape[0] == 4
    tol = 1e-4 if name == "chgnet" else 1e-8
    assert (embeddings[0] - embeddings[1]).abs().max() < tol
    assert (embeddings[2] - embeddings[3]).abs().max() < tol
    assert (embeddings[0] - embeddings[2]).abs().max() > 1e-3  # different structures differ
