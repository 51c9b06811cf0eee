"""Batched relaxation and MD: every system's path equals its own ASE run, with one model call per step."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.constraints import FixCom
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

from ase_moma.calculators import MomaCalculator
from ase_moma.cli import main
from ase_moma.simulate import relax_many, run_md_many


def _cells():
    """Three small strained, rattled periodic cells of different sizes."""
    silicon = bulk("Si", "diamond", 5.5, cubic=True)
    silicon.rattle(0.08, seed=1)
    sic = bulk("SiC", "zincblende", 4.25)
    sic.set_cell(sic.cell.array @ np.array([[1.02, 0.03, 0], [0, 0.99, 0], [0, 0, 1.01]]), scale_atoms=True)
    sic.rattle(0.05, seed=2)
    carbon = bulk("C", "diamond", 3.6).repeat((2, 1, 1))
    carbon.rattle(0.06, seed=3)
    return [silicon, sic, carbon]


@pytest.mark.parametrize("cell", [False, True])
def test_batched_relaxation_follows_each_systems_own_ase_run(calculator, cell):
    backbone = calculator("sevennet", "float64").backbone
    relaxed = relax_many(_cells(), backbone, fmax=0.05, steps=12, cell=cell)
    for atoms, start in zip(relaxed, _cells()):
        own = start.copy()
        own.calc = MomaCalculator(backbone)
        opt = FIRE(FrechetCellFilter(own) if cell else own, logfile=None)
        converged = opt.run(fmax=0.05, steps=12)
        assert atoms.info["relax_steps"] == opt.nsteps > 3 and atoms.info["relax_converged"] == converged
        np.testing.assert_allclose(atoms.positions, own.positions, atol=1e-8)
        np.testing.assert_allclose(atoms.cell.array, own.cell.array, atol=1e-8)
        assert atoms.get_potential_energy() == pytest.approx(own.get_potential_energy(), abs=1e-8)


@pytest.mark.parametrize("ensemble", ["nve", "langevin"])
def test_batched_md_follows_each_systems_own_ase_run(calculator, ensemble, tmp_path):
    backbone = calculator("sevennet", "float64").backbone
    starts = _cells()
    for index, atoms in enumerate(starts):
        thermalize_momenta(atoms, 600, rng=np.random.default_rng(index))
    finals = run_md_many(starts, backbone, steps=6, ensemble=ensemble, temperature_K=600, seed=5,
                         trajectory_dir=tmp_path)
    for index, (atoms, start) in enumerate(zip(finals, starts)):
        own = start.copy()
        own.calc = MomaCalculator(backbone)
        if ensemble == "nve":
            dynamics = VelocityVerlet(own, units.fs)
        else:
            own.set_constraint(FixCom())
            dynamics = Langevin(own, units.fs, temperature_K=600, friction=0.01 / units.fs, fixcm=False,
                                rng=np.random.default_rng([5, index]))
        dynamics.run(6)
        np.testing.assert_allclose(atoms.positions, own.positions, atol=1e-8)
        np.testing.assert_allclose(atoms.get_momenta(), own.get_momenta(), atol=1e-8)
        assert atoms.constraints == []  # the run's FixCom is not left on the result
        assert len(ase.io.read(tmp_path / f"{index}.traj", ":")) == 7  # written as ASE's dynamics writes it


def _recorded_call_sizes(monkeypatch) -> list[int]:
    """The number of structures in each batched model call the evaluator makes, appended as they happen."""
    import ase_moma.simulate.evaluator as evaluator

    sizes: list[int] = []
    original = evaluator.predict
    monkeypatch.setattr(evaluator, "predict", lambda backbone, frames, **kw: sizes.append(len(frames))
                        or original(backbone, frames, **kw))
    return sizes


def test_one_batched_call_per_step(calculator, monkeypatch):
    sizes = _recorded_call_sizes(monkeypatch)
    backbone = calculator("sevennet", "float64").backbone
    relaxed = relax_many(_cells(), backbone, fmax=0.1, steps=200)
    assert all(a.info["relax_converged"] for a in relaxed)
    assert len({a.info["relax_steps"] for a in relaxed}) > 1  # they converged at different steps
    longest = max(a.info["relax_steps"] for a in relaxed)
    assert len(sizes) == longest + 1 and sizes[0] == 3  # the initial state, then one call per step
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1  # converged systems dropped out


def test_relax_command_writes_the_relaxed_file(tmp_path):
    ase.io.write(tmp_path / "in.extxyz", _cells())
    assert main(["relax", str(tmp_path / "in.extxyz"), "-o", str(tmp_path / "out.extxyz"), "--backbone",
                 "sevennet", "--fmax", "0.05", "--steps", "15", "--cell", "--device", "cpu"]) == 0
    relaxed = ase.io.read(tmp_path / "out.extxyz", ":")
    assert len(relaxed) == 3 and all(np.abs(a.get_forces()).max() < 0.5 for a in relaxed)
    assert "relax_converged" in relaxed[0].info
    assert main(["relax", str(tmp_path / "in.extxyz"), "-o", str(tmp_path / "out.extxyz"), "--backbone",
                 "sevennet", "--device", "cpu"]) == 1  # no overwrite without --overwrite
    bad = _cells()[:1]
    bad[0].positions[0, 0] = np.nan
    ase.io.write(tmp_path / "bad.extxyz", bad)
    assert main(["relax", str(tmp_path / "bad.extxyz"), "-o", str(tmp_path / "bad_out.extxyz"),
                 "--backbone", "sevennet", "--device", "cpu"]) == 1
    assert not (tmp_path / "bad_out.extxyz").exists()


def test_a_bounded_number_of_systems_in_flight_each_on_its_own_path(calculator, monkeypatch):
    sizes = _recorded_call_sizes(monkeypatch)
    backbone = calculator("sevennet", "float64").backbone
    starts = _cells() * 3
    relaxed = relax_many(starts, backbone, fmax=0.05, steps=12, in_flight=2)
    assert max(sizes) == 2 and sum(sizes) == sum(a.info["relax_steps"] + 1 for a in relaxed)
    for atoms, start in zip(relaxed[::4], starts[::4]):
        own = start.copy()
        own.calc = MomaCalculator(backbone)
        FIRE(own, logfile=None).run(fmax=0.05, steps=12)
        np.testing.assert_allclose(atoms.positions, own.positions, atol=1e-8)


@pytest.mark.parametrize("failure", [RuntimeError("the model broke"), KeyboardInterrupt()])
def test_a_failure_or_ctrl_c_stops_every_system_and_leaves_nothing_running(calculator, monkeypatch, failure):
    import threading

    import ase_moma.simulate.evaluator as evaluator

    calls = []
    original = evaluator.predict

    def breaks_on_the_third_call(backbone, frames, **kw):
        calls.append(len(frames))
        if len(calls) == 3:
            raise failure
        return original(backbone, frames, **kw)

    monkeypatch.setattr(evaluator, "predict", breaks_on_the_third_call)
    backbone = calculator("sevennet", "float64").backbone
    before = threading.active_count()
    with pytest.raises(type(failure)):
        relax_many(_cells() * 2, backbone, fmax=1e-4, steps=50, in_flight=3)
    assert threading.active_count() == before and len(calls) == 3
