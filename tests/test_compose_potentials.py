"""Composing potentials: a hub of potential modules, composed for new frames, run in ASE dynamics.

The learning test has a known answer. Two modules are SevenNet-0 fine-tuned on silicon labelled with
SevenNet-0 plus a Gaussian pair term A (first neighbours), and plus B (second neighbours); frames
labelled with SevenNet-0 + ½A + ½B must get weight near ½ on each module and a composed potential
better than either module alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
from loading_imports import training_imported_by_loading
from md_checks import nve_spread
from pair_terms import AngularTriplet, GaussianPair, labelled, silicon_cells
from safetensors.torch import load_file

from ase_moma import load_backbone, load_calculator
from ase_moma.cli import main
from ase_moma.compose import replay
from ase_moma.compose.delta_merge import merge_deltas
from ase_moma.compose.potential import compose_potential
from ase_moma.delta import read_delta
from ase_moma.finetune import FinetuneConfig
from ase_moma.finetune.loss import PotentialLoss, evaluate
from ase_moma.finetune.pipeline import finetune_potential
from ase_moma.finetune.potential_data import read_potential_set
from ase_moma.hub import Hub
from ase_moma.module_files import DELTA, HubIntegrityError

A = GaussianPair(epsilon=0.06, r0=2.35, sigma=0.15)
B = GaussianPair(epsilon=0.04, r0=3.85, sigma=0.2)
ANGULAR = AngularTriplet(epsilon=1.4, r0=2.35, sigma=0.15)  # RMS force about A's
STEPS = 12  # optimiser steps of each module (weights 0.44 and 0.56 at 12 steps, 0.48 and 0.49 at 20: bench/RESULTS.md)


@pytest.fixture(scope="module")
def pair_hub(tmp_path_factory) -> SimpleNamespace:
    """A hub of two potential modules, each fitted to one perturbation, and frames of the mixture."""
    root = tmp_path_factory.mktemp("pair_hub")
    calc = load_calculator("sevennet", device="cpu")
    hub = Hub.create(root / "hub", load_backbone("sevennet", device="cpu"))
    for name, term, seed in (("pair_A", A, 1), ("pair_B", B, 2)):
        frames = labelled(silicon_cells(12, seed), [calc, term.calculator()])
        config = FinetuneConfig(method="sparse", batch_size=4, epochs=1000, patience=1000, max_steps=STEPS, seed=0)
        finetune_potential("sevennet", frames[:9], frames[9:], root / name, config, name=name, device="cpu",
                           progress=False)
        hub.add(root / name / "module")
    mixture = [calc, A.calculator(0.5), B.calculator(0.5)]
    ase.io.write(root / "mix.extxyz", labelled(silicon_cells(8, 3), mixture))
    test = read_potential_set(labelled(silicon_cells(6, 4), mixture), forces=True, stress=True)
    return SimpleNamespace(root=root, hub=hub, mix=root / "mix.extxyz", test=test)


@pytest.fixture(scope="module")
def composed(pair_hub) -> Path:
    """The mixture's composition, merged by plain sum: its frames are ½A + ½B, which the sum of the weighted
    changes is (to first order) and sign consensus, keeping a change one module makes whole, is not."""
    out = pair_hub.root / "composed"
    assert main(["compose", "--hub", str(pair_hub.hub.path), "--data", str(pair_hub.mix), "--potential",
                 "--merge", "sum", "-o", str(out), "--device", "cpu"]) == 0
    return out


def _test_forces_mae(model: str | Path, data) -> float:
    backbone = load_backbone(str(model), device="cpu")
    return evaluate(backbone, [backbone.graph(a) for a in data.frames], data, PotentialLoss())["forces_mae"]


def test_composition_weighs_each_module_near_half_and_beats_both(pair_hub, composed):
    recipe = json.loads((composed / "recipe.json").read_text())
    weights = {m["name"]: m["weight"] for m in recipe["modules"]}
    assert 0.3 < weights["pair_A"] < 0.7 and 0.3 < weights["pair_B"] < 0.7, weights
    assert recipe["potential"]["pretrained"]["weight"] < 0.1
    composed_mae = _test_forces_mae(composed, pair_hub.test)
    alone = {name: _test_forces_mae(pair_hub.root / name, pair_hub.test) for name in ("pair_A", "pair_B")}
    pretrained = _test_forces_mae("sevennet", pair_hub.test)
    assert composed_mae < min(alone.values()) < pretrained, (composed_mae, alone, pretrained)


def test_baseline_strategies_and_the_knn_proxy_compose(pair_hub, tmp_path):
    recipes = {strategy: compose_potential(pair_hub.hub, pair_hub.mix, tmp_path / strategy, strategy=strategy,
                                           device="cpu")
               for strategy in ("no_hub", "all_average", "best_single")}
    assert {recipe["potential"]["merge"] for recipe in recipes.values()} == {"sign_consensus"}  # the default
    assert [m["weight"] for m in recipes["no_hub"]["modules"]] == [0.0, 0.0]
    assert recipes["no_hub"]["potential"]["pretrained"]["weight"] == 1.0
    assert [m["weight"] for m in recipes["all_average"]["modules"]] == [0.5, 0.5]
    assert sorted(m["weight"] for m in recipes["best_single"]["modules"]) == [0.0, 1.0]
    knn = compose_potential(pair_hub.hub, pair_hub.mix, tmp_path / "knn", proxy="knn", k=3, device="cpu")
    assert knn["knn"]["k"] == 3 and all(np.isfinite(m["proxy_mae"]) for m in knn["modules"])
    assert sum(m["weight"] for m in knn["modules"]) + knn["potential"]["pretrained"]["weight"] == pytest.approx(1)


def test_composed_and_tuned_potentials_load_without_training_code(pair_hub, composed):
    assert training_imported_by_loading(composed) == []
    assert training_imported_by_loading(pair_hub.root / "pair_A") == []


def test_composed_potential_conserves_energy_and_its_forces_are_gradients(composed):
    atoms = silicon_cells(1, 9)[0]
    spreads = {}
    for name, model in (("composed", str(composed)), ("pretrained", "sevennet")):
        probe = atoms.copy()
        probe.calc = load_calculator(model, device="cpu", dtype="float64")
        spreads[name] = nve_spread(probe, steps=40, temperature=600)
    assert spreads["composed"] <= 1.5 * spreads["pretrained"] + 1e-5, spreads

    probe = atoms.copy()
    probe.calc = load_calculator(str(composed), device="cpu", dtype="float64")
    forces = probe.get_forces()
    step = 1e-4
    for index, axis in ((0, 0), (5, 2), (7, 1)):
        energies = []
        for sign in (1, -1):
            moved = probe.copy()
            moved.calc = probe.calc
            moved.positions[index, axis] += sign * step
            energies.append(moved.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[index, axis], abs=1e-5)


def test_composed_potential_relaxes_screens_and_continues_to_finetune(pair_hub, composed, tmp_path):
    from ase_moma.simulate import relax_many

    candidates = silicon_cells(2, 11)
    relaxed = relax_many(candidates, load_backbone(str(composed), device="cpu"), fmax=0.5, steps=5)
    assert len(relaxed) == 2
    ase.io.write(tmp_path / "candidates.extxyz", candidates)
    assert main(["screen", str(tmp_path / "candidates.extxyz"), "--backbone", str(composed), "-o",
                 str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert (tmp_path / "run" / "results.parquet").is_file()

    assert main(["finetune", "--backbone", str(composed), "--train", str(pair_hub.mix), "--valid",
                 str(pair_hub.mix), "--method", "sparse", "--max-steps", "1", "--batch-size", "4",
                 "-o", str(tmp_path / "tuned"), "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "tuned" / "finetune.json").read_text())
    assert Path(record["backbone"]["source"]) == composed.resolve()
    assert record["backbone"]["fingerprint"] == load_backbone(str(composed), device="cpu").fingerprint()


def test_replaying_a_potential_recipe_rebuilds_the_same_weights(pair_hub, composed, tmp_path):
    recipe = replay(composed / "recipe.json", tmp_path / "again")
    assert recipe["merged"]["sha256"] == json.loads((composed / "recipe.json").read_text())["merged"]["sha256"]


def test_sign_consensus_keeps_a_change_only_one_module_makes_whole(pair_hub):
    deltas = [read_delta(load_file(str(pair_hub.hub.folder(name) / DELTA))) for name in ("pair_A", "pair_B")]
    shapes = {k: v.shape for k, v in load_backbone("sevennet", device="cpu").model.state_dict().items()}
    plain = merge_deltas(deltas, [0.5, 0.5], shapes, "sum")
    consensus = merge_deltas(deltas, [0.5, 0.5], shapes, "sign_consensus")
    checked = 0
    for name in plain:
        size = shapes[name].numel()
        dense = [torch.zeros(size, dtype=torch.float64).index_add_(0, *d[name][:1], d[name][1].double())
                 if name in d else torch.zeros(size, dtype=torch.float64) for d in deltas]
        a, b = dense
        got_sum = torch.zeros(size, dtype=torch.float64).index_add_(0, plain[name][0], plain[name][1].double())
        got_ties = torch.zeros(size, dtype=torch.float64).index_add_(0, consensus[name][0],
                                                                    consensus[name][1].double())
        torch.testing.assert_close(got_sum, (a + b) / 2, rtol=1e-6, atol=1e-9)
        only_a, only_b = (a != 0) & (b == 0), (b != 0) & (a == 0)
        agree, oppose = (a * b) > 0, (a * b) < 0
        torch.testing.assert_close(got_ties[only_a], a[only_a], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(got_ties[only_b], b[only_b], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(got_ties[agree], (a + b)[agree] / 2, rtol=1e-6, atol=1e-9)
        larger = torch.where(a.abs() > b.abs(), a, torch.where(b.abs() > a.abs(), b, torch.zeros(())))
        torch.testing.assert_close(got_ties[oppose], larger[oppose], rtol=1e-6, atol=1e-9)  # an exact tie cancels
        checked += int(only_a.sum() + only_b.sum() + agree.sum() + oppose.sum())
    assert checked > 1000


def test_hub_list_shows_potential_modules(pair_hub, capsys):
    assert main(["hub", "list", str(pair_hub.hub.path)]) == 0
    out = capsys.readouterr().out
    assert "0 property and 2 potential modules" in out
    row = next(line for line in out.splitlines() if line.startswith("pair_A"))
    assert "Si" in row and "sparse" in row and "10.0 %" in row and "MB" in row


def test_bad_input_is_refused_in_one_line(pair_hub, tmp_path, capsys):
    unlabelled = silicon_cells(3, 5)
    ase.io.write(tmp_path / "unlabelled.extxyz", unlabelled)
    copper = [atoms.copy() for atoms in ase.io.read(pair_hub.mix, ":")]
    for atoms in copper:
        atoms.set_chemical_symbols(["Cu"] * len(atoms))
    ase.io.write(tmp_path / "copper.extxyz", labelled(copper, [load_calculator("sevennet", device="cpu")]))
    cases = {"unlabelled.extxyz": "no energy", "copper.extxyz": "covers any frame"}
    for name, message in cases.items():
        assert main(["compose", "--hub", str(pair_hub.hub.path), "--data", str(tmp_path / name), "--potential",
                     "-o", str(tmp_path / f"out_{name}"), "--device", "cpu"]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / f"out_{name}").exists()
    assert main(["compose", "--hub", str(pair_hub.hub.path), "--data", str(pair_hub.mix), "--potential",
                 "--strategy", "softmax", "-o", str(tmp_path / "soft"), "--device", "cpu"]) == 1
    assert "amc, all_average, best_single, no_hub" in capsys.readouterr().err
    assert main(["compose", "--hub", str(pair_hub.hub.path), "--data", str(pair_hub.mix), "--target", "energy",
                 "-o", str(tmp_path / "property"), "--device", "cpu"]) == 1
    assert "potential modules compose with --potential" in capsys.readouterr().err

    assert main(["compose", "--hub", str(pair_hub.hub.path), "--data", str(pair_hub.mix), "--potential",
                 "--target", "energy", "--n-train", "4", "-o", str(tmp_path / "flags")]) == 2
    assert "does not use --n-train, --target" in capsys.readouterr().err
    assert main(["compose", "--hub", str(pair_hub.hub.path), "--data", str(pair_hub.mix), "--target", "energy",
                 "--proxy", "knn", "-o", str(tmp_path / "flags")]) == 2
    assert "--proxy apply to compose --potential only" in capsys.readouterr().err

    other = Hub.create(tmp_path / "chgnet_hub", load_backbone("chgnet", device="cpu"))
    with pytest.raises(HubIntegrityError, match="trained on backbone 'sevennet'"):
        other.add(pair_hub.hub.folder("pair_A"))


def test_inspect_names_what_moved_and_how_two_modules_overlap(pair_hub, tmp_path, capsys):
    folders = [pair_hub.hub.folder(name) for name in ("pair_A", "pair_B")]
    assert main(["inspect", str(pair_hub.root / "pair_A"), "--chart", str(tmp_path / "moved.png")]) == 0
    out = capsys.readouterr().out
    assert "path weights moved (10.00 %)" in out and "per irrep degree l:" in out and "largest changes" in out
    assert (tmp_path / "moved.png").stat().st_size > 0
    assert main(["inspect", *map(str, folders)]) == 0
    assert "random choices of the same sizes would share" in capsys.readouterr().out

    from ase_moma.finetune.inspect import compare_moved

    overlap = compare_moved(*folders)
    deltas = [read_delta(load_file(str(folder / DELTA))) for folder in folders]
    assert overlap["moved"] == [sum(len(i) for i, _ in d.values()) for d in deltas]
    shared = sum(len(set(deltas[0][n][0].tolist()) & set(deltas[1][n][0].tolist())) for n in deltas[0]
                 if n in deltas[1])
    assert overlap["shared"] == shared and 0 < overlap["by_chance"] and 0 < overlap["jaccard"] < 1


def test_an_angular_perturbation_moves_more_l1_paths_than_a_radial_one(pair_hub, tmp_path):
    """What sparse fine-tuning moves follows what the data ask for, beside the method's own preference
    (every sparse module moves l = 0 paths at about 1.4× their share of all entries: bench/RESULTS.md):
    a module fitted to an angular three-body term moves a larger share of l = 1 paths than the two
    fitted to radial pair terms, on the same cells and recipe."""
    from ase_moma.finetune.inspect import inspect_moved

    calc = load_calculator("sevennet", device="cpu")
    frames = labelled(silicon_cells(12, 1), [calc, ANGULAR.calculator()])
    config = FinetuneConfig(method="sparse", batch_size=4, epochs=1000, patience=1000, max_steps=STEPS, seed=0)
    finetune_potential("sevennet", frames[:9], frames[9:], tmp_path / "angular", config, device="cpu", progress=False)

    def l1_share(folder) -> float:
        report = inspect_moved(folder)
        return report["per_l"]["1"]["updated"] / report["total"]["updated"]

    radial = [l1_share(pair_hub.root / name) for name in ("pair_A", "pair_B")]
    assert l1_share(tmp_path / "angular") > 1.3 * max(radial), (l1_share(tmp_path / "angular"), radial)
