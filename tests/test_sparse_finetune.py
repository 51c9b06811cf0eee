"""Sparse equivariant fine-tuning: the STR parametrisation, what moves, equivariance, export, data checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.stress import voigt_6_to_full_3x3_stress
from potential_fixtures import emt_copper, small_mlearn_si
from scipy.spatial.transform import Rotation

from ase_moma import load_backbone
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.delta import apply_delta
from ase_moma.finetune.lora import low_rank_increments
from ase_moma.finetune.methods.sparse import SparseOptions
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.finetune.sparse import SIGMA, LayerThreshold, SparseIncrement, SparseIncrements, ThresholdOffset

STEPS = FinetuneConfig(method="sparse", batch_size=4, epochs=2, max_steps=2)


def _sets(seed: int = 0):
    return (read_potential_set(emt_copper(8, seed), forces=True, stress=True, what="training set"),
            read_potential_set(emt_copper(4, seed + 1), forces=True, stress=True, what="validation set"))


def _predict(backbone, frames):
    out = backbone.forward(backbone.collate([backbone.graph(a) for a in frames]))
    return out.energy.detach().clone(), out.forces.detach().clone(), out.stress.detach().clone()


def test_gradient_reaches_only_unpruned_increments():
    torch.manual_seed(0)
    threshold = LayerThreshold(0.008)
    weight = torch.randn(2000)
    increment = SparseIncrement(weight, threshold, ThresholdOffset(), sigma=0.01)
    upstream = torch.randn(2000)
    (increment(weight) * upstream).sum().backward()
    pruned = increment.delta.detach().abs() <= threshold.threshold().detach()
    assert 0.2 < pruned.float().mean() < 0.8
    assert torch.all(increment.delta.grad[pruned] == 0)
    assert torch.equal(increment.delta.grad[~pruned], upstream[~pruned])
    assert torch.equal(increment(weight)[pruned], weight[pruned])
    assert threshold.tau.grad is not None and threshold.tau.grad != 0


def test_threshold_pushed_high_prunes_everything_and_model_equals_base():
    backbone = load_backbone("sevennet", device="cpu", dtype="float64")
    frames = emt_copper(2, 5)
    before = _predict(backbone, frames)
    increments = SparseIncrements(backbone)
    with torch.no_grad():
        for tau in increments.threshold_parameters():
            tau.fill_(20.0)  # δ = sigmoid(20) ≈ 1 > every |ΔW| drawn from N(0, 0.01²)
    increments.attach(backbone)
    assert all(torch.count_nonzero(inc) == 0 for inc in increments.dense().values())
    for a, b in zip(before, _predict(backbone, frames)):
        assert torch.equal(a, b)
    increments.detach()
    linear = dict(backbone.model.named_modules())["0_self_interaction_1.linear"]
    assert "parametrizations" not in linear.__dict__["_modules"]


@pytest.mark.parametrize("refit, target", [(False, 0.05), (True, 0.01)])
def test_sparse_tuning_moves_only_path_weights_and_only_its_budget(refit, target):
    backbone = load_backbone("sevennet", device="cpu")
    pretrained = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    train, valid = _sets()
    config = FinetuneConfig(**{**STEPS.__dict__, "refit_references": refit,
                               "options": SparseOptions(target_fraction=target)})
    tuner = Finetuner(backbone, config)
    result = tuner.fit(train, valid, progress=False)
    delta = tuner.export()
    assert result.steps == 2 and result.best_epoch >= 1  # the chosen weights are trained ones, within budget
    path = {w.name for w in backbone.path_weights()}
    allowed = path | ({"rescale_atomic_energy.shift"} if refit else set())
    changed = {k for k, v in backbone.model.state_dict().items() if not torch.equal(v, pretrained[k])}
    assert changed <= allowed and changed & path
    assert ("rescale_atomic_energy.shift" in changed) == refit
    moved = sum(int(delta[name][0].numel()) for name in path if name in delta)
    size = sum(pretrained[name].numel() for name in path)
    assert abs(moved / size - target) < 0.01  # measured on the exported model, after training


def test_increments_start_down_the_gradient_on_the_entries_the_loss_is_most_sensitive_to():
    backbone = load_backbone("sevennet", device="cpu")
    increments = SparseIncrements(backbone)
    generator = torch.Generator().manual_seed(0)
    parameters = dict(backbone.model.named_parameters())
    gradients = {w.name: torch.randn(parameters[w.name].shape, generator=generator, dtype=parameters[w.name].dtype)
                 for w in backbone.path_weights()}  # in W's dtype: a MACE calculator elsewhere may change the default
    unseen = backbone.path_weights()[0].name
    gradients[unseen].zero_()  # e.g. the embedding of an element absent from the data
    increments.start_along(gradients, 0.05)
    increments.hold_fraction(0.05)
    members = [increments.increments[w.name.replace(".", ":")] for w in backbone.path_weights()]
    magnitude = torch.cat([gradients[w.name].reshape(-1).abs() for w in backbone.path_weights()])
    kept = torch.cat([m.kept().reshape(-1) for m in members])
    assert torch.equal(kept, magnitude >= torch.topk(magnitude, round(0.05 * len(magnitude))).values[-1])
    for weight, member in zip(backbone.path_weights(), members):
        gradient, chosen = gradients[weight.name], member.kept()
        assert torch.equal(member.delta[chosen], -torch.sign(gradient[chosen]) * SIGMA)  # a step down, of σ
    assert not torch.any(members[0].delta) and not torch.any(members[0].kept())
    assert increments.moved_fraction() == pytest.approx(0.05, abs=1 / len(magnitude))


def test_exported_model_equals_in_training_model_and_stays_equivariant():
    backbone = load_backbone("sevennet", device="cpu", dtype="float64")
    train, valid = _sets(2)
    tuner = Finetuner(backbone, STEPS)
    tuner.fit(train, valid, progress=False)
    probe = emt_copper(1, 9)[0].repeat((2, 1, 1))
    wrapped = _predict(backbone, [probe])
    delta = tuner.export()
    exported = _predict(backbone, [probe])
    for a, b in zip(wrapped, exported):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert sum(int(i.numel()) for i, _ in delta.values()) > 0

    rotation = Rotation.random(random_state=4).as_matrix()
    turned = probe.copy()
    turned.set_cell(probe.cell.array @ rotation.T, scale_atoms=True)
    energy, forces, stress = (t.numpy() for t in exported)
    energy_r, forces_r, stress_r = (t.numpy() for t in _predict(backbone, [turned]))
    assert abs(energy_r[0] - energy[0]) < 1e-9
    np.testing.assert_allclose(forces_r, forces @ rotation.T, atol=1e-10)
    np.testing.assert_allclose(stress_r[0], rotation @ stress[0] @ rotation.T, atol=1e-10)


def test_mace_path_weights_take_sparse_increments_and_stay_equivariant(sources):
    backbone = load_backbone("mace", sources["mace"], device="cpu", dtype="float64")
    names = {w.name for w in backbone.path_weights()}
    assert any("symmetric_contractions" in n for n in names) and any("conv_tp_weights" in n for n in names)
    probe = emt_copper(1, 3)[0]
    probe.numbers[:2] = 8  # the test MACE model covers H, C, O and Si, not Cu
    probe.numbers[2:] = 1
    probe.calc = None
    before = _predict(backbone, [probe])
    increments = SparseIncrements(backbone)
    increments.attach(backbone)
    energy, forces, _ = _predict(backbone, [probe])
    assert not torch.equal(energy, before[0])
    rotation = Rotation.random(random_state=1).as_matrix()
    turned = probe.copy()
    turned.set_cell(probe.cell.array @ rotation.T, scale_atoms=True)
    energy_r, forces_r, _ = _predict(backbone, [turned])
    torch.testing.assert_close(energy_r, energy, rtol=0, atol=1e-9)
    torch.testing.assert_close(forces_r, forces @ torch.as_tensor(rotation).T, rtol=0, atol=1e-9)
    increments.detach()
    for a, b in zip(before, _predict(backbone, [probe])):
        assert torch.equal(a, b)


def test_lora_starts_at_the_base_model_and_blocks_follow_paths():
    backbone = load_backbone("sevennet", device="cpu")
    increments = low_rank_increments(backbone, rank=2)
    assert all(torch.count_nonzero(inc) == 0 for inc in increments.dense().values())
    linear = next(w for w in increments.path_weights if w.kind == "linear" and len(w.blocks) > 1)
    lora = increments.increments[linear.name.replace(".", ":")]
    assert len(lora.down) == len(linear.blocks) > 1
    with torch.no_grad():
        for factor in lora.up:
            factor.normal_()
    dense = lora.increment().reshape(-1)
    for (start, stop, rows, cols), down in zip(linear.blocks, lora.down):
        assert torch.linalg.matrix_rank(dense[start:stop].reshape(rows, cols)) <= down.shape[1]


@pytest.mark.parametrize("method", ["readout", "full", "lora", "zero_shot"])
def test_baselines_train_under_the_same_trainer(method):
    backbone = load_backbone("sevennet", device="cpu")
    pretrained = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    train, valid = _sets(4)
    config = FinetuneConfig(**{**STEPS.__dict__, "method": method, "options": None, "refit_references": False})
    tuner = Finetuner(backbone, config)
    result = tuner.fit(train, valid, progress=False)
    delta = tuner.export()
    changed = set(delta)
    if method == "zero_shot":
        assert result.steps == 0 and not changed
    elif method == "readout":
        assert changed and changed <= set(backbone.readout_parameters())
    elif method == "lora":
        assert changed and changed <= {w.name for w in backbone.path_weights()}
    else:
        assert len(changed) > len(backbone.path_weights())
    for name, (indices, values) in delta.items():
        flat = pretrained[name].reshape(-1).clone()
        flat[indices] += values
        assert torch.equal(flat, backbone.model.state_dict()[name].reshape(-1))


def test_a_few_steps_on_real_silicon_lower_the_validation_loss(tmp_path):
    train_path, valid_path = small_mlearn_si(tmp_path)
    train = read_potential_set(train_path, forces=True, stress=True)
    valid = read_potential_set(valid_path, forces=True, stress=True)
    backbone = load_backbone("sevennet", device="cpu")
    config = FinetuneConfig(method="sparse", batch_size=4, epochs=2, max_steps=4)
    result = Finetuner(backbone, config).fit(train, valid, progress=False)
    losses = [row["loss"] for row in result.history]
    assert result.best["loss"] < losses[0]
    assert result.steps == 4


def test_bad_fine_tuning_data_is_named():
    frames = emt_copper(3, 7)
    no_forces = [a.copy() for a in frames]
    for atoms, source in zip(no_forces, frames):
        atoms.calc = type(source.calc)(atoms, energy=source.get_potential_energy(),
                                       stress=source.get_stress())
    with pytest.raises(ValueError, match="frame 0 of the training set has no forces"):
        read_potential_set(no_forces, forces=True, stress=True, what="training set")
    read_potential_set(no_forces, forces=False, stress=True, what="training set")
    no_stress = frames[0].copy()
    no_stress.calc = type(frames[0].calc)(no_stress, energy=1.0, forces=frames[0].get_forces())
    with pytest.raises(ValueError, match="frame 0 .* has no stress"):
        read_potential_set([no_stress], forces=True, stress=True)
    backbone = load_backbone("sevennet", device="cpu")
    train = read_potential_set(frames, forces=True, stress=True)
    empty = read_potential_set(frames, forces=True, stress=True)
    empty.frames, empty.energy = [], empty.energy[:0]
    with pytest.raises(ValueError, match="validation set is empty"):
        Finetuner(backbone, STEPS).fit(train, empty, progress=False)
    with pytest.raises(ValueError, match="holds no structures"):
        read_potential_set([], forces=True, stress=True, what="validation set")
    with pytest.raises(ValueError, match="unknown fine-tuning method"):
        FinetuneConfig(method="dense").check()


def test_delta_refuses_out_of_range_indices():
    from ase_moma.module_files import HubIntegrityError

    model = torch.nn.Linear(2, 2)
    with pytest.raises(HubIntegrityError, match="outside"):
        apply_delta(model, {"weight": (torch.tensor([7]), torch.tensor([1.0]))}, "bad.safetensors")


def test_stress_units_are_declared_checked_against_the_model_and_bounded():
    from ase.units import GPa

    from ase_moma.calculators import predict
    from ase_moma.finetune.potential_data import check_stress_unit

    frames = emt_copper(4, 11)
    in_gpa = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = type(atoms.calc)(copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                     stress=atoms.get_stress() / GPa)
        in_gpa.append(copy)
    backbone = load_backbone("sevennet", device="cpu")
    predicted = np.stack([voigt_6_to_full_3x3_stress(row["stress"]) for row in predict(backbone, frames)])
    undeclared = read_potential_set(in_gpa, forces=True, stress=True, what="training set")
    with pytest.raises(ValueError, match=r"about 1\d\d(\.\d+)?× .*frames 0, 1, 2, 3.*look like GPa.*--stress-unit GPa"):
        check_stress_unit(predicted, undeclared)
    declared = read_potential_set(in_gpa, forces=True, stress=True, stress_unit="GPa")
    np.testing.assert_allclose(declared.stress, read_potential_set(frames, forces=True, stress=True).stress)
    check_stress_unit(predicted, declared, "GPa")
    with pytest.raises(ValueError, match="declared GPa.*--stress-unit eV/A\\^3"):
        check_stress_unit(predicted, read_potential_set(frames, forces=True, stress=True, stress_unit="GPa"), "GPa")
    small = [atoms.copy() for atoms in frames]  # eV/Å³ labels 1/160 of the model's: nearly relaxed, not mislabelled
    for copy, atoms in zip(small, frames):
        copy.calc = type(atoms.calc)(copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                     stress=atoms.get_stress() * GPa)
    check_stress_unit(predicted, read_potential_set(small, forces=True, stress=True))
    largest = np.abs(declared.stress).max(axis=(1, 2))
    bounded = read_potential_set(in_gpa, forces=True, stress=True, stress_unit="GPa",
                                 max_stress=float(np.median(largest)))
    assert bounded.dropped == [i for i in range(4) if largest[i] > np.median(largest)] and len(bounded) == 2
