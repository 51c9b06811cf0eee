"""Fusion in the product: `hub train --modalities` learns what only the composition carries, saves a model
that predicts with its gates, survives a missing view, and refuses an encoder it was not trained with.

The task is generated with a known answer: rocksalt compounds of a cation and an anion, and as target the
highest elemental melting point of the two (kK, pymatgen's table). A maximum over the elements is no
linear function of mean-pooled atom features, and with one or two structures per cation a graph read-out
cannot learn each cation's value; Magpie's composition statistics carry it. Real SevenNet-0, real
robocrys + MiniLM, real Magpie tables.
"""

from __future__ import annotations

import json
import os

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, covalent_radii
from loading_imports import training_imported_by_loading

from ase_moma import load_calculator
from ase_moma.hub import Hub, TrainConfig, train_module
from ase_moma.module_files import MODULE_JSON, write_json
from ase_moma.module_format import FUSION
from ase_moma.modalities.registry import EncoderMismatch
from ase_moma.process_state import kept_process_state

CATIONS = ("Li", "Na", "K", "Rb", "Cs", "Be", "Mg", "Ca", "Sr", "Ba", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co",
           "Ni", "Cu", "Zn", "Y", "Zr", "Nb", "Mo", "Ag", "Cd", "In", "Sn", "La", "Pb", "Hf", "Ta", "W", "Pt")
ANIONS = ("O", "S", "Se", "F", "Cl", "Br", "N")


def compound(cation: str, anion: str, strain: float) -> Atoms:
    """A rocksalt cell with its lattice constant from covalent radii, strained by ``strain``; info['tmax']."""
    from pymatgen.core import Element

    a = 2 * (covalent_radii[atomic_numbers[cation]] + covalent_radii[atomic_numbers[anion]]) * (1 + strain)
    atoms = bulk(f"{cation}{anion}", "rocksalt", a=a)
    atoms.info["tmax"] = max(float(Element(cation).melting_point), float(Element(anion).melting_point)) / 1000
    return atoms


