"""Files written by earlier releases load and predict what they predicted then.

Each ``tests/fixtures/release-<version>/`` holds what that release wrote (a fine-tuned potential with a spin
head, a hub module with a fusion head and a hub index holding it, a composed model with fusion; made by
``tests/fixtures/make_release_fixtures.py``) and ``expected.json``, its predictions then. They are read with
the code of today: an older format is migrated in memory when it is read (the files are not rewritten), and
the numbers must agree to float32's last digits.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

from ase_moma import load_calculator

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATA = Path(__file__).resolve().parents[1] / "data"
RELEASES = sorted(FIXTURES.glob("release-*"))


def frames(description: str) -> list:
    """The structures ``expected.json`` names, as ``data/<file>[<slice>]``."""
    path, index = description.split("[")
    return ase.io.read(DATA.parent / path, index.rstrip("]"))


@pytest.mark.parametrize("release", RELEASES, ids=[p.name for p in RELEASES])
def test_a_tuned_potential_with_a_spin_head_predicts_what_it_did(release):
    expected = json.loads((release / "expected.json").read_text())["tuned_spin"]
    calc = load_calculator(str(release / "tuned_spin"), device="cpu")
    for atoms, then in zip(frames(expected["frames"]), expected["predictions"], strict=True):
        atoms.calc = calc
        np.testing.assert_allclose(atoms.get_potential_energy(), then["energy"], rtol=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), then["forces"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(atoms.get_stress(), then["stress"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(atoms.get_magnetic_moments(), then["magmoms"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["fused_module", "composed"])
@pytest.mark.parametrize("release", RELEASES, ids=[p.name for p in RELEASES])
def test_a_property_model_with_fusion_predicts_what_it_did(release, name):
    expected = json.loads((release / "expected.json").read_text())[name]
    model = load_calculator(str(release / name), device="cpu").model
    np.testing.assert_allclose(model.predict(frames(expected["frames"])), expected["predictions"], rtol=1e-5,
                               atol=1e-6)


def file_digests(folder: Path) -> dict[str, str]:
    from ase_moma.module_files import sha256_file

    return {str(path.relative_to(folder)): sha256_file(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def test_reading_migrates_the_records_in_memory_and_leaves_the_files_as_they_are():
    from ase_moma.finetune.tuned_folder import FINETUNE_FORMAT, read_tuned
    from ase_moma.module_files import check_module_folder
    from ase_moma.module_format import MODULE_FORMAT

    release = FIXTURES / "release-0.1.0"
    before = file_digests(release)
    tuned = read_tuned(release / "tuned_spin")
    assert (tuned["schema"], tuned["migrated_from"]) == (FINETUNE_FORMAT.tag, "ase-moma/finetune-1")
    assert FINETUNE_FORMAT.version == 2 and set(tuned["spin_head"]["config"]) >= {"longitudinal", "local_order"}
    module = check_module_folder(release / "fused_module")
    assert (module["schema"], module["migrated_from"]) == (MODULE_FORMAT.tag, "ase-moma.module/1")
    assert len(module["fusion"]["members"]) == 3
    assert file_digests(release) == before


def test_a_spin_head_recorded_before_its_settings_reads_with_the_settings_it_had():
    from ase_moma.finetune.tuned_folder import FINETUNE_FORMAT
    from ase_moma.spin.files import LEGACY_HEAD

    old = {"schema": "ase-moma/finetune-1", "spin_head": {"config": {"mode": "collinear", "exchange": True}}}
    config = FINETUNE_FORMAT.read(old, "finetune.json")["spin_head"]["config"]
    assert config == {**LEGACY_HEAD, "mode": "collinear", "exchange": True} and config["longitudinal"] is False
    without_head = {"schema": "ase-moma/finetune-1", "spin_head": None}
    assert FINETUNE_FORMAT.read(without_head, "finetune.json")["spin_head"] is None
    assert old["spin_head"]["config"] == {"mode": "collinear", "exchange": True}  # the input is left alone


@pytest.mark.parametrize("name, record, what", [
    ("hub.json", "hub.json", "hub index"),
    ("finetune.json", "tuned_spin/finetune.json", "fine-tuning record"),
    ("module.json", "fused_module/module.json", "module metadata"),
    ("recipe.json", "composed/recipe.json", "composition recipe")])
def test_a_file_from_a_newer_release_is_refused_naming_both_versions(tmp_path, name, record, what):
    import shutil

    from ase_moma.errors import HubIntegrityError

    from ase_moma.hub import Hub

    release = FIXTURES / "release-0.1.0"
    folder = tmp_path / "newer"
    if name == "hub.json":
        older_hub(folder)
    else:
        shutil.copytree((release / record).parent, folder)
    content = json.loads((folder / name).read_text())
    content["schema"] = {"hub.json": "ase-moma.hub/9", "finetune.json": "ase-moma/finetune-9",
                         "module.json": "ase-moma.module/9", "recipe.json": "ase-moma.composition/9"}[name]
    (folder / name).write_text(json.dumps(content))
    with pytest.raises(HubIntegrityError, match=rf"{what} of version 9, written by a newer ase-moma; this one "
                                                r"reads versions up to \d"):
        Hub(folder) if name == "hub.json" else load_calculator(str(folder), device="cpu")


def test_a_hub_takes_an_older_module_as_it_was_written_and_serves_it(tmp_path, sevennet):
    from ase_moma.hub import Hub

    release = FIXTURES / "release-0.1.0"
    hub = Hub.create(tmp_path / "hub", sevennet)
    hub.add(release / "fused_module", name="older")
    assert "schema" not in json.loads((hub.folder("older") / "module.json").read_text())
    expected = json.loads((release / "expected.json").read_text())["fused_module"]
    model = hub.load_module("older", device="cpu")
    np.testing.assert_allclose(model.predict(frames(expected["frames"])), expected["predictions"], rtol=1e-5,
                               atol=1e-6)


def older_hub(path: Path) -> Path:
    """A hub as release 0.1.0 left it: its index and the module it lists."""
    import shutil

    release = FIXTURES / "release-0.1.0"
    (path / "modules").mkdir(parents=True)
    shutil.copy(release / "hub.json", path / "hub.json")
    shutil.copytree(release / "fused_module", path / "modules" / "fused_module")
    return path


def test_an_older_hub_serves_its_modules_as_it_is_and_takes_new_ones_in_todays_index(tmp_path):
    from ase_moma.hub import Hub
    from ase_moma.hub.store import HUB_FORMAT

    release = FIXTURES / "release-0.1.0"
    path = older_hub(tmp_path / "hub")
    hub = Hub(path)
    assert (hub.meta["schema"], hub.meta["migrated_from"]) == (HUB_FORMAT.tag, "ase-moma.hub/1")
    assert "schema_version" not in hub.meta and hub.names() == ["fused_module"]
    assert hub.verify() == {"fused_module": None}
    expected = json.loads((release / "expected.json").read_text())["fused_module"]
    np.testing.assert_allclose(hub.load_module("fused_module", device="cpu").predict(frames(expected["frames"])),
                               expected["predictions"], rtol=1e-5, atol=1e-6)
    assert (path / "hub.json").read_bytes() == (release / "hub.json").read_bytes()  # reading rewrote nothing

    hub.add(release / "fused_module", name="again")
    index = json.loads((path / "hub.json").read_text())
    assert index["schema"] == HUB_FORMAT.tag and "schema_version" not in index and "migrated_from" not in index
    assert Hub(path).names() == ["fused_module", "again"]
