"""The module hub: training modules on real subsets, storing, verifying, sharing, refusing."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from ase_moma import load_backbone
from ase_moma.cli import main
from ase_moma.hub import Hub, HubIntegrityError, TrainConfig, train_module
from ase_moma import module_files
from ase_moma.training import engine as engine_module
from ase_moma.labelled_data import load_task_data
from ase_moma.module_files import sha256_file
from hub_fixtures import TINY

def _copy_hub(hub: Hub, tmp_path: Path) -> Hub:
    shutil.copytree(hub.path, tmp_path / "hub")
    return Hub(tmp_path / "hub")


def test_reloaded_modules_reproduce_their_recorded_predictions(hub, hub_data):
    """The validation MAE recomputed from the reloaded files equals the one recorded at training."""
    for name, source, key in (("heat_full", "perov", "heat_all"), ("gap_adapter", "perov", "ind_gap"),
                              ("carbon_energy", "carbon", "energy_per_atom")):
        meta = hub.read_module(name)
        model = hub.load_module(name, device="cpu")
        val = load_task_data(hub_data[source], key, val_fraction=_config(meta).val_fraction,
                             seed=_config(meta).seed).val
        predictions = model.predict(val.frames)
        assert np.mean(np.abs(predictions - val.targets)) == pytest.approx(meta["metrics"]["val_mae"], rel=1e-12)
        again = hub.load_module(name, device="cpu").predict(val.frames)
        np.testing.assert_array_equal(predictions, again)


def _config(meta: dict) -> TrainConfig:
    fields = {k: v for k, v in meta["training"].items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**fields)


def test_module_files_are_safetensors_and_small(hub):
    sizes = {entry["name"]: entry["size_bytes"] for entry in hub.modules}
    n_params = sum(p.numel() for p in load_backbone("sevennet", device="cpu").model.parameters())
    assert 4 * n_params < sizes["heat_full"] < 4 * n_params + 300_000  # float32 weights + head
    assert sizes["gap_adapter"] < sizes["heat_full"] / 4
    for name in hub.names():
        files = sorted(p.name for p in hub.folder(name).iterdir())
        assert all(f == "module.json" or f.endswith(".safetensors") for f in files)
    meta = hub.read_module("carbon_energy")
    assert meta["readout"] == "energy_per_atom" and "head.safetensors" in meta["files"]


def test_energy_modules_fit_the_reference_shift_of_another_dft_set_up(hub, hub_data):
    """carbon_24 energies sit about -145 eV/atom below SevenNet-0's: the fitted carbon
    reference bridges that, so the module lands within the targets' spread."""
    model = hub.load_module("carbon_energy", device="cpu")
    assert model.head.shift[6] < -100 and model.head.shift[[1, 8, 14]].abs().max() == 0
    meta = hub.read_module("carbon_energy")
    assert meta["metrics"]["val_mae"] < 5 * meta["metrics"]["train_target_std"]


def test_module_metadata_records_provenance(hub, hub_data):
    for entry in hub.modules:
        meta = hub.read_module(entry["name"])
        assert meta["backbone"] == hub.backbone  # name, version, source, fingerprint
        assert set(meta["metrics"]) >= {"val_mae", "val_rmse", "val_mae_predict_mean", "train_target_std"}
        assert meta["n_train"] + meta["n_val"] == len(ase.io.read(hub_data["perov" if "carbon" not in
                                                                          entry["name"] else "carbon"], ":"))
        assert len(meta["data"]["train_hash"]) == 64 and meta["build_mode"] == "custom"
        assert meta["created_by"].startswith("ase-moma ") and meta["training"]["epochs_run"] == 2
        assert meta["normalisation"]["std"] > 0


def test_one_changed_byte_fails_verify_and_load_naming_the_file(hub, tmp_path, capsys):
    hub = _copy_hub(hub, tmp_path)
    weights = hub.folder("gap_adapter") / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01
    weights.write_bytes(bytes(raw))
    problems = hub.verify()
    assert problems["heat_full"] is None and "weights.safetensors" in problems["gap_adapter"]
    with pytest.raises(HubIntegrityError, match="gap_adapter/weights.safetensors"):
        hub.load_module("gap_adapter", device="cpu")
    assert main(["hub", "verify", str(hub.path)]) == 1
    assert "gap_adapter/weights.safetensors is corrupted" in capsys.readouterr().out


class _Exploit:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_in_a_module_is_refused_and_never_executed(hub, tmp_path):
    hub = _copy_hub(hub, tmp_path)
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    folder = hub.folder("heat_full")
    torch.save({"x": exploit}, folder / "extra.pt")
    with pytest.raises(HubIntegrityError, match="extra.pt looks like a pickle"):
        hub.load_module("heat_full", device="cpu")
    with pytest.raises(HubIntegrityError, match="extra.pt"):
        Hub.create(tmp_path / "other", load_backbone("sevennet", device="cpu")).add(folder)
    (folder / "extra.pt").unlink()
    # a pickle under the weights' name, with its checksum recorded, is still never unpickled
    (folder / "weights.safetensors").write_bytes(pickle.dumps(exploit))
    meta = json.loads((folder / "module.json").read_text())
    meta["files"]["weights.safetensors"] = sha256_file(folder / "weights.safetensors")
    (folder / "module.json").write_text(json.dumps(meta))
    with pytest.raises(HubIntegrityError, match="not a valid safetensors file"):
        hub.load_module("heat_full", device="cpu")
    assert not marker.exists()


