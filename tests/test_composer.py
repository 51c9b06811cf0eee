"""The AMC pipeline end to end on a real matminer task: compose, fine-tune, load, replay, baselines."""

from __future__ import annotations

import json
import shutil

import ase.io
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ase_moma import load_backbone, load_calculator
from ase_moma.calculators import MomaCalculator, PropertyCalculator
from ase_moma.cli import main
from ase_moma.compose import (STRATEGIES, compose, finetune_composed, knn_proxy, module_embeddings, replay,
                              strategy_weights)
from ase_moma.compose import composer as composer_module
from ase_moma.compose.recipe import read_recipe
from ase_moma.training.property_models import TrainConfig
from ase_moma.hub import Hub, HubIntegrityError
from ase_moma.labelled_data import load_task_data
from ase_moma.module_files import MODULE_JSON, WEIGHTS, read_json, write_json

from hub_fixtures import MATMINER

TASK = "jarvis_2d_gap_tbmbj"
FULL_MODULES = ["heat_full", "carbon_energy", "dir_gap_full", "ind_gap_full"]
QUICK = TrainConfig(epochs=1, batch_size=8, lr=8e-5, head_lr=1e-3, patience=2)


def _task(n_train: int = 30) -> dict:
    data = MATMINER / f"{TASK}.extxyz"
    return {"data": data, "target": "target", "split": MATMINER / "splits" / "seed0.json", "task": TASK,
            "n_train": n_train, "unit": "eV"}


@pytest.fixture(scope="session")
def composed(hub, tmp_path_factory):
    """AMC over the hub's four full modules for the 2D TB-mBJ gap task (30 structures), fine-tuned."""
    out = tmp_path_factory.mktemp("composed") / "out"
    recipe = compose(hub, out=out, device="cpu", progress=False, **_task())
    finetune_composed(out, QUICK, device="cpu", progress=False)
    return out, recipe


