"""GPU figures for issue 15, each against a peer measured in the same run (needs CUDA).

- per-call time on a 64-atom cell: ase-moma's calculator / SevenNet's own (target ≤ 1.05);
- batched ``predict`` of 1,000 small structures over a loop of native calls (target ≥ 10×);
- MD steps/s (velocity Verlet) at about 1,000 and 10,000 atoms, ours and native;
- batched relaxation (FIRE + Fréchet cell filter) of 1,000 small cells: structures/s,
  against relaxing 50 of them one at a time with the native calculator;
- peak GPU memory of each part (torch.cuda.max_memory_allocated).

    python bench/gpu.py [--dtype float32|float64] [--relax-count 1000]
"""

from __future__ import annotations

import argparse
import time

import torch
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from ase_moma import load_backbone
from ase_moma.calculators import MomaCalculator
from ase_moma.simulate import relax_many

from calculator import cell_64, md_rate, native_calculator, per_call, small_structures, throughput


def peak(fn):
    torch.cuda.reset_peak_memory_stats()
    value = fn()
    return value, torch.cuda.max_memory_allocated() / 2 ** 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--relax-count", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures the GPU path")
    backbone = load_backbone("sevennet", device="cuda", dtype=args.dtype)
    ours, native = MomaCalculator(backbone), native_calculator("sevennet", "cuda")

    (t_ours, t_native), memory = peak(lambda: per_call(ours, native, cell_64("sevennet"), args.repeats))
    print(f"per call, 64 atoms: ours {1e3 * t_ours:.2f} ms, native {1e3 * t_native:.2f} ms, "
          f"ratio {t_ours / t_native:.3f} (target ≤ 1.05); peak {memory:.2f} GiB")
    (rate_ours, rate_native), memory = peak(lambda: throughput(ours, native, small_structures(1000), 128, 3))
    print(f"screening 1,000 structures: batched {rate_ours:.0f}/s, native loop {rate_native:.0f}/s, "
          f"{rate_ours / rate_native:.1f}× (target ≥ 10×); peak {memory:.2f} GiB")
    for repeat in (5, 11):  # 8 × 5³ = 1,000 and 8 × 11³ = 10,648 atoms
        atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
        atoms.rattle(0.02, seed=0)
        (ours_rate, memory) = peak(lambda: md_rate(ours, atoms, 20))
        native_rate = md_rate(native, atoms, 20)
        print(f"MD, {len(atoms)} atoms: ours {ours_rate:.2f} steps/s, native {native_rate:.2f} steps/s, "
              f"ratio {ours_rate / native_rate:.3f}; peak {memory:.2f} GiB")
    cells = small_structures(args.relax_count)
    start = time.perf_counter()
    _, memory = peak(lambda: relax_many(cells, backbone, fmax=0.05, steps=100, cell=True))
    batched = args.relax_count / (time.perf_counter() - start)
    start = time.perf_counter()
    for atoms in cells[:50]:
        atoms = atoms.copy()
        atoms.calc = native
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=100)
    one_by_one = 50 / (time.perf_counter() - start)
    print(f"relaxation: batched {batched:.1f} structures/s ({args.relax_count} cells), native one at a time "
          f"{one_by_one:.2f} structures/s, {batched / one_by_one:.1f}×; peak {memory:.2f} GiB")


if __name__ == "__main__":
    main()
