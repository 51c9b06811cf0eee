"""The JMP backbone (GemNet-OC written here): graph indices against hand counts, safe checkpoints and the
converter, and hub modules / composition working on it. Physics (finite differences, symmetry, batching)
and path weights are checked with every backbone in test_physics.py, test_batch.py, test_path_weights.py."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from model_factories import jmp_test_config

from ase_moma import load_backbone, load_calculator
from ase_moma.checkpoints import UnsafeCheckpointError
from ase_moma.cli import main
from ase_moma.compose import compose, finetune_composed
from ase_moma.training.property_models import TrainConfig
from ase_moma.hub import Hub, train_module
from ase_moma.plugins.gemnet_oc import GemNetOCConfig, build_graph
from ase_moma.plugins.gemnet_oc.checkpoint import convert_checkpoint, load_gemnet_oc

from hub_fixtures import MATMINER


def _counts(atoms: Atoms, config: GemNetOCConfig) -> dict[str, int]:
    arrays = build_graph(atoms, config).arrays
    return {"main": len(arrays["main_src"]), "qint": len(arrays["qint_src"]), "aea": len(arrays["aea_src"]),
            "a2a": len(arrays["a2a_src"]), "e2e": len(arrays["e2e_in"]), "a2e": len(arrays["a2e_in"]),
            "e2a": len(arrays["e2a_in"]), "tin": len(arrays["tin_in"]), "tout": len(arrays["tout_in"]),
            "quad": len(arrays["quad_out"])}


def test_simple_cubic_counts_by_hand():
    """One atom, its six periodic images as neighbours (3.5 Å cut-off, 3 Å lattice).

    Edges: 6 into the atom. Triplets b→a←c: each of 6 edges meets the 5 others = 30, in every
    triplet kind. Input triplets d→b→a: b's 6 edges less the one from a's own image = 5 per b→a = 30.
    Quadruplets: 30 output triplets × 5 input triplets each = 150; none has c = d, since two
    neighbours of the atom are 3√2 or 6 Å apart, never 3 Å.
    """
    config = GemNetOCConfig.jmp_s(cutoff=3.5, cutoff_qint=3.5, cutoff_aeaint=3.5, cutoff_aint=3.5)
    atoms = Atoms("Po", cell=np.eye(3) * 3.0, pbc=True)
    assert _counts(atoms, config) == {"main": 6, "qint": 6, "aea": 6, "a2a": 6, "e2e": 30, "a2e": 30, "e2a": 30,
                                      "tin": 30, "tout": 30, "quad": 150}


def test_triangle_has_no_quadruplets(calculator):
    """Three mutually bonded atoms: every d→b→a←c would have d = c, which is left out; the model runs
    with an empty quadruplet set."""
    config = GemNetOCConfig.jmp_s(cutoff=2.0, cutoff_qint=2.0, cutoff_aeaint=2.0, cutoff_aint=2.0)
    atoms = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [0.5, 0.8660254, 0]])
    counts = _counts(atoms, config)
    assert counts["main"] == 6 and counts["e2e"] == 6 and counts["tin"] == 6 and counts["tout"] == 6
    assert counts["quad"] == 0
    atoms.calc = calculator("jmp")
    forces = atoms.get_forces()
    assert np.isfinite(atoms.get_potential_energy()) and np.abs(forces.sum(axis=0)).max() < 1e-10


def test_neighbour_cap_keeps_a_whole_shell_so_cell_choice_does_not_matter(calculator):
    """fcc with at most 12 neighbours: the 13th is in the 6-fold second shell, and the tie rule keeps all six
    (18 edges); with at most 8 the 9th is in the 12-fold first shell (12 kept). So no neighbour is chosen
    by the order atoms happen to be listed in, and a conventional 4-atom cell has 4 × the primitive
    cell's energy."""
    config = GemNetOCConfig.jmp_s(cutoff=4.5, cutoff_qint=4.5, cutoff_aeaint=4.5, cutoff_aint=4.5,
                                  max_neighbors=12, max_neighbors_qint=8, max_neighbors_aeaint=12,
                                  max_neighbors_aint=100)
    primitive = bulk("Cu", "fcc", 3.6)
    assert _counts(primitive, config)["main"] == 18
    assert _counts(primitive, config)["qint"] == 12
    conventional = bulk("Cu", "fcc", 3.6, cubic=True)
    primitive.calc = conventional.calc = calculator("jmp")
    assert conventional.get_potential_energy() == pytest.approx(4 * primitive.get_potential_energy(), abs=1e-10)