def compounds(count: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [compound(CATIONS[rng.integers(len(CATIONS))], ANIONS[rng.integers(len(ANIONS))],
                     float(rng.uniform(-0.03, 0.03))) for _ in range(count)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Descriptions go to a temporary cache, not the user's: XDG_CACHE_HOME for this module, then restored."""
    with kept_process_state():
        os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
        yield os.environ["XDG_CACHE_HOME"]


@pytest.fixture(scope="module")
def fused_module(tmp_path_factory, cache, sevennet):
    tmp = tmp_path_factory.mktemp("fusion")
    data = tmp / "compounds.extxyz"
    ase.io.write(data, compounds(36, seed=0))
    hub = Hub.create(tmp / "hub", sevennet)
    config = TrainConfig(kind="adapter", epochs=1, batch_size=12, val_fraction=0.25, hidden=32,
                         modalities=("composition", "text"))
    meta = train_module(hub, "tmax", data, "tmax", config=config, unit="kK", device="cpu", progress=False)
    return hub.folder("tmax"), dict(meta, training_config=config)


def test_fusion_learns_what_only_the_composition_carries(fused_module):
    folder, meta = fused_module
    assert meta["fusion"]["kept"] != "graph only" and (folder / FUSION).is_file()
    held_out = compounds(16, seed=1)
    truth = np.array([atoms.info["tmax"] for atoms in held_out])
    fused = load_calculator(str(folder), device="cpu")
    from ase_moma.module_model import module_from_folder

    graph_only = module_from_folder(folder, meta, fused.model.backbone, fused=False)
    fused_error = np.abs(np.array(fused.predict(held_out)) - truth).mean()
    graph_error = np.abs(graph_only.predict(held_out) - truth).mean()
    assert fused_error < 0.5 * graph_error, (fused_error, graph_error)
    gates = meta["fusion"]["val_gates_mean"]
    assert set(gates) == {"graph", "composition", "composition_boosted", "joint", "text"}
    assert abs(sum(gates.values()) - 1) < 1e-9


def test_a_fused_module_loads_without_training_code(fused_module):
    assert training_imported_by_loading(fused_module[0]) == []


def test_one_backbone_pass_gives_the_graph_prediction_and_its_features(fused_module):
    folder, _ = fused_module
    graph_model = load_calculator(str(folder), device="cpu").model.graph
    graphs = [graph_model.backbone.graph(atoms) for atoms in compounds(5, seed=3)]
    predicted, embedded = graph_model.predict_and_embed_graphs(graphs, batch_size=2)
    np.testing.assert_array_equal(predicted, graph_model.predict_graphs(graphs, batch_size=2))
    assert torch.equal(embedded, graph_model.backbone.embed_graphs(graphs, batch_size=2))


def test_the_module_records_each_encoder(fused_module):
    folder, meta = fused_module
    encoders = meta["fusion"]["encoders"]
    assert encoders["text"]["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(encoders["text"]["sha256"]) == 64 and len(encoders["composition"]["sha256"]) == 64
    assert meta["fusion"]["graph_metrics"]["val_mae"] >= meta["metrics"]["val_mae"]


def test_predict_writes_what_each_view_added_and_says_which_view_was_missing(fused_module, tmp_path):
    folder, _ = fused_module
    frames = compounds(3, seed=2)
    unknown = bulk("Cu", "fcc", a=3.6) * (1, 1, 1)
    unknown.pbc = (True, True, False)  # a slab: robocrys describes full crystals only, so its text view is missing
    unknown.cell[2, 2] = 20.0
    frames.append(unknown)
    ase.io.write(tmp_path / "in.extxyz", frames)
    from ase_moma.cli import main

    assert main(["predict", str(tmp_path / "in.extxyz"), "--model", str(folder), "-o", str(tmp_path / "out.extxyz"),
                 "--device", "cpu"]) == 0
    out = ase.io.read(tmp_path / "out.extxyz", ":")
    for atoms in out:
        gates = [atoms.info[f"fusion_gate_{view}"] for view in ("graph", "composition", "composition_boosted", "joint",
                                                                 "text")]
        assert np.isfinite(atoms.info["tmax"]) and abs(sum(gates) - 1) < 1e-6
        terms = {key: value for key, value in atoms.info.items() if key.startswith("fusion_contribution_")}
        assert set(terms) == {f"fusion_contribution_{name}" for name in
                              ("graph", "composition", "composition_boosted", "joint", "text", "constant",
                               "interaction")}
        assert abs(atoms.info["fusion_graph_model"] + sum(terms.values()) - atoms.info["tmax"]) < 1e-9
    composition = [atoms.info["fusion_contribution_composition"] for atoms in out]
    assert np.std(composition) > 1e-3  # it says something different for each structure
    assert "fusion_missing" not in out[0].info
    assert out[-1].info["fusion_missing"] == "text"


def test_a_model_trained_with_another_encoder_is_refused(fused_module, tmp_path):
    import shutil

    folder, _ = fused_module
    copy = tmp_path / "module"
    shutil.copytree(folder, copy)
    changed = json.loads((copy / MODULE_JSON).read_text())
    changed["fusion"]["encoders"]["text"]["sha256"] = "0" * 64
    write_json(copy / MODULE_JSON, changed)
    with pytest.raises(EncoderMismatch, match="different text encoder"):
        load_calculator(str(copy), device="cpu")


def test_the_fusion_averages_its_members_and_reads_a_file_of_one_unprefixed_head(fused_module, tmp_path):
    """Modules saved before fusion had members (module.json version 1, without a schema) hold one head and its
    forests without a member prefix, a forest that is its trees' mean without its combination; they load as a
    fusion of that one head."""
    import shutil

    from safetensors.torch import load_file

    from ase_moma.modalities.fused_model import MEMBER, FusedPropertyModel
    from ase_moma.module_files import save_tensors

    folder, meta = fused_module
    assert len(meta["fusion"]["members"]) == 3 and {m["seed"] for m in meta["fusion"]["members"]} == {0, 1, 2}
    frames = compounds(4, seed=4)
    fused = load_calculator(str(folder), device="cpu").model
    each = [FusedPropertyModel(fused.graph, [member], fused.encoders).predict(frames) for member in fused.members]
    assert not np.allclose(each[0], each[1])  # seeded apart
    np.testing.assert_allclose(fused.predict(frames), np.mean(each, axis=0), rtol=0, atol=1e-12)

    older = tmp_path / "older"
    shutil.copytree(folder, older)
    prefix = MEMBER.format(0)
    saved = load_file(str(folder / FUSION))
    means = [k for k, v in saved.items() if k.startswith(prefix) and k.endswith(".combine")
             and v[0] == 0 and np.isclose(float(v[1]) * len(saved[k[:-len("combine")] + "roots"]), 1)]
    assert means  # a forest that is the mean of its trees was saved without its combination before boosting
    tensors = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix) and k not in means}
    record = json.loads((older / MODULE_JSON).read_text())
    assert record["schema"] == "ase-moma.module/2"
    del record["fusion"]["members"], record["schema"]
    record["files"][FUSION] = save_tensors(older / FUSION, tensors)
    write_json(older / MODULE_JSON, record)
    np.testing.assert_allclose(load_calculator(str(older), device="cpu").model.predict(frames), each[0], rtol=0,
                               atol=1e-12)


def test_fusion_interrupted_mid_member_resumes_to_the_same_heads(fused_module, sevennet, tmp_path, monkeypatch):
    """Each fusion member checkpoints in its own stage of the module's work folder: stopped during member 1's
    second epoch, the same call resumes the graph model and member 0 where they ended and member 1 from its
    first epoch, and writes the heads an uninterrupted run wrote."""
    from safetensors.torch import load_file

    from ase_moma.training import engine as engine_module

    folder, meta = fused_module
    data = tmp_path / "compounds.extxyz"
    ase.io.write(data, compounds(36, seed=0))
    hub = Hub.create(tmp_path / "hub", sevennet)
    real_checkpoint = engine_module.save_checkpoint
    seen = []

    def interrupt_member_1(checkpoint, *args, **kwargs):
        seen.append(checkpoint.name)
        if seen.count("fusion-1") == 2:
            raise KeyboardInterrupt
        real_checkpoint(checkpoint, *args, **kwargs)

    monkeypatch.setattr(engine_module, "save_checkpoint", interrupt_member_1)
    with pytest.raises(KeyboardInterrupt):
        train_module(hub, "tmax", data, "tmax", config=meta["training_config"], unit="kK",
                     device="cpu", progress=False)
    work = hub.path / ".work" / "tmax"
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == ["fusion-0", "fusion-1"]
    monkeypatch.setattr(engine_module, "save_checkpoint", real_checkpoint)
    resumed = train_module(hub, "tmax", data, "tmax", config=meta["training_config"], unit="kK",
                           device="cpu", progress=False)
    members = resumed["fusion"]["members"]
    assert [m["resumed_from"] for m in members] == [meta["fusion"]["members"][0]["epochs_run"], 1, 0]
    assert [m["epochs_run"] for m in members] == [m["epochs_run"] for m in meta["fusion"]["members"]]
    assert not work.exists()
    a, b = load_file(str(folder / FUSION)), load_file(str(hub.folder("tmax") / FUSION))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-9, msg=key)


def test_modalities_are_checked_on_the_command_line():
    from ase_moma.cli import main
    from ase_moma.errors import UsageError
    from ase_moma.modalities.registry import parse_modalities

    assert parse_modalities("graph, text,composition") == ("composition", "text")
    with pytest.raises(UsageError, match="unknown modality 'smell'"):
        parse_modalities("graph,smell")
    assert main(["finetune", "--backbone", "sevennet", "--train", "a.xyz", "--valid", "b.xyz", "-o", "x",
                 "--modalities", "text"]) == 2