def test_amc_recipe_records_weights_proxies_and_settings(composed, hub):
    out, recipe = composed
    assert [m["name"] for m in recipe["modules"]] == FULL_MODULES
    weights = np.array([m["weight"] for m in recipe["modules"]])
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert recipe["knn"] == {"k": 5, "temperature": 0.2, "similarity": "cosine"}
    assert recipe["solver"]["name"] == "CLARABEL" and recipe["solver"]["status"] == "optimal"
    assert recipe["task"]["train_size"] == 30
    for module in recipe["modules"]:
        assert module["sha256"] == hub.read_module(module["name"])["files"][WEIGHTS]
    assert json.loads((out / "recipe.json").read_text())["modules"] == recipe["modules"]
    assert (out / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the proxy MAE is the kNN formula on the cached embeddings of the training split
    train = load_task_data(*[_task()[k] for k in ("data", "target", "split", "task")], max_train=30).train
    embeddings = module_embeddings(hub, FULL_MODULES, train.frames, device="cpu", progress=False)
    for module in recipe["modules"]:
        proxy = knn_proxy(embeddings[module["name"]], train.targets)
        assert module["proxy_mae"] == pytest.approx(np.abs(proxy - train.targets).mean(), rel=1e-12)


def test_merged_model_is_the_weighted_sum_and_loads_as_a_backbone(composed, hub):
    out, recipe = composed
    merged = load_file(str(out / "merged.safetensors"))
    used = [m for m in recipe["modules"] if m["weight"] > 0]
    files = [load_file(str(hub.folder(m["name"]) / WEIGHTS)) for m in used]
    for key in list(merged)[:20]:
        if merged[key].is_floating_point():
            expected = sum(m["weight"] * f[key].double() for m, f in zip(used, files)).float()
            torch.testing.assert_close(merged[key], expected, rtol=0, atol=1e-6)

    shutil.rmtree(out / "model.hidden", ignore_errors=True)
    (out / "model").rename(out / "model.hidden")  # the merged (not yet fine-tuned) state
    try:
        backbone = load_backbone(str(out), device="cpu")
        reference = hub.load_backbone(device="cpu")
        reference.model.load_state_dict(merged)
        atoms = ase.io.read(_task()["data"], 0)
        energy = MomaCalculator(backbone).get_potential_energy(atoms)
        assert energy == MomaCalculator(reference).get_potential_energy(atoms)
        assert isinstance(load_calculator(str(out), device="cpu"), MomaCalculator)
        # a hub can be built on the composed backbone and reloads it by fingerprint
        new_hub = Hub.create(out.parent / "hub_on_composed", backbone)
        reloaded = new_hub.load_backbone(device="cpu").fingerprint()
        assert reloaded == backbone.fingerprint() != hub.backbone["fingerprint"]
    finally:
        (out / "model.hidden").rename(out / "model")


def test_finetuned_composition_is_a_property_calculator_and_a_hub_module(composed, hub, tmp_path):
    out, _ = composed
    meta = read_json(out / "model" / MODULE_JSON, "module")
    assert meta["target"] == "target" and meta["n_train"] == 30 and meta["n_test"] == 18
    assert np.isfinite(meta["metrics"]["test_mae"])
    # the kept model is the best on validation, the plain backbone's own probe among the candidates
    composition = meta["composition"]
    assert composition["kept"] in ("fine-tuned composition", "plain backbone probe")
    assert meta["metrics"]["val_mae"] <= composition["plain_probe_val_mae"] * (1 + 1e-6)
    calc = load_calculator(str(out), device="cpu")
    assert isinstance(calc, PropertyCalculator) and "target" in calc.implemented_properties
    frames = ase.io.read(_task()["data"], ":4")
    one = calc.get_property("target", frames[0])
    assert one == pytest.approx(calc.predict(frames)[0], rel=1e-5)

    copy = Hub(shutil.copytree(hub.path, tmp_path / "hub"))
    name = copy.add(out / "model")
    assert copy.load_module(name, device="cpu").predict(frames[:1])[0] == pytest.approx(one, rel=1e-5)

    source = tmp_path / "in.extxyz"
    ase.io.write(source, [a.copy() for a in frames])
    assert main(["predict", str(source), "--model", str(out), "-o", str(tmp_path / "p.extxyz"),
                 "--device", "cpu"]) == 0
    predicted = [a.info["target"] for a in ase.io.read(tmp_path / "p.extxyz", ":")]
    np.testing.assert_allclose(predicted, calc.predict(frames), rtol=1e-6)


def test_replaying_a_recipe_rebuilds_the_same_merged_model(composed, tmp_path):
    out, recipe = composed
    again = replay(out / "recipe.json", tmp_path / "again")
    assert again["merged"]["sha256"] == recipe["merged"]["sha256"]
    assert [m["weight"] for m in again["modules"]] == [m["weight"] for m in recipe["modules"]]
    assert main(["compose", "--recipe", str(out / "recipe.json"), "-o", str(tmp_path / "cli")]) == 0
    assert read_json(tmp_path / "cli" / "recipe.json", "recipe")["merged"] == recipe["merged"]


def test_without_the_plain_fallback_the_composition_is_kept_as_fine_tuned(composed, tmp_path):
    out, _ = composed
    replay(out / "recipe.json", tmp_path / "again")
    meta = finetune_composed(tmp_path / "again", QUICK, device="cpu", progress=False, plain_fallback=False)
    assert meta["composition"]["kept"] == "fine-tuned composition"
    assert meta["composition"]["plain_probe_val_mae"] is None


def test_baselines_share_the_pipeline(hub, tmp_path):
    recipes = {}
    for strategy in ("best_single", "no_hub"):
        recipes[strategy] = compose(hub, out=tmp_path / strategy, strategy=strategy, device="cpu",
                                    progress=False, **_task())
    best = recipes["best_single"]["modules"]
    assert [m["weight"] for m in best].count(1.0) == 1
    chosen = max(best, key=lambda m: m["weight"])
    assert chosen["proxy_mae"] == min(m["proxy_mae"] for m in best)
    merged = load_file(str(tmp_path / "best_single" / "merged.safetensors"))
    module = load_file(str(hub.folder(chosen["name"]) / WEIGHTS))
    assert all(torch.equal(merged[k], module[k]) for k in module)
    assert recipes["no_hub"]["merged"] is None and recipes["no_hub"]["modules"] == []
    meta = finetune_composed(tmp_path / "no_hub", QUICK, device="cpu", progress=False)
    assert meta["composition"]["modules"] == [] and np.isfinite(meta["metrics"]["val_mae"])


def test_strategy_weights_follow_their_definitions():
    rng = np.random.default_rng(3)
    y = rng.standard_normal(50)
    p = np.stack([y + s * rng.standard_normal(50) for s in (0.2, 0.4, 3.0, 5.0, 8.0)])
    mae = np.abs(p - y).mean(1)
    amc, solution = strategy_weights("amc", p, y, mae)
    support = amc > 0
    np.testing.assert_allclose(amc, solution.weights, atol=1e-6)
    for strategy in STRATEGIES:
        weights, _ = strategy_weights(strategy, p, y, mae, seed=1)
        if strategy == "no_hub":
            assert weights.size == 0
            continue
        assert weights.sum() == pytest.approx(1.0) and weights.min() >= 0
        if strategy == "all_average":
            np.testing.assert_allclose(weights, 0.2)
        elif strategy == "select_average":
            np.testing.assert_allclose(weights[support], 1 / support.sum())
            assert not weights[~support].any()
        elif strategy == "random":
            assert (weights > 0).sum() == support.sum()
        elif strategy == "softmax":
            softmax = np.exp(-mae) / np.exp(-mae).sum()
            np.testing.assert_allclose(weights, softmax / softmax[softmax >= 1e-6].sum() * (softmax >= 1e-6))
        elif strategy == "best_single":
            assert weights[np.argmin(mae)] == 1.0
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_weights("median", p, y, mae)


def test_adapter_modules_compose_layer_by_layer(hub, tmp_path):
    recipe = compose(hub, out=tmp_path / "adapters", kind="adapter", device="cpu", progress=False, **_task())
    assert [(m["name"], m["weight"]) for m in recipe["modules"]] == [("gap_adapter", 1.0)]
    backbone = load_backbone(str(tmp_path / "adapters"), device="cpu")
    module = hub.load_module("gap_adapter", device="cpu")
    atoms = ase.io.read(_task()["data"], 0)
    torch.testing.assert_close(backbone.embed([atoms]), module.backbone.embed([atoms]), rtol=0, atol=0)
    assert backbone.fingerprint() != hub.backbone["fingerprint"]


def test_bad_input_is_refused_and_nothing_is_written(hub, hub_data, tmp_path, monkeypatch):
    task = _task()
    frames = ase.io.read(task["data"], ":")
    frames[3].info["target"] = float("nan")
    nan_file = tmp_path / "nan.extxyz"
    ase.io.write(nan_file, frames)
    with pytest.raises(ValueError, match="frame 3 target 'target' is nan"):
        compose(hub, nan_file, "target", tmp_path / "o1", device="cpu", progress=False)
    with pytest.raises(ValueError, match="K\\+1=6 training structures.*has 5"):
        compose(hub, out=tmp_path / "o2", device="cpu", progress=False, **dict(task, n_train=5))
    empty = Hub.create(tmp_path / "empty", load_backbone("sevennet", device="cpu"))
    with pytest.raises(ValueError, match="has no modules to compose"):
        compose(empty, out=tmp_path / "o3", device="cpu", progress=False, **task)

    mixed = Hub(shutil.copytree(hub.path, tmp_path / "mixed"))
    meta_path = mixed.folder("dir_gap_full") / MODULE_JSON
    meta = read_json(meta_path, "module")
    write_json(meta_path, dict(meta, backbone=dict(meta["backbone"], fingerprint="0" * 64)))
    with pytest.raises(HubIntegrityError, match="dir_gap_full started from other pretrained sevennet"):
        compose(mixed, out=tmp_path / "o4", device="cpu", progress=False, **task)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(composer_module, "weights_chart", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compose(hub, out=tmp_path / "o5", device="cpu", progress=False, **task)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mixed", "nan.extxyz"]


def test_composing_for_a_task_never_uses_its_own_modules(hub, hub_data, tmp_path):
    recipe = compose(hub, hub_data["perov"], "heat_all", tmp_path / "out", kind="full", device="cpu",
                     progress=False)
    assert sorted(recipe["excluded_same_task"]) == ["dir_gap_full", "heat_full", "ind_gap_full"]
    assert [m["name"] for m in recipe["modules"]] == ["carbon_energy"]
    with pytest.raises(ValueError, match="leave one task out"):
        compose(hub, hub_data["perov"], "heat_all", tmp_path / "none", modules=["heat_full"], device="cpu",
                progress=False)
    assert not (tmp_path / "none").exists()


def test_a_composition_fine_tunes_with_other_views(composed, tmp_path):
    out, _ = composed
    replay(out / "recipe.json", tmp_path / "fused")
    assert main(["finetune", str(tmp_path / "fused"), "--modalities", "graph,structure,composition", "--epochs", "1",
                 "--device", "cpu"]) == 0
    meta = read_json(tmp_path / "fused" / "model" / MODULE_JSON, "module")
    assert meta["fusion"]["experts"] in ([], ["composition", "composition_boosted", "joint", "structure"])
    # the forest over both views and boosting on composition are views of their own
    derived = ["composition_boosted", "joint"] if meta["fusion"]["experts"] else []
    assert meta["fusion"]["views"] == ["graph", "composition", *derived, "structure"]
    frames = load_task_data(**{k: v for k, v in _task().items() if k not in ("n_train", "unit")}).test.frames[:3]
    values, notes = load_calculator(str(tmp_path / "fused"), device="cpu").predict_with_notes(frames)
    assert np.isfinite(values).all()
    assert all(("fusion_gate_composition" in note) == ("fusion_gate_structure" in note)
               == ("fusion.safetensors" in meta["files"]) for note in notes)


def test_a_project_folder_moves_as_a_whole(hub, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    task = _task(n_train=16)
    shutil.copyfile(task["data"], project / "task.extxyz")
    shutil.copyfile(task["split"], project / "split.json")
    task.update(data=project / "task.extxyz", split=project / "split.json")
    compose(hub, out=project / "composed", strategy="no_hub", device="cpu", progress=False, **task)
    stored = read_json(project / "composed" / "recipe.json", "recipe")
    assert stored["task"]["data"] == "../task.extxyz" and stored["task"]["split"] == "../split.json"
    project.rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "composed"
    assert read_recipe(moved)["task"]["data"] == str((tmp_path / "moved" / "task.extxyz").resolve())
    assert read_recipe(moved)["hub"] == str(hub.path.resolve())
    meta = finetune_composed(moved, QUICK, device="cpu", progress=False)  # reads the data where it now is
    assert meta["data"]["source"] == str((tmp_path / "moved" / "task.extxyz").resolve())
