"""The starter hub that ships with ase-moma: complete, small, verified when copied out, and reproducible."""

from __future__ import annotations

import json
import shutil

import pytest

from ase_moma.cli import main
from ase_moma.hub import HubIntegrityError
from ase_moma.hub import starter as starter_module
from ase_moma.hub.starter import STARTER_HUB, write_starter_hub
from ase_moma.labelled_data import load_task_data
from ase_moma.module_files import MODULE_JSON, WEIGHTS

from hub_fixtures import MATMINER

DATA = MATMINER.parent  # the small real sets shipped in data/

UPSTREAM_TASKS = {"perov_5", "carbon_24"}
MLEARN_TASKS = {"mlearn_Si", "mlearn_Ge", "mlearn_Li", "mlearn_Mo"}


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    return write_starter_hub(tmp_path_factory.mktemp("starter") / "hub")


def test_the_starter_hub_covers_every_task_and_fits_in_the_repository(starter):
    size = sum(f.stat().st_size for f in STARTER_HUB.rglob("*") if f.is_file())
    assert size <= 20e6
    tasks = {m["task"] for m in starter.modules}
    assert UPSTREAM_TASKS | MLEARN_TASKS <= tasks
    assert set(json.loads((MATMINER / "tasks.json").read_text())) <= tasks
    assert {m["kind"] for m in starter.modules} == {"adapter", "delta"}
    assert all(problem is None for problem in starter.verify().values())


def test_the_starter_hub_holds_a_potential_module_per_mlearn_element(starter):
    potentials = {m["name"]: m for m in starter.modules if m["kind"] == "delta"}
    assert set(potentials) == {f"{task}_potential" for task in MLEARN_TASKS}
    for name, entry in potentials.items():
        meta = starter.read_module(name)
        assert entry["elements"] == [name.split("_")[1]] and meta["method"] == "sparse"
        assert entry["moved_fraction"] == pytest.approx(0.10, abs=1e-4)
        assert {"energy_mae", "forces_mae", "stress_mae"} <= set(entry["valid_errors"])
        assert len(meta["data"]["train"]["sha256"]) == 64 and meta["training"]["seed"] == 0


def test_composing_shipped_silicon_frames_weighs_the_silicon_module_most(starter, tmp_path):
    from ase_moma.compose.potential import compose_potential

    recipe = compose_potential(starter, DATA / "mlip" / "mlearn_Si_test.extxyz", tmp_path / "si", device="cpu")
    weights = {m["name"]: m["weight"] for m in recipe["modules"]}
    assert max(weights, key=weights.get) == "mlearn_Si_potential", weights
    assert recipe["potential"]["composed_errors"]["forces_mae"] < recipe["potential"]["pretrained"]["errors"][
        "forces_mae"]


def test_every_property_module_records_its_seed_and_data_hashes(starter):
    for entry in [m for m in starter.modules if m["kind"] != "delta"]:  # potential modules: the test below
        meta = starter.read_module(entry["name"])
        assert isinstance(meta["training"]["seed"], int)
        assert len(meta["data"]["train_hash"]) == len(meta["data"]["val_hash"]) == 64
        assert meta["metrics"]["val_mae"] <= meta["training"]["start_val_mae"] + 1e-12


def test_a_matminer_module_was_trained_on_the_published_training_split_only(starter):
    task = "jarvis_2d_gap_tbmbj"
    meta = starter.read_module(f"matminer_{task}")
    training = meta["training"]
    data = load_task_data(MATMINER / f"{task}.extxyz", "target", MATMINER / "splits" / "seed0.json", task,
                          seed=training["seed"], max_train=training["max_train"])
    assert meta["data"]["train_hash"] == data.train.data_hash()
    assert meta["data"]["val_hash"] == data.val.data_hash()


def test_cli_writes_a_verified_copy_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["hub", "starter", str(tmp_path / "mine")]) == 0
    assert "all verified" in capsys.readouterr().out
    assert (tmp_path / "mine" / "hub.json").is_file()
    assert main(["hub", "starter", str(tmp_path / "mine")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_a_damaged_starter_hub_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    damaged = tmp_path / "damaged"
    shutil.copytree(STARTER_HUB, damaged)
    module = next((damaged / "modules").iterdir())
    assert (module / MODULE_JSON).is_file()
    weights = module / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(starter_module, "STARTER_HUB", damaged)
    with pytest.raises(HubIntegrityError, match=module.name):
        write_starter_hub(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
