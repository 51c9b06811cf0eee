"""A fine-tuned potential on disk: CLI, load_calculator(OUT), base + delta, hub delta modules, composition."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from potential_fixtures import emt_copper
from safetensors.torch import load_file

from ase_moma import load_backbone, load_calculator
from ase_moma.cli import main
from ase_moma.compose import compose
from ase_moma.compose.potential import compose_potential
from ase_moma.delta import apply_delta, read_delta
from ase_moma.finetune.tuned_folder import FINETUNE_JSON, MODEL, MODULE
from ase_moma.hub import Hub
from ase_moma.module_files import DELTA, HubIntegrityError


def _write_sets(tmp: Path, seed: int) -> tuple[Path, Path]:
    ase.io.write(tmp / f"cu_train{seed}.extxyz", emt_copper(8, seed))
    ase.io.write(tmp / f"cu_valid{seed}.extxyz", emt_copper(4, seed + 100))
    return tmp / f"cu_train{seed}.extxyz", tmp / f"cu_valid{seed}.extxyz"


def _tune(tmp: Path, seed: int, method: str = "sparse") -> Path:
    train, valid = _write_sets(tmp, seed)
    out = tmp / f"tuned_{method}_{seed}"
    assert main(["finetune", "--backbone", "sevennet", "--train", str(train), "--valid", str(valid),
                 "--method", method, "--max-steps", "2", "--batch-size", "4", "--seed", str(seed),
                 "--name", f"cu{seed}", "-o", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    return _tune(tmp_path_factory.mktemp("tuned"), 0)


def test_cli_output_loads_as_a_calculator_equal_to_base_plus_delta(tuned):
    assert {p.name for p in tuned.iterdir()} == {FINETUNE_JSON, MODEL, MODULE, "report.json", "sparsity.png"}
    base = load_backbone("sevennet", device="cpu")
    delta = read_delta(load_file(str(tuned / MODULE / DELTA)))
    apply_delta(base.model, delta)
    saved = load_file(str(tuned / MODEL))
    for name, tensor in base.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name

    probe = emt_copper(1, 42)[0]
    probe.calc = load_calculator(str(tuned), device="cpu")
    expected = base.forward(base.collate([base.graph(probe)]))
    assert probe.get_potential_energy() == pytest.approx(float(expected.energy[0]), abs=1e-6)
    np.testing.assert_allclose(probe.get_forces(), expected.forces.detach().numpy(), atol=1e-6)
    assert load_backbone(str(tuned), device="cpu").fingerprint() != load_backbone("sevennet").fingerprint()


def test_corrupted_tuned_model_is_refused(tuned, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tuned, copy)
    with open(copy / MODEL, "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\x00" * 8)
    with pytest.raises(HubIntegrityError, match="corrupted or was modified"):
        load_calculator(str(copy), device="cpu")


def test_existing_output_is_not_overwritten(tuned, tmp_path, capsys):
    train, valid = _write_sets(tmp_path, 3)
    before = (tuned / FINETUNE_JSON).read_bytes()
    assert main(["finetune", "--backbone", "sevennet", "--train", str(train), "--valid", str(valid),
                 "--max-steps", "1", "-o", str(tuned), "--device", "cpu"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tuned / FINETUNE_JSON).read_bytes() == before
    assert main(["finetune", "--train", str(train)]) == 2
    assert "--backbone" in capsys.readouterr().err


def test_delta_modules_join_a_hub_and_compose_as_potentials(tuned, tmp_path):
    other = _tune(tmp_path, 1)
    hub = Hub.create(tmp_path / "hub", load_backbone("sevennet", device="cpu"))
    assert hub.add(tuned / MODULE) == "cu0" and hub.add(other / MODULE) == "cu1"
    assert [e["kind"] for e in hub.modules] == ["delta", "delta"]
    assert [e["elements"] for e in hub.modules] == [["Cu"], ["Cu"]]

    module = hub.load_module("cu0", device="cpu")
    probe = emt_copper(1, 42)[0]
    tuned_calc = load_calculator(str(tuned), device="cpu")
    assert module.predict([probe])[0] == pytest.approx(tuned_calc.get_potential_energy(probe) / len(probe),
                                                       abs=1e-6)

    frames = emt_copper(8, 50)
    for atoms in frames:
        atoms.info["energy_per_atom"] = atoms.get_potential_energy() / len(atoms)
    ase.io.write(tmp_path / "cu_frames.extxyz", frames)
    with pytest.raises(ValueError, match="potential modules compose with --potential"):
        compose(hub, tmp_path / "cu_frames.extxyz", "energy_per_atom", tmp_path / "property", device="cpu",
                progress=False)
    out = tmp_path / "composed"
    recipe = compose_potential(hub, tmp_path / "cu_frames.extxyz", out, strategy="all_average", merge="sum",
                               refit_references=False, device="cpu")  # the sum: the average of the two models
    assert recipe["kind"] == "full" and [m["weight"] for m in recipe["modules"]] == [0.5, 0.5]
    merged = load_file(str(out / "merged.safetensors"))
    first, second = load_file(str(tuned / MODEL)), load_file(str(other / MODEL))
    for name in merged:
        if merged[name].is_floating_point():
            expected = (first[name].double() + second[name].double()) / 2
            torch.testing.assert_close(merged[name].double(), expected, rtol=0, atol=1e-6)


def test_an_interrupted_finetune_resumes_and_ends_with_the_same_files(tmp_path, monkeypatch):
    import ase_moma.training.engine as engine

    train, valid = _write_sets(tmp_path, 3)
    arguments = ["finetune", "--backbone", "sevennet", "--train", str(train), "--valid", str(valid),
                 "--method", "sparse", "--epochs", "3", "--batch-size", "4", "--device", "cpu"]
    assert main(arguments + ["-o", str(tmp_path / "whole")]) == 0
    save, saved = engine.save_checkpoint, []

    def interrupted(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(args[1]["epoch"])
        if len(saved) == 1:
            raise KeyboardInterrupt  # as if the run were stopped right after epoch 1's checkpoint

    monkeypatch.setattr(engine, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(arguments + ["-o", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".work" / "resumed").is_dir()
    assert main(arguments + ["-o", str(tmp_path / "resumed")]) == 0
    assert saved == [1, 2, 3]  # the second call went on from epoch 1 instead of starting again
    assert not (tmp_path / ".work" / "resumed").exists()
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert sorted(p.relative_to(whole) for p in whole.rglob("*")) == \
        sorted(p.relative_to(resumed) for p in resumed.rglob("*"))
    a, b = load_file(str(whole / MODEL)), load_file(str(resumed / MODEL))
    assert a.keys() == b.keys()
    # Equal to float32 round-off (multithreaded BLAS may reorder sums between any two runs), except that
    # round-off may tip an entry lying exactly at the sparsity threshold to the other side.
    close = [torch.isclose(a[key], b[key], rtol=1e-5, atol=1e-6).reshape(-1) for key in a]
    assert float(torch.cat(close).float().mean()) > 1 - 1e-4
    delta_a, delta_b = (read_delta(load_file(str(out / MODULE / DELTA))) for out in (whole, resumed))
    assert delta_a.keys() == delta_b.keys()
    assert sum(len(i) for i, _ in delta_a.values()) == pytest.approx(sum(len(i) for i, _ in delta_b.values()),
                                                                      abs=8)
