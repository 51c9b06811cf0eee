"""The main job on the embedded default model (SevenNet-0): relax, run MD, screen a batch.

1. relax a rattled, strained silicon crystal with FIRE on a FrechetCellFilter (positions and cell);
2. run NVE (velocity Verlet) and report the total-energy drift and steps/s;
3. run Langevin MD at 600 K and report the mean temperature;
4. batch-predict a few dozen generated structures and list the lowest energies per atom;
5. copy out the starter hub, compose a model for a matminer task (the 2D TB-mBJ band gap, shipped in
   data/matminer) from the other tasks' modules (MoMa AMC), print the module weights, fine-tune it and
   rank structures with it (examples/compose_and_rank.py);
6. sparse-tune SevenNet-0 on a small generated set (strained, rattled copper labelled by ASE's EMT,
   standing in for DFT), print what moved, and run NVE MD with the tuned model
   (examples/sparse_finetune_md.py).

    python examples/demo.py [--device auto|cpu|cuda] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.constraints import FixCom
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import FIRE

from ase_moma import load_calculator
from ase_moma.finetune.potential_data import label_frames
from ase_moma.hub.starter import write_starter_hub
from compose_and_rank import compose_and_rank
from sparse_finetune_md import adapt, run_md, run_nve


def relax(calc, fmax: float = 0.01) -> Atoms:
    """Relax positions and cell of a rattled, 3 %-strained 8-atom silicon cell."""
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.set_cell(atoms.cell * 1.03, scale_atoms=True)
    atoms.rattle(0.1, seed=1)
    atoms.calc = calc
    start_energy = atoms.get_potential_energy()
    optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
    optimizer.run(fmax=fmax, steps=500)
    a = atoms.cell.lengths()[0]
    print(f"relax  : {optimizer.nsteps} FIRE steps, E {start_energy:.4f} -> "
          f"{atoms.get_potential_energy():.4f} eV, a = {a:.4f} Å, "
          f"max |F| {np.abs(atoms.get_forces()).max():.4f} eV/Å")
    return atoms


def nve(calc, atoms: Atoms, steps: int) -> None:
    """Velocity Verlet at 1 fs from 600 K; prints the drift of the total energy."""
    atoms = atoms.repeat((2, 1, 1))
    rate, per_atom = run_nve(calc, atoms, steps, temperature_K=600)
    print(f"NVE    : {len(atoms)} atoms, {steps} steps at 1 fs, {rate:.1f} steps/s, "
          f"total-energy drift {1e3 * per_atom[-1]:+.4f} meV/atom "
          f"(peak-to-peak {1e3 * np.ptp(per_atom):.4f} meV/atom)")


def langevin(calc, atoms: Atoms, steps: int) -> None:
    """Langevin thermostat at 600 K; prints the mean temperature over the second half."""
    atoms = atoms.repeat((2, 1, 1))
    atoms.calc = calc
    thermalize_momenta(atoms, 600, rng=np.random.default_rng(1))
    atoms.set_constraint(FixCom())  # the centre of mass held, as ASE advises in place of Langevin's fixcm
    dynamics = Langevin(atoms, 2.0 * units.fs, temperature_K=600, friction=0.02 / units.fs, fixcm=False,
                        rng=np.random.default_rng(2))
    temperatures = []
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=1)
    start = time.perf_counter()
    dynamics.run(steps)
    rate = steps / (time.perf_counter() - start)
    print(f"NVT    : Langevin 600 K, {steps} steps at 2 fs, {rate:.1f} steps/s, "
          f"mean T (second half) {np.mean(temperatures[steps // 2:]):.0f} K")


def screen(calc, count: int = 48) -> None:
    """Batch-predict strained and rattled prototypes; list the lowest energies per atom."""
    rng = np.random.default_rng(3)
    prototypes = {"Si diamond": bulk("Si", "diamond", 5.43), "Ge diamond": bulk("Ge", "diamond", 5.66),
                  "GaAs zincblende": bulk("GaAs", "zincblende", 5.65), "Cu fcc": bulk("Cu", "fcc", 3.61),
                  "Fe bcc": bulk("Fe", "bcc", 2.87), "NaCl rocksalt": bulk("NaCl", "rocksalt", 5.64)}
    names, structures = [], []
    for i in range(count):
        name, atoms = list(prototypes.items())[i % len(prototypes)]
        atoms = atoms.copy()
        strain = 0.04 * rng.standard_normal()
        atoms.set_cell(atoms.cell * (1 + strain), scale_atoms=True)
        atoms.rattle(0.03, seed=i)
        names.append(f"{name} {100 * strain:+.1f}%")
        structures.append(atoms)
    start = time.perf_counter()
    results = calc.predict(structures, batch_size=16)
    elapsed = time.perf_counter() - start
    per_atom = np.array([r["energy"] / len(a) for r, a in zip(results, structures)])
    print(f"screen : {count} structures in {elapsed:.2f} s ({count / elapsed:.1f} /s); "
          f"lowest energy per atom:")
    for index in np.argsort(per_atom)[:5]:
        pressure = -np.mean(results[index]["stress"][:3]) / units.GPa
        print(f"         {names[index]:24s} {per_atom[index]:9.4f} eV/atom  P {pressure:7.2f} GPa")


def generated_copper(count: int, seed: int) -> list[Atoms]:
    """``count`` strained, rattled 8-atom copper cells labelled by EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 1, 1))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.015, (3, 3))), scale_atoms=True)
        atoms.rattle(0.06, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    return label_frames(frames, EMT())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=200, help="MD steps for NVE and Langevin")
    args = parser.parse_args()
    calc = load_calculator("sevennet", device=args.device)
    print(f"model  : {calc.backbone.name} (embedded SevenNet-0) on {calc.backbone.device}")
    relaxed = relax(calc)
    nve(calc, relaxed, args.steps)
    langevin(calc, relaxed, args.steps)
    screen(calc)
    with tempfile.TemporaryDirectory(prefix="ase_moma_demo_") as tmp:
        tuned = Path(tmp) / "tuned_cu"
        adapt(generated_copper(24, 0), generated_copper(6, 1), tuned, epochs=2, device=args.device)
        run_md(tuned, generated_copper(1, 2)[0].repeat((1, 2, 2)), args.steps // 4, args.device)
        hub = write_starter_hub(Path(tmp) / "hub")
        compose_and_rank(hub, "jarvis_2d_gap_tbmbj", Path(tmp) / "composed", n_train=60, epochs=3,
                         device=args.device)


if __name__ == "__main__":
    main()
