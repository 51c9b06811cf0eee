"""The spin head: spin configuration in (as DFT users set it), magnitudes from geometry, exchange energy out."""

from __future__ import annotations

import copy
import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.optimize import BFGS
from loading_imports import training_imported_by_loading
from md_checks import NVE_BOUND, nve_spread
from potential_fixtures import small_iron
from safetensors.torch import load_file, save_file
from scipy.spatial.transform import Rotation

from ase_moma import load_backbone, load_calculator
from ase_moma.calculators import MomaCalculator
from ase_moma.cli import main
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.module_files import sha256_file
from ase_moma.spin.head import LANDAU_WIDTH, SQUARE_FLOOR, SpinHead
from ase_moma.spin.model import SpinBackbone


@pytest.fixture(scope="module")
def spin_model():
    """A head on a float64 SevenNet-0 with random weights, magnitudes that read the local order, an exchange
    term of 0.02 eV/atom on a rattled antiferromagnet and Landau terms of about as much (a fresh head adds
    none)."""
    base = load_backbone("sevennet", device="cpu", dtype="float64")
    torch.manual_seed(0)
    model = SpinBackbone.for_backbone(base, "vector", initial_magnitude=2.0)
    with torch.no_grad():
        torch.nn.init.normal_(model.head.magnitude[-1].weight, std=0.1)
        torch.nn.init.normal_(model.head.order.weight, std=0.1)
        torch.nn.init.normal_(model.head.landau.weight, std=0.005 / model.head.exchange_unit)
        torch.nn.init.normal_(model.head.exchange[-1].weight, std=0.05 / model.head.exchange_unit)
        model.head.exchange[-1].bias.fill_(0.01 / model.head.exchange_unit)
        atoms = _iron(0, [2.2, -2.2, 2.2, -2.2])  # J scaled to 0.02 eV/atom on this antiferromagnet
        exchange = float(model.energy(model.collate([model.graph(atoms)]))[0]
                         - base.energy(base.collate([base.graph(atoms)]))[0]) / len(atoms)
        model.head.exchange[-1].weight.mul_(abs(0.02 / exchange))
        model.head.exchange[-1].bias.mul_(abs(0.02 / exchange))
    return model


