"""The calculator works unchanged in ASE optimisers, cell filters and MD integrators."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.constraints import FixCom
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import FIRE
from md_checks import NVE_BOUND, nve_spread


def test_fire_with_frechet_cell_filter_relaxes(calculator, silicon):
    silicon.calc = calculator("sevennet", "float32")
    start = np.abs(silicon.get_stress()).max()
    optimizer = FIRE(FrechetCellFilter(silicon), logfile=None)
    assert optimizer.run(fmax=0.02, steps=300)
    assert np.abs(silicon.get_forces()).max() < 0.02
    assert np.abs(silicon.get_stress()).max() < min(start, 2e-3)


def test_nve_conserves_energy_in_a_crystal(calculator, silicon):
    silicon.calc = calculator("sevennet", "float32")
    assert nve_spread(silicon, steps=50, temperature=600) < NVE_BOUND


def test_nve_conserves_energy_in_a_molecule(calculator, methane):
    methane.calc = calculator("sevennet", "float64")
    # the C-H stretch (~90 THz) is ~6x faster than any Si mode: a 0.25 fs step keeps omega*dt
    assert nve_spread(methane, steps=60, temperature=300, timestep_fs=0.25, seed=1) < NVE_BOUND


@pytest.mark.parametrize("name", ["sevennet", "chgnet"])
def test_langevin_runs_and_stays_finite(calculator, silicon, name):
    silicon.calc = calculator(name, "float32")
    thermalize_momenta(silicon, 300, rng=np.random.default_rng(2))
    silicon.set_constraint(FixCom())
    dynamics = Langevin(silicon, 1.0 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
                        rng=np.random.default_rng(3))
    dynamics.run(15)
    assert np.isfinite(silicon.get_potential_energy())
    assert np.all(np.isfinite(silicon.get_forces()))
    assert 0 < silicon.get_temperature() < 3000
