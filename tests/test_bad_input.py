"""Bad input fails early with an error that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from ase_moma import load_backbone, load_calculator
from ase_moma.checkpoints import UnsafeCheckpointError
from ase_moma.compose import read_recipe
from ase_moma.finetune.tuned_folder import read_tuned
from ase_moma.module_files import HubIntegrityError


def test_uncovered_element_names_it_and_the_covered_set(calculator):
    atoms = Atoms("SiU", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[5, 5, 5], pbc=True)
    atoms.calc = calculator("mace", "float64")  # covers H, C, O, Si only
    with pytest.raises(ValueError, match=r"does not cover element\(s\) U; it covers: H C O Si"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(calculator, bad):
    atoms = bulk("Si", "diamond", 5.43)
    atoms.positions[1, 2] = bad
    atoms.calc = calculator("sevennet", "float32")
    with pytest.raises(ValueError, match=r"non-finite .* positions for atoms \[1\]"):
        atoms.get_potential_energy()


def test_zero_atoms(calculator):
    with pytest.raises(ValueError, match="zero atoms"):
        calculator("sevennet", "float32").predict([Atoms(cell=[3, 3, 3], pbc=True)])


def test_singular_cell_with_pbc(calculator):
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.3, 1.3, 1.3]], cell=[[3, 0, 0], [3, 0, 0], [0, 0, 3]],
                  pbc=True)
    atoms.calc = calculator("sevennet", "float32")
    with pytest.raises(ValueError, match="cell is singular along periodic directions"):
        atoms.get_potential_energy()


def test_batch_error_names_the_structure(calculator):
    good = bulk("Si", "diamond", 5.43)
    with pytest.raises(ValueError, match="structure 1: the structure has zero atoms"):
        calculator("sevennet", "float32").predict([good, Atoms()])


def test_stress_of_a_molecule_is_not_implemented(calculator, methane):
    from ase.calculators.calculator import PropertyNotImplementedError

    methane.calc = calculator("sevennet", "float32")
    with pytest.raises(PropertyNotImplementedError, match="three-dimensional cell"):
        methane.get_stress()


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'nequix'.*chgnet.*sevennet"):
        load_calculator("nequix")


@pytest.mark.parametrize("name", ["sevennet", "chgnet", "orb"])
def test_missing_checkpoint_file(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_backbone(name, str(tmp_path / "nope.pth"), device="cpu")


def test_mace_and_matgl_missing_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="MACE model not found"):
        load_backbone("mace", str(tmp_path / "nope.model"), device="cpu")
    with pytest.raises(FileNotFoundError, match="matgl model.json not found"):
        load_backbone("matgl", str(tmp_path), device="cpu")


def test_checkpoint_of_the_wrong_family(sources, tmp_path):
    import chgnet
    import sevenn._const

    chgnet_file = next((__import__("pathlib").Path(chgnet.__file__).parent / "pretrained/0.3.0").glob("*.tar"))
    with pytest.raises(ValueError, match="is not a SevenNet checkpoint"):
        load_backbone("sevennet", str(chgnet_file), device="cpu")
    with pytest.raises(ValueError, match="is not a CHGNet checkpoint"):
        load_backbone("chgnet", sevenn._const.SEVENNET_0_11Jul2024, device="cpu")
    renamed = tmp_path / "orb-v3-conservative-inf-omat.ckpt"
    renamed.write_bytes(open(chgnet_file, "rb").read())
    with pytest.raises(ValueError, match="is not an Orb checkpoint"):
        load_backbone("orb", str(renamed), device="cpu")
    with pytest.raises(ValueError, match="not an ase-moma MACE model"):
        load_backbone("mace", sources["matgl"] + "/model.json", device="cpu")


def test_pickled_mace_model_needs_explicit_trust(sources):
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle=True"):
        load_backbone("mace", sources["mace_pickle"], device="cpu")


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "config": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="weights-only"):
        load_backbone("sevennet", str(path), device="cpu")
    assert not marker.exists()


def test_matgl_json_naming_foreign_modules_is_refused(sources, tmp_path):
    import json
    import shutil

    copy = tmp_path / "evil_matgl"
    shutil.copytree(sources["matgl"], copy)
    header = json.loads((copy / "model.json").read_text())
    header["@module"] = "os"
    (copy / "model.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="names module 'os' outside matgl"):
        load_backbone("matgl", str(copy), device="cpu")


def test_mace_json_with_unknown_class_or_function_is_refused(sources, tmp_path):
    import json
    import shutil

    for field, value, message in [("interaction_cls", {"@class": "Popen"}, "unknown MACE block class"),
                                  ("gate", {"@function": "load"}, "unknown activation function")]:
        copy = tmp_path / f"evil_mace_{field}"
        shutil.copytree(sources["mace"], copy)
        header = json.loads((copy / "model.json").read_text())
        header["config"][field] = value
        (copy / "model.json").write_text(json.dumps(header))
        with pytest.raises(ValueError, match=message):
            load_backbone("mace", str(copy), device="cpu")


def test_bad_device_and_dtype():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        load_calculator("sevennet", dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            load_calculator("sevennet", device="cuda")
    with pytest.raises(ValueError, match="CHGNet runs in float32 only"):
        load_calculator("chgnet", dtype="float64")


def test_folder_that_is_not_a_composition_or_a_tuned_potential(tmp_path):
    (tmp_path / "recipe.json").write_text('{"schema": "something else"}')
    with pytest.raises(FileNotFoundError, match="is not a fine-tuned potential: it has no finetune.json"):
        read_tuned(tmp_path)
    with pytest.raises(HubIntegrityError, match="is not an ase-moma composition recipe"):
        read_recipe(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a composed model: it has no recipe.json"):
        read_recipe(tmp_path / "missing")
