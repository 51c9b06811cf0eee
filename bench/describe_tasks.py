"""Fill the robocrys description cache for the shared matminer tasks before a fusion benchmark.

robocrys takes up to a second a structure on this CPU (0.74 s for the first JARVIS 2D structures, 11 atoms
on average), so the text view of a few thousand structures
is computed once, here, and read back from the cache by ``bench/fusion.py`` and by any model trained
with the text modality on the same structures. Tasks that share structures (the JARVIS 2D tasks, the MP
polarizability tasks) are described once: the cache is keyed by a hash of the structure.

    python bench/describe_tasks.py [--tasks jarvis_2d_exfoliation ...] [--cache bench/out/descriptions]
    python bench/describe_tasks.py --part 0 2 & python bench/describe_tasks.py --part 1 2   # on two cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io

from ase_moma.modalities import Describer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"
ORDER = ("jarvis_2d_exfoliation", "jarvis_2d_gap_opt", "jarvis_2d_gap_tbmbj", "mp_poly_electronic",
         "mp_eps_electronic", "mp_elastic_anisotropy", "expt_eform")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a folder laid out as ../shared/data/matminer")
    parser.add_argument("--tasks", nargs="+", default=list(ORDER))
    parser.add_argument("--cache", type=Path, default=Path("bench/out/descriptions"))
    parser.add_argument("--part", nargs=2, type=int, default=(0, 1), metavar=("K", "N"),
                        help="describe only every N-th structure from the K-th, so N processes share the work")
    args = parser.parse_args()
    tasks = json.loads((args.data / "tasks.json").read_text())
    describer = Describer(args.cache)
    for task in args.tasks:
        frames = ase.io.read(args.data / tasks[task]["file"], ":")[args.part[0]::args.part[1]]
        start, failed = time.perf_counter(), 0
        for atoms in frames:
            failed += describer.describe(atoms)[0] is None
        print(f"{task}: {len(frames)} structures, {failed} not described, {time.perf_counter() - start:.0f} s "
              f"(cache so far: {describer.counts['described']} described, {describer.counts['cached']} read back)",
              flush=True)


if __name__ == "__main__":
    main()
