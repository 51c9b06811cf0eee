"""Files written by earlier releases load and predict what they predicted then.

Each ``tests/fixtures/release-<version>/`` holds what that release wrote (a fine-tuned potential with a spin
head, a hub module with a fusion head, a composed model with fusion; made by
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