def _iron(seed: int = 0, spins=None):
    atoms = bulk("Fe", "bcc", 2.87, cubic=True).repeat((2, 1, 1))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.random.default_rng(seed).normal(0, 0.01, (3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    if spins is not None:
        atoms.set_initial_magnetic_moments(None)  # ASE keeps the array's shape otherwise
        atoms.set_initial_magnetic_moments(spins)
    return atoms


def _nickel_oxide(order: str):
    """Rock-salt NiO (8 atoms, conventional cell), Ni spins ferromagnetic or alternating by (001) layer."""
    atoms = bulk("NiO", "rocksalt", 4.18, cubic=True)
    atoms.rattle(0.03, seed=1)
    layer = np.where(atoms.positions[:, 2] < 1.0, 1.0, -1.0)
    moments = np.where(atoms.numbers == 28, 1.7 * (layer if order == "afm" else 1.0), 0.0)
    atoms.set_initial_magnetic_moments(moments)
    return atoms


def _run(model, atoms):
    out = model.forward(model.collate([model.graph(atoms)]))
    return out.energy.detach(), out.forces.detach(), out.stress.detach(), out.magmoms.detach()


def _force_by_difference(model, atoms, index: int, axis: int, step: float = 1e-4) -> float:
    """−∂E/∂r by central differences, at the structure's fixed spin configuration (eV/Å)."""
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[index, axis] += sign * step
        energies.append(float(_run(model, moved)[0][0]))
    return -(energies[0] - energies[1]) / (2 * step)


def _stress_by_difference(model, atoms, i: int, j: int, step: float = 1e-4) -> float:
    """(1/V) ∂E/∂ε_ij by central differences under a symmetric strain (eV/Å³)."""
    energies = []
    for sign in (1, -1):
        strained = atoms.copy()
        deformation = np.eye(3)
        deformation[i, j] = deformation[j, i] = sign * step / 2
        strained.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
        energies.append(float(_run(model, strained)[0][0]))
    return (energies[0] - energies[1]) / (2 * step) / atoms.get_volume()


def _random_spins(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, 3))
    return 2.2 * vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_parallel_moments_add_no_exchange_energy_or_force(spin_model):
    """The exchange is referenced to the parallel order; a head saved before that choice keeps ½ Σ J m_i·m_j
    (compared on magnitudes of geometry alone, one size in either order, as such heads had)."""
    direction = np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9])
    atoms = _iron(4, np.tile(2.2 * direction, (4, 1)))
    bare = spin_model.base.forward(spin_model.base.collate([spin_model.base.graph(atoms)]))
    energy, forces, stress, _ = _run(spin_model, atoms)
    torch.testing.assert_close(energy, bare.energy.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, bare.forces.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(stress, bare.stress.detach(), rtol=0, atol=1e-10)
    config = {**spin_model.head.config(), "local_order": False, "longitudinal": False}
    coupling = {k: v for k, v in spin_model.head.state_dict().items() if k.startswith(("exchange.", "species."))}
    newer, older = (SpinBackbone(spin_model.base, SpinHead(**{**config, "parallel_reference": reference}))
                    for reference in (True, False))
    for model in (newer, older):
        model.head.load_state_dict(coupling, strict=False)
    assert abs(float((_run(older, atoms)[0][0] - bare.energy[0]).detach())) > 1e-3  # ½ Σ J |m_i||m_j| on a ferromagnet
    afm = _iron(4, [2.2, -2.2] * 2)  # orders differ by the same amount in either form
    gaps = [float(_run(model, afm)[0][0] - _run(model, atoms)[0][0]) for model in (newer, older)]
    assert gaps[0] == pytest.approx(gaps[1], abs=1e-9)


@pytest.mark.parametrize("make", [lambda order: _iron(2, [2.2, -2.2 if order == "afm" else 2.2] * 2),
                                  _nickel_oxide], ids=["bcc_iron", "rocksalt_nio"])
def test_ferromagnetic_and_antiferromagnetic_orders_differ(spin_model, make):
    fm, afm = _run(spin_model, make("fm")), _run(spin_model, make("afm"))
    assert abs(float(fm[0][0] - afm[0][0])) > 1e-3  # eV
    assert float((fm[1] - afm[1]).abs().max()) > 1e-4  # eV/Å
    assert fm[3].shape == afm[3].shape == (len(make("fm")),)  # collinear input, signed moments out
    signs = np.sign(make("afm").get_initial_magnetic_moments())
    np.testing.assert_array_equal(np.sign(afm[3].numpy()), signs)  # the moments follow the configuration


def test_rotating_or_flipping_every_spin_leaves_the_energy_and_moments_follow(spin_model):
    spins = _random_spins(4, 3)
    energy, forces, stress, moments = _run(spin_model, _iron(3, spins))
    rotation = Rotation.random(random_state=4).as_matrix()
    for changed in (spins @ rotation.T, -spins):
        energy_c, forces_c, stress_c, moments_c = _run(spin_model, _iron(3, changed))
        torch.testing.assert_close(energy_c, energy, rtol=0, atol=1e-10)
        torch.testing.assert_close(forces_c, forces, rtol=0, atol=1e-10)
        torch.testing.assert_close(stress_c, stress, rtol=0, atol=1e-10)
        unit = changed / np.linalg.norm(changed, axis=1, keepdims=True)
        torch.testing.assert_close(moments_c, moments.norm(dim=1)[:, None] * torch.as_tensor(unit),
                                   rtol=0, atol=1e-10)


def test_rotating_the_structure_at_fixed_spins_keeps_energy_and_magnitudes(spin_model):
    spins = _random_spins(4, 5)
    atoms = _iron(5, spins)
    energy, _, _, moments = _run(spin_model, atoms)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ Rotation.random(random_state=6).as_matrix().T, scale_atoms=True)
    energy_t, _, _, moments_t = _run(spin_model, turned)
    torch.testing.assert_close(energy_t, energy, rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(moments_t.norm(dim=1), moments.norm(dim=1), rtol=1e-8, atol=1e-8)


def test_forces_and_stress_are_derivatives_of_the_total_at_fixed_spins(spin_model):
    atoms = _iron(4, _random_spins(4, 7))
    energy, forces, stress, _ = _run(spin_model, atoms)
    bare = spin_model.base.forward(spin_model.base.collate([spin_model.base.graph(atoms)]))
    assert abs(float(energy[0] - bare.energy[0])) > 1e-3  # the exchange term is really there
    for index, axis in [(0, 0), (2, 2), (3, 1)]:
        assert _force_by_difference(spin_model, atoms, index, axis) == pytest.approx(
            float(forces[index, axis]), rel=1e-5, abs=1e-6)
    assert _stress_by_difference(spin_model, atoms, 0, 1) == pytest.approx(float(stress[0, 0, 1]), rel=1e-5, abs=1e-6)


def test_magnitude_weights_learn_from_moments_only(spin_model):
    """The energy's gradient reaches J and the positions but not the magnitudes' weights; the moments' does."""
    model = copy.deepcopy(spin_model)
    model.head.requires_grad_(True)
    magnitude_weights = [model.head.probe.weight, model.head.magnitude[0].weight, model.head.magnitude[2].weight]
    out = model.forward(model.collate([model.graph(_iron(3, _random_spins(4, 3)))]), forces=False, stress=False)
    torch.autograd.backward(out.energy.sum(), inputs=magnitude_weights + [model.head.exchange[-1].weight])
    assert all(w.grad is None or not w.grad.any() for w in magnitude_weights)
    assert model.head.exchange[-1].weight.grad.abs().max() > 0
    out = model.forward(model.collate([model.graph(_iron(3, _random_spins(4, 3)))]), forces=False, stress=False)
    torch.autograd.backward(out.magmoms.norm(dim=-1).sum(), inputs=magnitude_weights)
    assert all(w.grad.abs().max() > 0 for w in magnitude_weights)


def test_without_input_moments_the_order_defaults_to_ferromagnetic_and_says_so(spin_model):
    unset = _iron(8)
    unset.set_initial_magnetic_moments(None)  # ase.build.bulk gives iron moments; a user's file may not
    with pytest.warns(UserWarning, match="assuming ferromagnetic order"):
        default = _run(spin_model, unset)
    explicit = _run(spin_model, _iron(8, [1.0] * 4))
    torch.testing.assert_close(default[0], explicit[0], rtol=0, atol=1e-12)


def test_calculator_moments_follow_the_input_form(spin_model):
    collinear, vector = _iron(9, [2.0, -2.0, 2.0, -2.0]), _iron(9, _random_spins(4, 9))
    for atoms, shape in ((collinear, (4,)), (vector, (4, 3))):
        atoms.calc = MomaCalculator(spin_model)
        moments = atoms.get_magnetic_moments()
        assert moments.shape == shape
        np.testing.assert_allclose(atoms.get_magnetic_moment(), moments.sum(0), atol=1e-10)
    assert abs(collinear.get_magnetic_moment()) < 0.5 * np.abs(collinear.get_magnetic_moments()).sum()


def test_magnitudes_of_iron_start_at_a_probe_that_follows_the_geometry(tmp_path):
    frames = ase.io.read(small_iron(tmp_path, count=24), ":")
    moments = read_potential_set(frames, forces=True, stress=True, magmoms="vector").magmoms
    backbone = load_backbone("sevennet", device="cpu", dtype="float64")
    model = SpinBackbone.for_backbone(backbone, "vector")
    parts = {}
    for name, rows in (("train", slice(0, None, 2)), ("test", slice(1, None, 2))):
        with torch.no_grad():  # the head reads the frozen backbone's invariant features
            features = backbone.node_features(backbone.collate([backbone.graph(a) for a in frames[rows]]))
        targets = torch.as_tensor(np.concatenate([np.linalg.norm(m, axis=1) for m in moments[rows]]))
        structures = torch.as_tensor(np.concatenate([[k] * len(a) for k, a in enumerate(frames[rows])]))
        parts[name] = features, targets, structures
    probe = model.head.start_from_probe(parts["train"][0].invariant, *parts["train"][1:])
    features, targets, _ = parts["test"]
    with torch.no_grad():
        predicted = model.head.magnitudes(features)
    square = torch.as_tensor(probe.predict(features.invariant.numpy()))  # the probe is of |m|², floored smoothly
    expected = torch.sqrt(LANDAU_WIDTH * torch.nn.functional.softplus(square / LANDAU_WIDTH) + SQUARE_FLOOR)
    torch.testing.assert_close(predicted, expected)  # the head starts exactly at the probe
    baseline = float((targets - parts["train"][1].mean()).abs().mean())  # every magnitude = the training mean
    assert float((predicted - targets).abs().mean()) < 0.7 * baseline  # held-out atoms follow the geometry


def test_a_head_trains_beside_a_frozen_backbone(tmp_path):
    frames = ase.io.read(small_iron(tmp_path), ":8")
    train = read_potential_set(frames, forces=True, stress=True, magmoms="collinear")
    backbone = load_backbone("sevennet", device="cpu")
    tuner = Finetuner(backbone, FinetuneConfig(method="zero_shot", spin_head="collinear", batch_size=4, epochs=1))
    head = {k: v.clone() for k, v in tuner.spin.head.state_dict().items()}
    result = tuner.fit(train, train, progress=False)
    assert result.steps == 2 and "magmoms_mae" in result.history[-1]
    assert any(not torch.equal(v, tuner.spin.head.state_dict()[k]) for k, v in head.items())
    assert set(tuner.export()) <= {"rescale_atomic_energy.shift"}  # the backbone itself stayed frozen


def test_zero_epochs_keep_the_heads_probe_start(tmp_path):
    frames = ase.io.read(small_iron(tmp_path), ":8")
    train = read_potential_set(frames, forces=True, stress=True, magmoms="vector")
    tuner = Finetuner(load_backbone("sevennet", device="cpu"),
                      FinetuneConfig(method="zero_shot", spin_head="vector", batch_size=4, epochs=0))
    result = tuner.fit(train, train, progress=False)
    assert result.steps == 0 and len(result.history) == 1
    assert tuner.spin.head.probe.weight.abs().max() > 0  # the ridge probe, not the constant start
    assert not tuner.spin.head.magnitude[-1].weight.any()


def test_frames_without_moments_are_named(tmp_path):
    path = small_iron(tmp_path)
    frames = ase.io.read(path, ":4")
    del frames[2].arrays["magmoms_vector"]
    with pytest.raises(ValueError, match="frame 2 of the training set has no magnetic moments"):
        read_potential_set(frames, forces=True, stress=True, magmoms="vector", what="training set")
    collinear = read_potential_set(frames[:2], forces=True, stress=True, magmoms="collinear")
    np.testing.assert_allclose(np.abs(collinear.magmoms[0]), frames[0].arrays["magmom_magnitude"], rtol=1e-6)


def test_saved_head_gives_magnetic_moments_in_ase(tmp_path):
    path = small_iron(tmp_path)
    out = tmp_path / "fe_tuned"
    assert main(["finetune", "--backbone", "sevennet", "--train", str(path), "--valid", str(path),
                 "--method", "sparse", "--spin-head", "vector", "--max-steps", "1", "--batch-size", "4",
                 "-o", str(out), "--device", "cpu"]) == 0
    assert training_imported_by_loading(out) == []
    calc = load_calculator(str(out), device="cpu")
    assert isinstance(calc, MomaCalculator) and "magmoms" in calc.implemented_properties
    assert calc.backbone.head.parallel_reference
    record = json.loads((out / "finetune.json").read_text())  # as written before the parallel reference
    for setting in ("parallel_reference", "longitudinal"):  # (and before the Landau terms, which came after it)
        del record["spin_head"]["config"][setting]
    record["schema"] = "ase-moma/finetune-1"  # a record of then: its head's settings are completed when read
    tensors = {k: v for k, v in load_file(out / "spin_head.safetensors").items() if not k.startswith("landau.")}
    tensors["order.weight"] = tensors["order.weight"][:, :8].contiguous()  # the order features alone, as then
    save_file(tensors, out / "spin_head.safetensors")
    record["files"]["spin_head.safetensors"] = sha256_file(out / "spin_head.safetensors")
    (out / "finetune.json").write_text(json.dumps(record))
    assert not load_backbone(str(out), device="cpu").head.parallel_reference
    atoms = _iron(6, _random_spins(4, 6))
    atoms.calc = calc
    moments = atoms.get_magnetic_moments()
    assert moments.shape == (len(atoms), 3) and np.all(np.linalg.norm(moments, axis=1) > 0)
    # ranking orders: one geometry given twice (AFM, then FM) beside another structure
    orders = [_iron(6, [2.2, -2.2] * 2), _iron(6, [2.2] * 4), _iron(7, [2.2] * 4)]
    ase.io.write(tmp_path / "orders.extxyz", orders)
    assert main(["predict", str(tmp_path / "orders.extxyz"), "--model", str(out), "--device", "cpu",
                 "-o", str(tmp_path / "ranked.extxyz")]) == 0
    ranked = ase.io.read(tmp_path / "ranked.extxyz", ":")
    per_atom = [atoms.get_potential_energy() / len(atoms) for atoms in ranked[:2]]
    assert [atoms.info["order_rank"] for atoms in ranked[:2]] == ([1, 0] if per_atom[0] > per_atom[1] else [0, 1])
    assert max(atoms.info["energy_above_lowest_order"] for atoms in ranked[:2]) == pytest.approx(
        abs(per_atom[0] - per_atom[1]), abs=1e-9)
    assert "order_rank" not in ranked[2].info  # a geometry given once has nothing to rank against


def test_nve_conserves_energy_with_a_clearly_nonzero_exchange_term(spin_model):
    model = SpinBackbone(spin_model.base, copy.deepcopy(spin_model.head))
    atoms = _iron(6, [2.2, -2.2, 2.2, -2.2])
    bare = float(model.base.energy(model.base.collate([model.base.graph(atoms)]))[0])
    exchange = float(model.energy(model.collate([model.graph(atoms)]))[0]) - bare
    with torch.no_grad():  # E_spin is linear in J's last layer and the Landau layer: scale it to 0.02 eV/atom
        for last in (model.head.exchange[-1], model.head.landau):
            last.weight.mul_(0.02 * len(atoms) / exchange)
            last.bias.mul_(0.02 * len(atoms) / exchange)
    atoms.calc = MomaCalculator(model)
    assert (atoms.get_potential_energy() - bare) / len(atoms) == pytest.approx(0.02, rel=1e-6)
    assert nve_spread(atoms, steps=30, temperature=300) < NVE_BOUND


def test_relaxation_keeps_the_spin_order_and_reports_its_moments(spin_model):
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    atoms = _iron(10, 2.2 * signs)
    atoms.calc = MomaCalculator(spin_model)
    start_energy, start_force = atoms.get_potential_energy(), np.abs(atoms.get_forces()).max()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=40)
    assert atoms.get_potential_energy() < start_energy and np.abs(atoms.get_forces()).max() < 0.5 * start_force
    moments = atoms.get_magnetic_moments()
    assert moments.shape == (4,) and np.array_equal(np.sign(moments), signs)
    assert atoms.get_magnetic_moment() == pytest.approx(moments.sum())


