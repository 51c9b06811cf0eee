"""Calculator benchmark: ase-moma against each backbone's native ASE calculator, same run.

Prints, per backbone (SevenNet-0, CHGNet 0.3.0):
- per-call time on a 64-atom cell, ours / native (target <= 1.05);
- structures/s of batched ``predict`` over a loop of native calls on 100 structures of
  <= 16 atoms (target >= 3x on CPU, >= 10x on CUDA);
- on CUDA only: MD steps/s on a ~1,000-atom cell, ours / native.
Times are medians of interleaved repeats, so drift in machine load hits both sides alike.

    python bench/calculator.py [--device cpu|cuda] [--repeats N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from statistics import median

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

import ase_moma
from ase_moma import load_calculator


def native_calculator(name: str, device: str):
    if name == "sevennet":
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator("7net-0", device=device)
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(use_device=device)


def cell_64(name: str) -> Atoms:
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(2) if name == "sevennet" else \
        bulk("NaCl", "rocksalt", 5.64, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    return atoms


def small_structures(count: int = 100) -> list[Atoms]:
    """Varied crystals of 1-16 atoms: strained, rattled prototypes."""
    rng = np.random.default_rng(0)
    prototypes = [bulk("Si", "diamond", 5.43), bulk("Cu", "fcc", 3.61), bulk("Fe", "bcc", 2.87),
                  bulk("NaCl", "rocksalt", 5.64), bulk("GaAs", "zincblende", 5.65),
                  bulk("MgO", "rocksalt", 4.21, cubic=True), bulk("Si", "diamond", 5.43, cubic=True),
                  bulk("Al", "fcc", 4.05, cubic=True).repeat((2, 1, 1))]
    structures = []
    for i in range(count):
        atoms = prototypes[i % len(prototypes)].copy()
        atoms.set_cell(atoms.cell * (1 + 0.03 * rng.standard_normal()), scale_atoms=True)
        atoms.rattle(0.04, seed=i)
        structures.append(atoms)
    return structures


def per_call(ours, native, atoms: Atoms, repeats: int) -> tuple[float, float]:
    times: dict[int, list[float]] = {0: [], 1: []}
    properties = ["energy", "forces", "stress"]
    for rep in range(repeats + 2):
        for side, calc in enumerate((ours, native)):
            atoms.positions[0, 0] += 1e-4  # a new geometry each call, as in MD
            start = time.perf_counter()
            calc.calculate(atoms, properties, ["positions"])
            if rep >= 2:  # the first calls warm caches and allocators
                times[side].append(time.perf_counter() - start)
    return median(times[0]), median(times[1])


def throughput(ours, native, structures: list[Atoms], batch_size: int, repeats: int) -> tuple[float, float]:
    ours_t, native_t = [], []
    ours.predict(structures[:batch_size], batch_size=batch_size, progress=False)
    for _ in range(repeats):
        start = time.perf_counter()
        ours.predict(structures, batch_size=batch_size, progress=False)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        for atoms in structures:
            native.calculate(atoms.copy(), ["energy", "forces", "stress"], ["positions"])
        native_t.append(time.perf_counter() - start)
    return len(structures) / median(ours_t), len(structures) / median(native_t)


def md_rate(calc, atoms: Atoms, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    dynamics = VelocityVerlet(atoms, 1.0 * units.fs)
    dynamics.run(2)
    start = time.perf_counter()
    dynamics.run(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    print(f"ase-moma {ase_moma.__version__}, torch {torch.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    report = {}
    structures = small_structures()
    for name in ["sevennet", "chgnet"]:
        ours = load_calculator(name, device=args.device)
        native = native_calculator(name, args.device)
        t_ours, t_native = per_call(ours, native, cell_64(name), args.repeats)
        s_ours, s_native = throughput(ours, native, structures, args.batch_size, max(3, args.repeats // 2))
        row = {"per_call_ms": [1e3 * t_ours, 1e3 * t_native], "per_call_ratio": t_ours / t_native,
               "structures_per_s": [s_ours, s_native], "batch_speedup": s_ours / s_native}
        print(f"{name:9s} per call (64 atoms): ours {1e3 * t_ours:8.1f} ms  native {1e3 * t_native:8.1f} ms"
              f"  ratio {t_ours / t_native:.3f} (target <= 1.05)")
        target = 10 if args.device == "cuda" else 3
        print(f"{name:9s} predict (100 x <=16 atoms): ours {s_ours:7.1f} /s  native loop {s_native:7.1f} /s"
              f"  speed-up {s_ours / s_native:.2f}x (target >= {target}x)")
        if args.device == "cuda":
            big = bulk("Si", "diamond", 5.43, cubic=True).repeat(5) if name == "sevennet" else \
                bulk("NaCl", "rocksalt", 5.64, cubic=True).repeat(5)
            r_ours, r_native = md_rate(ours, big, 20), md_rate(native, big, 20)
            row["md_steps_per_s"] = [r_ours, r_native]
            print(f"{name:9s} MD ({len(big)} atoms): ours {r_ours:.2f} steps/s  native {r_native:.2f} steps/s"
                  f"  ratio {r_ours / r_native:.2f}")
        report[name] = row
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
