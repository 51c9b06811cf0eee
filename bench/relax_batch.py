"""Batched relaxation against relaxing one structure at a time through ASE, in the same run.

Relaxes ``--count`` small strained, rattled crystals (positions and cell, FIRE,
fmax 0.05 eV/Å, at most ``--steps`` steps) three ways with SevenNet-0:
- ase-moma's ``relax_many``: every structure advances together, one batched model call per step;
- ASE one structure at a time with ase-moma's calculator;
- ASE one structure at a time with SevenNet's own ``SevenNetCalculator``.
Prints structures/s of each and the ratios of the batched run over the two loops,
and checks that the batched run reached the same energies as the loop (float64).

    python bench/relax_batch.py [--count 200] [--steps 100] [--device cpu|cuda] [--dtype float64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from ase_moma import load_backbone
from ase_moma.calculators import MomaCalculator
from ase_moma.simulate import relax_many

from calculator import native_calculator, small_structures


def loop(structures, make_calculator, fmax: float, steps: int) -> tuple[float, list[float]]:
    """Seconds to relax each structure in turn with ASE, and the final energies."""
    start, energies = time.perf_counter(), []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = make_calculator()
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=steps)
        energies.append(atoms.get_potential_energy())
    return time.perf_counter() - start, energies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args()
    structures = small_structures(args.count)
    backbone = load_backbone("sevennet", device=args.device, dtype=args.dtype)

    start = time.perf_counter()
    relaxed = relax_many(structures, backbone, fmax=args.fmax, steps=args.steps, cell=True)
    batched = time.perf_counter() - start
    ours, ours_energies = loop(structures, lambda: MomaCalculator(backbone), args.fmax, args.steps)
    native_calc = native_calculator("sevennet", args.device)
    native, _ = loop(structures, lambda: native_calc, args.fmax, args.steps)

    steps = [atoms.info["relax_steps"] for atoms in relaxed]
    converged = sum(atoms.info["relax_converged"] for atoms in relaxed)
    gap = np.abs(np.array([a.get_potential_energy() for a in relaxed]) - np.array(ours_energies)).max()
    print(f"{args.count} structures, {args.device} {args.dtype}, FIRE + Fréchet cell filter, fmax {args.fmax} eV/Å, "
          f"≤ {args.steps} steps: {converged} converged, steps median {int(np.median(steps))}, max {max(steps)}")
    print("| run | seconds | structures/s | batched speed-up |")
    print("|---|---|---|---|")
    for label, seconds in (("batched relax_many", batched), ("ASE loop, ase-moma calculator", ours),
                           ("ASE loop, SevenNet's own calculator", native)):
        print(f"| {label} | {seconds:.1f} | {args.count / seconds:.2f} | {seconds / batched:.2f}× |")
    print(f"largest final-energy difference batched vs loop (same calculator): {gap:.2e} eV")


if __name__ == "__main__":
    main()
