"""Molecular dynamics of many structures together: ASE's integrators, one batched model call per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

from ase_moma.backbone import Backbone
from ase_moma.simulate.evaluator import BatchEvaluator, BatchedCalculator, run_together, threads_for
from ase_moma.structures import as_atoms

ENSEMBLES = ("nve", "langevin")


def run_md_many(structures: Iterable[Any], backbone: Backbone, *, steps: int, ensemble: str = "nve",
                timestep_fs: float = 1.0, temperature_K: float | None = None, friction_per_fs: float = 0.01,
                seed: int = 0, trajectory_dir: str | Path | None = None, interval: int = 1,
                batch_size: int | None = None, in_flight: int | None = None, progress: bool = False) -> list[Atoms]:
    """Run ``steps`` of MD for every structure, all advancing together.

    ensemble: ``"nve"`` (ASE's ``VelocityVerlet``) or ``"langevin"`` (ASE's
    ``Langevin`` at ``temperature_K`` with friction ``friction_per_fs`` in 1/fs;
    system ``i`` draws its noise from ``numpy.random.default_rng([seed, i])``; its
    centre of mass is held by ASE's ``FixCom`` constraint while it runs, as ASE
    advises in place of Langevin's deprecated ``fixcm``).
    Initial velocities are the structures' own momenta (set them, e.g. with
    ``MaxwellBoltzmannDistribution``, before calling). trajectory_dir: write
    ``{index}.traj`` per structure every ``interval`` steps, as ASE's dynamics
    writes it. in_flight: systems advanced together (default 64), the next
    starting as one ends. progress: a progress bar on stderr, one tick per finished system.
    Each system's trajectory is its own ASE run's, to round-off.

    Returns the final Atoms (positions, momenta, single-point results) in input order.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {', '.join(ENSEMBLES)}")
    if ensemble == "langevin" and temperature_K is None:
        raise ValueError("Langevin dynamics needs temperature_K")
    if steps < 0 or not timestep_fs > 0:
        raise ValueError(f"steps must be non-negative and the timestep positive, got {steps}, {timestep_fs}")
    systems = [as_atoms(s).copy() for s in structures]
    for atoms in systems:
        backbone.graph(atoms)  # every structure checked before any work starts
    if trajectory_dir is not None:
        Path(trajectory_dir).mkdir(parents=True, exist_ok=True)
    evaluator = BatchEvaluator(backbone, threads_for(len(systems), in_flight), batch_size)

    def loop(index: int) -> Any:
        def run() -> None:
            atoms = systems[index]
            atoms.calc = BatchedCalculator(evaluator, index)
            trajectory = None if trajectory_dir is None else str(Path(trajectory_dir) / f"{index}.traj")
            constraints = atoms.constraints
            if ensemble == "nve":
                dynamics = VelocityVerlet(atoms, timestep_fs * units.fs, trajectory=trajectory, loginterval=interval)
            else:
                atoms.set_constraint(constraints + [FixCom()])
                dynamics = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                                    friction=friction_per_fs / units.fs, fixcm=False,
                                    rng=np.random.default_rng([seed, index]), trajectory=trajectory,
                                    loginterval=interval)
            dynamics.run(steps)
            atoms.set_constraint(constraints)
        return run

    with tqdm(total=len(systems), desc="md", unit="structure", disable=not progress) as bar:
        run_together(evaluator, [loop(i) for i in range(len(systems))], in_flight, on_done=bar.update)
    for atoms in systems:
        atoms.calc = SinglePointCalculator(atoms, **dict(atoms.calc.results))
    return systems