def test_add_imports_a_verified_module_and_refuses_foreign_ones(hub, tmp_path, hub_data):
    other = Hub.create(tmp_path / "other", load_backbone("sevennet", device="cpu"))
    assert other.add(hub.folder("heat_full")) == "heat_full"
    assert other.read_module("heat_full")["files"] == hub.read_module("heat_full")["files"]
    with pytest.raises(FileExistsError):
        other.add(hub.folder("heat_full"))

    import sevenn._const

    older = load_backbone("sevennet", sevenn._const.SEVENNET_0_22May2024, device="cpu")
    older_hub = Hub.create(tmp_path / "older", older)
    train_module(older_hub, "heat", hub_data["perov"], "heat_all", config=TINY, device="cpu", progress=False)
    with pytest.raises(HubIntegrityError, match="other pretrained sevennet weights"):
        other.add(older_hub.folder("heat"))

    chgnet_hub = Hub.create(tmp_path / "chgnet", load_backbone("chgnet", device="cpu"))
    train_module(chgnet_hub, "heat", hub_data["perov"], "heat_all",
                 config=TrainConfig(**{**TINY.__dict__, "kind": "adapter", "epochs": 1}),
                 device="cpu", progress=False)
    with pytest.raises(HubIntegrityError, match="trained on backbone 'chgnet'"):
        other.add(chgnet_hub.folder("heat"))
    assert other.names() == ["heat_full"]


def test_a_crash_while_writing_leaves_the_hub_as_it_was_and_rerun_resumes(hub, tmp_path, hub_data,
                                                                          monkeypatch):
    hub = _copy_hub(hub, tmp_path)
    index_before = (hub.path / "hub.json").read_bytes()
    folders_before = sorted(p.name for p in (hub.path / "modules").iterdir())
    real_save = module_files.save_tensors

    def save_then_crash(path, tensors):
        real_save(path, tensors)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(module_files, "save_tensors", save_then_crash)
    with pytest.raises(OSError, match="simulated"):
        train_module(hub, "dir_gap", hub_data["perov"], "dir_gap", config=TINY, device="cpu", progress=False)
    assert (hub.path / "hub.json").read_bytes() == index_before
    assert sorted(p.name for p in (hub.path / "modules").iterdir()) == folders_before
    assert main(["hub", "list", str(hub.path)]) == 0
    assert (hub.path / ".work" / "dir_gap").is_dir()  # the finished training is kept

    monkeypatch.setattr(module_files, "save_tensors", real_save)
    steps = []
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: steps.append(1))
    meta = train_module(hub, "dir_gap", hub_data["perov"], "dir_gap", config=TINY, device="cpu", progress=False)
    assert steps == []  # resumed after the last epoch: no training repeated
    assert meta["training"]["epochs_run"] == TINY.epochs
    assert "dir_gap" in Hub(hub.path).names() and not (hub.path / ".work" / "dir_gap").exists()


def test_training_interrupted_mid_run_resumes_to_the_same_module(hub, tmp_path, hub_data, monkeypatch):
    config = TrainConfig(**{**TINY.__dict__, "epochs": 3})
    straight = _copy_hub(hub, tmp_path / "a")
    train_module(straight, "heat", hub_data["perov"], "heat_all", config=config, device="cpu", progress=False)

    resumed = _copy_hub(hub, tmp_path / "b")
    real_checkpoint = engine_module.save_checkpoint
    calls = []

    def interrupt_after_first_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(engine_module, "save_checkpoint", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_module(resumed, "heat", hub_data["perov"], "heat_all", config=config, device="cpu", progress=False)
    assert "heat" not in Hub(resumed.path).names()
    monkeypatch.setattr(engine_module, "save_checkpoint", real_checkpoint)
    train_module(resumed, "heat", hub_data["perov"], "heat_all", config=config, device="cpu", progress=False)
    from safetensors.torch import load_file

    # Equal up to float32 round-off: multithreaded CPU BLAS may round the last bit differently
    # from run to run; a resume that lost the optimiser state or restarted would differ by far more.
    for filename in ("weights.safetensors", "head.safetensors"):
        a, b = (load_file(str(h.folder("heat") / filename)) for h in (straight, resumed))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("problem, match", [
    ("missing", "frame 3 has no target 'heat_all'"),
    ("nan", "frame 3 target 'heat_all' is nan"),
    ("empty", "holds no structures"),
    ("element", "frame 3: .*Og"),
])
def test_bad_data_is_refused_before_anything_is_written(hub, tmp_path, hub_data, problem, match):
    hub = _copy_hub(hub, tmp_path)
    index_before = (hub.path / "hub.json").read_bytes()
    frames = ase.io.read(hub_data["perov"], ":")
    if problem == "missing":
        del frames[3].info["heat_all"]
    elif problem == "nan":
        frames[3].info["heat_all"] = float("nan")
    elif problem == "empty":
        frames = []
    else:
        frames[3].numbers[0] = 118
    bad = tmp_path / "bad.extxyz"
    if frames:
        ase.io.write(bad, frames)
    else:
        bad.write_text("")
    with pytest.raises(ValueError, match=match):
        train_module(hub, "bad", bad, "heat_all", config=TINY, device="cpu", progress=False)
    assert (hub.path / "hub.json").read_bytes() == index_before
    assert not (hub.path / "modules" / "bad").exists() and not (hub.path / ".work" / "bad").exists()


def _write_copy(hub_path: str, name: str, source_folder: str) -> None:
    Hub(hub_path).add(source_folder, name=name)


def test_concurrent_writers_are_serialised(hub, tmp_path):
    target = Hub.create(tmp_path / "shared", load_backbone("sevennet", device="cpu"))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_copy, args=(str(target.path), f"copy{i}", str(hub.folder(
        "gap_adapter")))) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    final = Hub(target.path)
    assert sorted(final.names()) == [f"copy{i}" for i in range(4)]
    assert all(problem is None for problem in final.verify().values())