@pytest.mark.parametrize("name", ["mace", "jmp"])
def test_other_backbones_host_the_spin_head_with_exact_forces_and_stress(sources, name):
    base = load_backbone(name, sources[name], device="cpu", dtype="float64")
    torch.manual_seed(1)
    model = SpinBackbone.for_backbone(base, "collinear", initial_magnitude=1.5)
    with torch.no_grad():
        torch.nn.init.normal_(model.head.exchange[-1].weight, std=0.05 / model.head.exchange_unit)
        model.head.exchange[-1].bias.fill_(0.02 / model.head.exchange_unit)
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.set_initial_magnetic_moments([1, -1] * 4)
    energy, forces, stress, moments = _run(model, atoms)
    bare = base.forward(base.collate([base.graph(atoms)]))
    assert abs(float(energy[0] - bare.energy[0])) > 1e-3 and moments.shape == (8,)
    ferro = atoms.copy()
    ferro.set_initial_magnetic_moments([1] * 8)
    assert abs(float(_run(model, ferro)[0][0] - energy[0])) > 1e-4  # the order matters beyond SevenNet too
    assert _force_by_difference(model, atoms, 1, 2) == pytest.approx(float(forces[1, 2]), rel=1e-5, abs=1e-6)
    assert _stress_by_difference(model, atoms, 0, 2) == pytest.approx(float(stress[0, 0, 2]), rel=1e-5, abs=1e-6)
