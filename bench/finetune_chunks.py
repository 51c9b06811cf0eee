"""Time and memory of a fine-tuning step computed whole or in chunks of atoms (FinetuneConfig.chunk_atoms).

Each configuration runs in a fresh process (so its peak resident memory is its own): SevenNet-0, full
fine-tuning, a batch of --batch frames, --steps optimiser steps; the table gives the mean step time
(the first step excluded), seconds per frame, peak memory, and both as ratios to the whole batch
computed at once in the same run. Chunking does not change the step (tests/test_chunks.py).
Sets: mlearn_Mo (54-atom cells), alexandria_val (3–80 atoms, the file's first frames) and the
generated EMT Cu–Ni–Al cells of bench/heldout_emt_alloy.py (32 atoms; no shared file).

    python bench/finetune_chunks.py [--sets mlearn_Mo alexandria_val emt_alloy] [--batch 16]
                                    [--chunks 0 64 128 256] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import ase.io

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlip"
FILES = {"mlearn_Mo": "mlearn_Mo_training.extxyz", "alexandria_val": "alexandria_val.extxyz"}


def frames_of(name: str, count: int) -> list:
    """The first ``count`` labelled frames of set ``name`` (and one more, for validation)."""
    if name == "emt_alloy":
        from heldout_emt_alloy import alloy_cells

        return alloy_cells(count + 1)
    path = DATA / FILES[name]
    if not path.is_file():
        sys.exit(f"{path} not found (../shared/data is absent)")
    return ase.io.read(path, f":{count + 1}")


def one(name: str, chunk_atoms: int, batch: int, steps: int) -> dict:
    """One configuration, in this process: its step time and peak memory."""
    from ase_moma import load_backbone
    from ase_moma.finetune import FinetuneConfig, Finetuner
    from ase_moma.finetune.potential_data import read_potential_set

    frames = frames_of(name, batch)
    train = read_potential_set(frames[:batch], forces=True, stress=True, what=f"{name} training frames")
    valid = read_potential_set(frames[batch:], forces=True, stress=True, what=f"{name} validation frame")
    config = FinetuneConfig(method="full", batch_size=batch, epochs=steps, max_steps=steps, patience=steps,
                            chunk_atoms=chunk_atoms or 10 ** 9)
    result = Finetuner(load_backbone("sevennet", device="cpu"), config).fit(train, valid, progress=False)
    return {"step_s": result.step_seconds, "atoms": int(train.n_atoms().sum()),
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["mlearn_Mo", "alexandria_val", "emt_alloy"],
                        choices=["mlearn_Mo", "alexandria_val", "emt_alloy"])
    parser.add_argument("--batch", type=int, default=16, help="frames per optimiser step")
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 64, 128, 256],
                        help="atoms per chunk; 0 computes the batch at once (the reference)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("SET", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]), args.batch, args.steps)))
        return
    print("| set | atoms in batch | chunk atoms | s/step | s/frame | peak GB | time vs whole | memory vs whole |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        whole = None
        for chunk in sorted(args.chunks):
            command = [sys.executable, __file__, "--child", name, str(chunk), "--batch", str(args.batch),
                       "--steps", str(args.steps)]
            row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout
                             .strip().splitlines()[-1])
            whole = whole or row
            print(f"| {name} | {row['atoms']} | {chunk or 'whole'} | {row['step_s']:.2f} | "
                  f"{row['step_s'] / args.batch:.3f} | {row['peak_gb']:.2f} | {row['step_s'] / whole['step_s']:.2f} | "
                  f"{row['peak_gb'] / whole['peak_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
