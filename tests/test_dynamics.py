"""The calculator works unchanged in ASE optimisers, cell filters and MD integrators."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

# Velocity Verlet's energy error is about (omega*dt)^2/8 of the kinetic energy. With the
# fastest Si phonon (~15 THz, omega*dt ~ 0.09 at dt = 1 fs) that is ~1e-3 * 0.04 eV/atom
# at 300-600 K, i.e. ~5e-5 eV/atom, which is what SevenNet-0 shows; the bound is 4x that.
NVE_BOUND = 2e-4  # eV/atom, peak-to-peak total energy


def _nve_spread(atoms, steps: int, temperature: float) -> float:
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(0))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    energies = []
    dynamics = VelocityVerlet(atoms, 1.0 * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(steps)
    return float(np.ptp(energies)) / len(atoms)


def test_fire_with_frechet_cell_filter_relaxes(calculator, silicon):
    silicon.calc = calculator("sevennet", "float32")
    start = np.abs(silicon.get_stress()).max()
    optimizer = FIRE(FrechetCellFilter(silicon), logfile=None)
    assert optimizer.run(fmax=0.02, steps=300)
    assert np.abs(silicon.get_forces()).max() < 0.02
    assert np.abs(silicon.get_stress()).max() < min(start, 2e-3)


def test_nve_conserves_energy_in_a_crystal(calculator, silicon):
    silicon.calc = calculator("sevennet", "float32")
    assert _nve_spread(silicon, steps=50, temperature=600) < NVE_BOUND


def test_nve_conserves_energy_in_a_molecule(calculator, methane):
    methane.calc = calculator("sevennet", "float64")
    # the C-H stretch (~90 THz) is ~6x faster than any Si mode: a 0.25 fs step keeps omega*dt
    thermalize_momenta(methane, 300, rng=np.random.default_rng(1))
    Stationary(methane)
    ZeroRotation(methane)
    energies = []
    dynamics = VelocityVerlet(methane, 0.25 * units.fs)
    dynamics.attach(lambda: energies.append(methane.get_total_energy()), interval=1)
    dynamics.run(60)
    assert np.ptp(energies) / len(methane) < NVE_BOUND


@pytest.mark.parametrize("name", ["sevennet", "chgnet"])
def test_langevin_runs_and_stays_finite(calculator, silicon, name):
    silicon.calc = calculator(name, "float32")
    thermalize_momenta(silicon, 300, rng=np.random.default_rng(2))
    dynamics = Langevin(silicon, 1.0 * units.fs, temperature_K=300, friction=0.02,
                        rng=np.random.default_rng(3))
    dynamics.run(15)
    assert np.isfinite(silicon.get_potential_energy())
    assert np.all(np.isfinite(silicon.get_forces()))
    assert 0 < silicon.get_temperature() < 3000