def test_stored_model_round_trip_and_converter(sources, tmp_path):
    stored = load_gemnet_oc(sources["jmp"])
    state = {f"backbone.{key}": value for key, value in stored.state_dict().items()}
    state["backbone.out_blocks.0.seq_energy_pre.0.linear.weight"] = state[  # the reference's second name
        "backbone.out_blocks.0.layers.0.linear.weight"]
    state["backbone.out_forces.linear.weight"] = torch.ones(1, 32)  # JMP's direct-force head
    state["output.heads.energy.weight"] = torch.ones(3)  # a task head
    torch.save(state, tmp_path / "plain.pt")
    graph = {key: value for key, value in jmp_test_config().to_dict().items() if key.startswith(("cutoff", "max_"))}
    folder = convert_checkpoint(tmp_path / "plain.pt", tmp_path / "converted", **graph)
    header = json.loads((folder / "model.json").read_text())
    assert header["dropped"] == ["backbone.out_forces.linear.weight", "output.heads.energy.weight"]
    assert header["started_at_zero"] == []
    assert header["config"] == jmp_test_config().to_dict()
    atoms = bulk("SiC", "zincblende", 4.36)
    atoms.rattle(0.05, seed=2)
    energies = []
    for source in (sources["jmp"], str(folder)):
        atoms.calc = load_calculator("jmp", source, device="cpu", dtype="float64")
        energies.append(atoms.get_potential_energy())
    assert energies[0] == energies[1]

    jmp_layout = {f"backbone.bases.{key}" if key.startswith(("mlp_", "edge_emb.")) else
                  "embedding.weight" if key == "atom_emb.embeddings.weight" else
                  key.replace("out_mlp_E.", "backbone.out_mlp_E.out_mlp.") if key.startswith("out_mlp_E.") else
                  f"backbone.{key}": value for key, value in stored.state_dict().items()
                  if key not in ("out_energy.linear.weight", "reference_energies")}
    torch.save({"state_dict": jmp_layout}, tmp_path / "jmp_layout.pt")
    header = json.loads((convert_checkpoint(tmp_path / "jmp_layout.pt", tmp_path / "from_jmp", **graph)
                         / "model.json").read_text())
    assert header["started_at_zero"] == ["out_energy.linear.weight"] and header["dropped"] == []
    converted = load_gemnet_oc(tmp_path / "from_jmp")
    for key, value in stored.state_dict().items():
        expected = torch.zeros_like(value) if key == "out_energy.linear.weight" else value
        assert torch.equal(converted.state_dict()[key], expected), key

    lightning = {"state_dict": state, "hyper_parameters": argparse.Namespace(name="jmp")}
    torch.save(lightning, tmp_path / "jmp.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle"):
        load_backbone("jmp", str(tmp_path / "jmp.ckpt"), device="cpu")
    assert not (tmp_path / "out").exists()
    assert main(["jmp-convert", str(tmp_path / "jmp.ckpt"), "-o", str(tmp_path / "out"), "--trust-pickle",
                 "--pair-rule", "reference"]) == 0
    written = json.loads((tmp_path / "out" / "model.json").read_text())
    assert written["converted_from"] == "jmp.ckpt" and written["config"]["pair_rule"] == "reference"


def test_no_embedded_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="no embedded weights"):
        load_backbone("jmp", device="cpu")


def test_hub_modules_and_composition_on_jmp(sources, hub_data, tmp_path):
    data = MATMINER / "jarvis_2d_gap_tbmbj.extxyz"
    base = load_backbone("jmp", sources["jmp"], device="cpu")
    hub = Hub.create(tmp_path / "hub", base)
    tiny = TrainConfig(epochs=1, batch_size=8, val_fraction=0.25, hidden=16)
    train_module(hub, "heat", hub_data["perov"], "heat_all", config=tiny, unit="eV/atom", device="cpu",
                 progress=False)
    train_module(hub, "gap", hub_data["perov"], "ind_gap", config=tiny, unit="eV", device="cpu", progress=False)
    train_module(hub, "gap_adapter", hub_data["perov"], "ind_gap", config=TrainConfig(
        **{**tiny.__dict__, "kind": "adapter"}), unit="eV", device="cpu", progress=False)
    recipe = compose(hub, data, "target", tmp_path / "composed", split=MATMINER / "splits" / "seed0.json",
                     task="jarvis_2d_gap_tbmbj", n_train=16, unit="eV", device="cpu", progress=False)
    weights = [m["weight"] for m in recipe["modules"]]
    assert [m["name"] for m in recipe["modules"]] == ["heat", "gap"]
    assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-9)
    finetune_composed(tmp_path / "composed", TrainConfig(epochs=1, batch_size=8, patience=1), device="cpu",
                      progress=False)
    calc = load_calculator(str(tmp_path / "composed"), device="cpu")
    frames = calc.model.backbone  # the composed backbone is a JMP backbone
    assert frames.name == "jmp"
    predictions = calc.predict([bulk("Si", "diamond", 5.43), bulk("SiC", "zincblende", 4.36)])
    assert np.isfinite(predictions).all()


def test_energy_without_forces_is_still_differentiable_in_the_weights(sources):
    """Property modules and energy-only losses train through forward(forces=False, stress=False)."""
    backbone = load_backbone("jmp", sources["jmp"], device="cpu")
    backbone.model.requires_grad_(True)
    out = backbone.forward(backbone.collate([backbone.graph(bulk("Si", "diamond", 5.43))]), forces=False,
                           stress=False)
    out.energy.sum().backward()
    assert out.forces is None and out.stress is None
    assert backbone.model.out_energy.linear.weight.grad.abs().sum() > 0
