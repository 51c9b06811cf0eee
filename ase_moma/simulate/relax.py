"""Relaxing many structures together: ASE's optimisers, one batched model call per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS
from tqdm.auto import tqdm

from ase_moma.backbone import Backbone
from ase_moma.simulate.evaluator import BatchEvaluator, BatchedCalculator, run_together, threads_for
from ase_moma.structures import as_atoms, has_volume

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}


def relax_many(structures: Iterable[Any], backbone: Backbone, *, fmax: float = 0.05, steps: int = 500,
               cell: bool = False, optimizer: str = "FIRE", trajectory_dir: str | Path | None = None,
               batch_size: int | None = None, in_flight: int | None = None, progress: bool = False,
               **optimizer_options: Any) -> list[Atoms]:
    """Relax every structure with ASE's ``optimizer``, all advancing together.

    structures: ``ase.Atoms`` or pymatgen structures (copied; the inputs are not
    changed). fmax (eV/Å), steps: as ``Optimizer.run``. cell: relax the cell
    too, through ASE's ``FrechetCellFilter`` (3-D periodic structures only).
    trajectory_dir: write ``{index}.traj`` per structure there, as ASE's
    optimiser writes it. batch_size: structures per model call (None: all
    running systems at once). in_flight: systems relaxed together (default
    IN_FLIGHT, 64); a finished one is replaced by the next at once, so memory
    does not grow with the number of structures. progress: a progress bar on stderr, one tick per
    structure that has finished (converged or out of steps), with the rate
    and the time left. optimizer_options: passed to the optimiser
    (e.g. ``maxstep``). Each system's path is its own ASE run's, to round-off.

    Returns the relaxed Atoms in input order, each with its final results as a
    single-point calculator and ``info["relax_converged"]``, ``info["relax_steps"]``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not fmax > 0 or steps < 0:
        raise ValueError(f"fmax must be positive and steps non-negative, got fmax={fmax}, steps={steps}")
    systems = [as_atoms(s).copy() for s in structures]
    if cell:
        flat = [i for i, atoms in enumerate(systems) if not (atoms.pbc.all() and has_volume(atoms))]
        if flat:
            raise ValueError(f"cell relaxation needs 3-D periodic cells; structures {flat[:5]} are not")
    for index, atoms in enumerate(systems):
        backbone.graph(atoms)  # every structure checked before any work starts
    if trajectory_dir is not None:
        Path(trajectory_dir).mkdir(parents=True, exist_ok=True)
    evaluator = BatchEvaluator(backbone, threads_for(len(systems), in_flight), batch_size)
    outcome: dict[int, tuple[bool, int]] = {}
    bar = tqdm(total=len(systems), desc="relax", unit="structure", disable=not progress)

    def loop(index: int) -> Any:
        def run() -> None:
            atoms = systems[index]
            atoms.calc = BatchedCalculator(evaluator, index)
            target = FrechetCellFilter(atoms) if cell else atoms
            trajectory = None if trajectory_dir is None else str(Path(trajectory_dir) / f"{index}.traj")
            opt = OPTIMIZERS[optimizer](target, logfile=None, trajectory=trajectory, **optimizer_options)
            converged = opt.run(fmax=fmax, steps=steps)
            outcome[index] = (bool(converged), opt.nsteps)
        return run

    with bar:
        run_together(evaluator, [loop(i) for i in range(len(systems))], in_flight, on_done=bar.update)
    for index, atoms in enumerate(systems):
        results = dict(atoms.calc.results)
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["relax_converged"], atoms.info["relax_steps"] = outcome[index]
    return systems
