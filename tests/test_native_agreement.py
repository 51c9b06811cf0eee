"""With nothing attached, our calculator gives the backbone's own calculator's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import real_frames

from ase_moma.process_state import kept_process_state


def _compare(ours, native, atoms, energy_per_atom, force, stress, magmoms=False):
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = ours, native
    n = len(atoms)
    assert abs(a.get_potential_energy() - b.get_potential_energy()) / n <= energy_per_atom
    assert np.abs(a.get_forces() - b.get_forces()).max() <= force
    if atoms.cell.rank == 3:
        assert np.abs(a.get_stress() - b.get_stress()).max() <= stress
    if magmoms:
        assert np.abs(a.get_magnetic_moments() - b.get_magnetic_moments()).max() <= 1e-5


def test_sevennet_float32_matches_sevennet_calculator(calculator, silicon, methane):
    from sevenn.calculator import SevenNetCalculator

    native = SevenNetCalculator("7net-0", device="cpu")
    ours = calculator("sevennet", "float32")
    for atoms in [silicon, methane, *real_frames("mlearn_Si_test.extxyz", 2)]:
        _compare(ours, native, atoms, 1e-5, 1e-4, 1e-5)


def test_chgnet_matches_chgnet_calculator(calculator, silicon):
    from chgnet.model.dynamics import CHGNetCalculator

    native = CHGNetCalculator(use_device="cpu")
    ours = calculator("chgnet")
    for atoms in [silicon, *real_frames("mlearn_Mo_test.extxyz", 2)]:
        _compare(ours, native, atoms, 1e-5, 1e-4, 1e-5, magmoms=True)


def test_mace_float64_matches_mace_calculator(calculator, sources, silicon, methane, monkeypatch):
    from mace.calculators import MACECalculator

    # mace's calculator loads its pickle with a plain torch.load: as mace runs for its own users, with the
    # variable its import sets for the process (ase-moma takes it back after importing mace)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    native = MACECalculator(model_paths=sources["mace_pickle"], device="cpu", default_dtype="float64")
    for atoms in [silicon, methane]:
        _compare(calculator("mace", "float64"), native, atoms, 1e-8, 1e-7, 1e-8)


def test_orb_float64_matches_orb_calculator(calculator, sources, silicon, methane):
    from orb_models.forcefield.calculator import ORBCalculator
    from orb_models.forcefield.pretrained import orb_v3_conservative_inf_omat

    with kept_process_state():  # orb-models' own float64 loader sets torch's default dtype for the process
        model = orb_v3_conservative_inf_omat(weights_path=sources["orb"], device="cpu", precision="float64",
                                             compile=False)
        native = ORBCalculator(model, device="cpu")
        for atoms in [silicon, methane]:
            _compare(calculator("orb", "float64"), native, atoms, 1e-8, 1e-7, 1e-8)


def test_matgl_float64_matches_pes_calculator(calculator, sources, silicon, methane):
    """matgl's own converter rounds coordinates to float32 even for a float64 model
    (ours keeps float64), so the two agree to float32 coordinate rounding only."""
    import matgl
    from matgl.ext.ase import PESCalculator

    native = PESCalculator(matgl.load_model(sources["matgl"]).to(torch.float64), stress_unit="eV/A3")
    for atoms in [silicon, methane]:
        _compare(calculator("matgl", "float64"), native, atoms, 1e-6, 1e-5, 1e-7)


@pytest.mark.parametrize("name", ["sevennet", "mace", "orb", "matgl"])
def test_float32_close_to_float64(calculator, silicon, name):
    """float32 differs from float64 by rounding only: relative to the size of E and F,
    a few float32 ulps amplified through the network (random test weights amplify more)."""
    a, b = silicon.copy(), silicon.copy()
    a.calc, b.calc = calculator(name, "float32"), calculator(name, "float64")
    energy, forces = b.get_potential_energy(), b.get_forces()
    assert abs(a.get_potential_energy() - energy) <= 1e-4 * max(abs(energy), 1.0)
    assert np.abs(a.get_forces() - forces).max() <= 1e-3 * max(np.abs(forces).max(), 1e-2)


def test_loading_orb_leaves_torch_defaults_alone(sources):
    from ase_moma import load_backbone

    before = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    load_backbone("orb", sources["orb"], device="cpu", dtype="float64")
    assert (torch.get_default_dtype(), torch.get_float32_matmul_precision()) == before
