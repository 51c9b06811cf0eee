"""Energy modules and delta modules on MACE, matgl and JMP (GemNet-OC): trained, written to a hub, loaded back,
predicting."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from potential_fixtures import small_mlearn_si

from ase_moma import load_backbone, load_calculator
from ase_moma.finetune import FinetuneConfig, finetune_potential
from ase_moma.hub import Hub, TrainConfig, train_module


@pytest.mark.parametrize("name", ["mace", "matgl", "jmp"])
def test_energy_and_delta_modules_work_beyond_sevennet(name, sources, hub_data, tmp_path):
    base = load_backbone(name, sources[name], device="cpu")
    hub = Hub.create(tmp_path / "hub", base)
    train_module(hub, "carbon_energy", hub_data["carbon"], "energy_per_atom",
                 config=TrainConfig(epochs=1, batch_size=4, val_fraction=0.25), unit="eV/atom", device="cpu",
                 progress=False)
    carbon = ase.io.read(hub_data["carbon"], ":4")
    energy_module = hub.load_module("carbon_energy", device="cpu")
    assert energy_module.readout == "energy_per_atom"
    predicted = energy_module.predict(carbon)
    shift = energy_module.head.shift
    tuned_base = energy_module.backbone
    expected = [float(tuned_base.energy(tuned_base.collate([tuned_base.graph(a)]))[0] + shift[a.numbers].sum())
                / len(a) for a in carbon]
    np.testing.assert_allclose(predicted, expected, rtol=1e-6)

    train, valid = small_mlearn_si(tmp_path)
    frames = ase.io.read(train, ":6")
    ase.io.write(tmp_path / "si6.extxyz", frames)
    config = FinetuneConfig(method="sparse", batch_size=3, epochs=1, max_steps=2)  # refits where it can
    finetune_potential(name, tmp_path / "si6.extxyz", valid, tmp_path / "tuned", config, source=sources[name],
                       device="cpu", progress=False)
    hub.add(tmp_path / "tuned" / "module", name="si_delta")
    delta_module = hub.load_module("si_delta", device="cpu")
    tuned = load_backbone(str(tmp_path / "tuned"), device="cpu")
    silicon = ase.io.read(valid, ":")
    expected = [float(tuned.energy(tuned.collate([tuned.graph(a)]))[0]) / len(a) for a in silicon]
    np.testing.assert_allclose(delta_module.predict(silicon), expected, rtol=1e-6)
    probe = silicon[0].copy()
    probe.calc = load_calculator(str(hub.folder("si_delta")), device="cpu")  # the module folder on its own
    assert probe.get_potential_energy() == pytest.approx(expected[0] * len(probe), rel=1e-6)
    assert probe.calc.parameters["fingerprint"] == tuned.fingerprint()
    assert torch.isfinite(torch.as_tensor(probe.get_forces())).all()



def test_chgnet_refits_its_composition_model_to_the_frames(tmp_path):
    """CHGNet's reference energies are its composition model's per-element weights: shifting them moves each
    structure's energy by the sum over its atoms and leaves forces and stress alone, and fine-tuning with the
    defaults refits them to the frames."""
    import json

    from ase_moma.cli import main

    train, valid = small_mlearn_si(tmp_path)
    frames = ase.io.read(train, ":4")
    ase.io.write(tmp_path / "si4.extxyz", frames)
    base = load_backbone("chgnet", device="cpu")
    batch = base.collate([base.graph(frames[0])])
    before = base.forward(batch)
    assert base.add_reference_energies({14: 0.25}) == "composition_model.fc.weight"
    after = base.forward(batch)
    assert float(after.energy[0] - before.energy[0]) == pytest.approx(0.25 * len(frames[0]), rel=1e-4)
    for field in ("forces", "stress"):
        np.testing.assert_allclose(getattr(after, field).detach(), getattr(before, field).detach(), atol=1e-6)
    assert main(["finetune", "--backbone", "chgnet", "--train", str(tmp_path / "si4.extxyz"), "--valid", str(valid),
                 "--method", "sparse", "--epochs", "0", "--batch-size", "2", "--device", "cpu",
                 "-o", str(tmp_path / "tuned")]) == 0
    record = json.loads((tmp_path / "tuned" / "finetune.json").read_text())
    assert record["config"]["refit_references"] is True and set(record["result"]["reference_shifts"]) == {"14"}