def test_cli_init_train_list_show_remove(tmp_path, hub_data, capsys):
    path = str(tmp_path / "hub")
    assert main(["hub", "init", path]) == 0
    assert main(["hub", "train", path, "--data", str(hub_data["perov"]), "--target", "dir_gap",
                 "--name", "gap", "--kind", "adapter", "--epochs", "1", "--val-fraction", "0.25",
                 "--unit", "eV", "--mode", "quick", "--device", "cpu"]) == 0
    assert main(["hub", "list", path]) == 0
    out = capsys.readouterr().out
    assert "gap" in out and "adapter" in out and "MB" in out
    assert main(["hub", "show", path, "gap"]) == 0
    assert json.loads(capsys.readouterr().out)["build_mode"] == "quick"
    assert main(["hub", "init", path]) == 1  # an existing hub is not overwritten
    assert main(["hub", "show", path, "nope"]) == 1
    assert main(["hub", "remove", path, "gap"]) == 0
    assert Hub(path).names() == []


def test_a_hub_refuses_a_backbone_with_other_weights(hub, monkeypatch):
    record = dict(hub.meta["backbone"], fingerprint="0" * 64)
    monkeypatch.setattr(hub, "meta", dict(hub.meta, backbone=record))
    with pytest.raises(HubIntegrityError, match="was built on 0000000000000000"):
        hub.load_backbone(device="cpu")


@pytest.mark.usefixtures("ray_turn")
def test_a_task_list_on_ray_resumes_a_job_whose_worker_was_killed(hub_data, sevennet, tmp_path):
    import signal
    import threading

    import psutil

    pytest.importorskip("ray")
    from ase_moma.hub.task_list import read_task_list, train_tasks

    Hub.create(tmp_path / "hub", sevennet)
    common = {"data": str(hub_data["perov"]), "epochs": 3, "batch_size": 4, "val_fraction": 0.25, "hidden": 16,
              "kind": "adapter", "patience": 10}
    (tmp_path / "tasks.json").write_text(json.dumps([{"name": "gap", "target": "ind_gap", **common},
                                                     {"name": "heat", "target": "heat_all", **common}]))
    killed: list[int] = []

    def kill_the_jobs_after_a_first_epoch() -> None:
        """Once one job has checkpointed an epoch, SIGKILL every running job: that one must resume."""
        deadline = time.time() + 600
        while time.time() < deadline:
            states = [tmp_path / "hub" / ".work" / name / "state.json" for name in ("gap", "heat")]
            if any(state.is_file() for state in states):  # a job has just finished its first epoch
                for process in psutil.process_iter(["pid", "cmdline"]):
                    if "ray::train_job" in " ".join(process.info["cmdline"] or []):
                        os.kill(process.info["pid"], signal.SIGKILL)
                        killed.append(process.info["pid"])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_jobs_after_a_first_epoch)
    killer.start()
    results = train_tasks(tmp_path / "hub", read_task_list(tmp_path / "tasks.json"), engine="ray", workers=2,
                          device="cpu")
    killer.join()
    assert killed and [r["status"] for r in results] == ["trained", "trained"]
    training = [Hub(tmp_path / "hub").read_module(name)["training"] for name in ("gap", "heat")]
    assert max(t["resumed_from"] for t in training) >= 1  # the killed job went on from its checkpoint
    assert all(t["epochs_run"] == 3 for t in training)
    again = train_tasks(tmp_path / "hub", read_task_list(tmp_path / "tasks.json"), device="cpu")
    assert [r["status"] for r in again] == ["kept (already in the hub)"] * 2
