"""The spin head: equivariant moments, forces that include the exchange term, training, saving, MD."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from md_checks import NVE_BOUND, nve_spread
from potential_fixtures import small_iron
from scipy.spatial.transform import Rotation

from ase_moma import load_backbone, load_calculator
from ase_moma.calculators import MomaCalculator
from ase_moma.cli import main
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.finetune.spin_model import SpinBackbone


@pytest.fixture(scope="module")
def spin_models():
    """Vector and collinear heads (random, seeded) on a float64 SevenNet-0, moments and exchange made visible."""
    base = load_backbone("sevennet", device="cpu", dtype="float64")
    models = {}
    for kind in ("vector", "collinear"):
        torch.manual_seed(0)
        models[kind] = SpinBackbone.for_backbone(base, kind)
        with torch.no_grad():
            for last, bias in ((models[kind].head.exchange[-1], 0.05), (models[kind].head.moment[-1], 20.0)):
                torch.nn.init.normal_(last.weight, std=0.5)  # a fresh head starts at zero: make it act
                last.bias.fill_(bias)  # large moments: a clearly visible exchange energy
    return models


def _iron(seed: int = 0):
    atoms = bulk("Fe", "bcc", 2.87, cubic=True).repeat((2, 1, 1))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.random.default_rng(seed).normal(0, 0.01, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def _run(model, atoms):
    out = model.forward(model.collate([model.graph(atoms)]))
    return out.energy.detach(), out.forces.detach(), out.stress.detach(), out.magmoms.detach()


def test_vector_moments_rotate_and_survive_inversion(spin_models):
    model = spin_models["vector"]
    atoms = _iron(1)
    energy, forces, _, moments = _run(model, atoms)
    assert model.parameter_fraction() < 0.1 and moments.abs().max() > 0
    rotation = Rotation.random(random_state=2).as_matrix()
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rotation.T, scale_atoms=True)
    energy_r, forces_r, _, moments_r = _run(model, turned)
    torch.testing.assert_close(energy_r, energy, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(moments_r, moments @ torch.as_tensor(rotation).T, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(forces_r, forces @ torch.as_tensor(rotation).T, rtol=1e-8, atol=1e-8)
    inverted = atoms.copy()
    inverted.positions = -atoms.positions
    energy_i, _, _, moments_i = _run(model, inverted)
    torch.testing.assert_close(moments_i, moments, rtol=1e-8, atol=1e-8)  # axial vectors do not flip
    bare = [model.base.forward(model.base.collate([model.base.graph(a)])).energy.detach()
            for a in (atoms, inverted)]
    torch.testing.assert_close(energy_i - bare[1], energy - bare[0], rtol=1e-8, atol=1e-8)  # E_spin(−r) = E_spin(r)


def test_collinear_moments_are_invariant(spin_models):
    model = spin_models["collinear"]
    atoms = _iron(3)
    _, _, _, moments = _run(model, atoms)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ Rotation.random(random_state=5).as_matrix().T, scale_atoms=True)
    assert moments.shape == (len(atoms),)
    torch.testing.assert_close(_run(model, turned)[3], moments, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["vector", "collinear"])
def test_forces_and_stress_are_derivatives_of_the_total_energy(spin_models, kind):
    model = spin_models[kind]
    atoms = _iron(4)
    energy, forces, stress, _ = _run(model, atoms)
    bare = model.base.forward(model.base.collate([model.base.graph(atoms)]))
    assert abs(float(energy[0] - bare.energy[0])) > 1e-4  # the exchange term is really there
    step = 1e-4
    for index, axis in [(0, 0), (2, 2), (3, 1)]:
        shifted = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[index, axis] += sign * step
            shifted.append(float(_run(model, moved)[0][0]))
        assert -(shifted[0] - shifted[1]) / (2 * step) == pytest.approx(float(forces[index, axis]), rel=1e-5, abs=1e-6)
    strained = []
    for sign in (1, -1):
        moved = atoms.copy()
        deformation = np.eye(3)
        deformation[0, 1] = deformation[1, 0] = sign * step / 2
        moved.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
        strained.append(float(_run(model, moved)[0][0]))
    derivative = (strained[0] - strained[1]) / (2 * step) / atoms.get_volume()
    assert derivative == pytest.approx(float(stress[0, 0, 1]), rel=1e-5, abs=1e-6)


def test_training_on_real_iron_lowers_the_moment_error(tmp_path):
    path = small_iron(tmp_path)
    frames = ase.io.read(path, ":")
    train = read_potential_set(frames[:8], forces=True, stress=True, magmoms="vector")
    valid = read_potential_set(frames[8:], forces=True, stress=True, magmoms="vector")
    backbone = load_backbone("sevennet", device="cpu")
    config = FinetuneConfig(method="zero_shot", spin_head="vector", batch_size=4, epochs=4, max_steps=8,
                            head_lr=1e-2)
    tuner = Finetuner(backbone, config)
    result = tuner.fit(train, valid, progress=False)
    errors = [row["val_magmoms_mae"] for row in result.history]
    assert min(errors[1:]) < errors[0]
    assert set(tuner.export()) <= {"rescale_atomic_energy.shift"}  # the backbone itself stayed frozen


def test_frames_without_moments_are_named(tmp_path):
    path = small_iron(tmp_path)
    frames = ase.io.read(path, ":4")
    del frames[2].arrays["magmoms_vector"]
    with pytest.raises(ValueError, match="frame 2 of the training set has no magnetic moments"):
        read_potential_set(frames, forces=True, stress=True, magmoms="vector", what="training set")
    collinear = read_potential_set(frames[:2], forces=True, stress=True, magmoms="collinear")
    np.testing.assert_allclose(np.abs(collinear.magmoms[0]), frames[0].arrays["magmom_magnitude"], rtol=1e-6)


def test_saved_head_gives_magnetic_moments_in_ase_and_conserves_energy(tmp_path):
    path = small_iron(tmp_path)
    out = tmp_path / "fe_tuned"
    assert main(["finetune", "--backbone", "sevennet", "--train", str(path), "--valid", str(path),
                 "--method", "sparse", "--spin-head", "vector", "--max-steps", "1", "--batch-size", "4",
                 "-o", str(out), "--device", "cpu"]) == 0
    calc = load_calculator(str(out), device="cpu")
    assert isinstance(calc, MomaCalculator) and "magmoms" in calc.implemented_properties
    atoms = _iron(6)
    atoms.calc = calc
    moments = atoms.get_magnetic_moments()
    assert moments.shape == (len(atoms), 3)
    np.testing.assert_allclose(atoms.get_magnetic_moment(), moments.sum(0), atol=1e-6)
    bare = _iron(6)
    bare.calc = load_calculator("sevennet", device="cpu")
    assert nve_spread(atoms, steps=30, temperature=300) < NVE_BOUND
    assert nve_spread(bare, steps=30, temperature=300) < NVE_BOUND
