"""A held-out check for potential fine-tuning: a generated Cu–Ni–Al alloy set labelled by ASE's EMT.

No file in ../shared/data is used, so no constant can have been tuned to it: 40 cells of
32 atoms (2×2×2 cubic fcc Cu with 8 sites turned into Ni or Al, a random 2 % strain, a 0.08 Å
rattle; seed 7), labelled with energies, forces and stress by EMT — a potential-energy surface
SevenNet-0 never saw, far enough from its own that zero-shot forces are poor. 24 cells train, 4
validate, 12 test; batch 4, 5 epochs (30 optimiser steps, --epochs to change), the --quick budget
of bench/sparse_mlip.py. Each run is METHOD:PRESET:LR; the table gives test energy and force MAE, the
fraction of path weights moved, and forgetting: the force MAE on bench/sparse_mlip.py's 32
alexandria_val frames after tuning, beside its value before. EMT's surface is not DFT's, so
fitting it moves the model away from what it was trained on, and full fine-tuning forgets
measurably within these 30 steps.

    python bench/heldout_emt_alloy.py zero_shot:L:1e-3 full:L:1e-3 sparse:L:1e-3 sparse:H:1e-3 [--seed S] [--epochs N]
                                      [--tune-kinds linear] [--target-fraction F] [--anchored | --replay]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_moma import load_backbone
from ase_moma.finetune import FinetuneConfig, Finetuner, SparseOptions
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.potential_data import label_frames, read_potential_set
from ase_moma.labelled_set import LabelledSet
from anchor_fisher import AnchoredFinetuner, ReplayFinetuner
from sparse_mlip import FORGETTING_SET, forgetting_probe, restrict_path_weights


def alloy_cells(count: int = 40, seed: int = 7) -> list[Atoms]:
    """``count`` strained, rattled 32-atom Cu cells with 8 Ni/Al substitutions, EMT-labelled."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        atoms = bulk("Cu", "fcc", 3.61, cubic=True).repeat((2, 2, 2))
        symbols = atoms.get_chemical_symbols()
        for site in rng.choice(len(atoms), 8, replace=False):
            symbols[site] = ("Ni", "Al")[site % 2]
        atoms.set_chemical_symbols(symbols)
        atoms.set_cell(atoms.cell @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        atoms.rattle(0.08, seed=index)
        frames.append(atoms)
    return label_frames(frames, EMT())


def emt_alloy_sets() -> dict[str, LabelledSet]:
    """The bench's train (24 cells), valid (4) and test (12) sets of ``alloy_cells()``."""
    frames = alloy_cells()
    return {role: read_potential_set(part, forces=True, stress=True, what=f"EMT alloy {role} set")
            for role, part in (("train", frames[:24]), ("valid", frames[24:28]), ("test", frames[28:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="METHOD:PRESET:LR, e.g. sparse:L:1e-3")
    parser.add_argument("--seed", type=int, default=0, help="seed of the increments and the batch order")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of 6 steps each (default 5: 30 steps)")
    parser.add_argument("--tune-kinds", nargs="+", help="let sparse and LoRA move only path weights of these kinds "
                        "(linear, radial_mlp, tensor_product); default: all")
    parser.add_argument("--target-fraction", type=float, help="fraction of path weights sparse moves, in place of "
                        "the preset's (e.g. 0.3: how forgetting goes with how spread the change is)")
    against = parser.add_mutually_exclusive_group()
    against.add_argument("--anchored", action="store_true", help="sparse starts on the entries ranked by gain per "
                         "harm to an unlabelled anchor set of other elements (bench/anchor_fisher.py)")
    against.add_argument("--replay", action="store_true", help="the loss also replays unlabelled crystals of other "
                         "elements against the untuned model's forces (any method): bench/anchor_fisher.py")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sets = emt_alloy_sets()
    probe = forgetting_probe(load_backbone("sevennet", device=args.device), FinetuneConfig().loss, quick=True)
    print(f"{FORGETTING_SET} force MAE before tuning: {probe.before:.1f} meV/Å ({len(probe.data)} frames)")
    print(f"| method | preset | lr | seed | E MAE meV/atom | F MAE meV/Å | moved | steps | s | {FORGETTING_SET} F |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        method, preset, lr = run.split(":")
        backbone = load_backbone("sevennet", device=args.device)
        if args.tune_kinds:
            restrict_path_weights(backbone, args.tune_kinds)
        options = SparseOptions(preset=preset, target_fraction=args.target_fraction) if method == "sparse" else None
        config = FinetuneConfig(method=method, options=options, epochs=args.epochs, patience=args.epochs, batch_size=4,
                                lr=float(lr), seed=args.seed)
        kind = ReplayFinetuner if args.replay else AnchoredFinetuner if args.anchored else Finetuner
        tuner = kind(backbone, config)
        start = time.perf_counter()
        result = tuner.fit(sets["train"], sets["valid"], progress=False)
        moved = tuner.method.metrics().get("path_weights_moved")
        moved = f"{moved:.3f}" if moved is not None else {"zero_shot": "none", "full": "all"}.get(method, method)
        tuner.export()
        seconds = time.perf_counter() - start
        metrics = evaluate(backbone, tuner.graphs(sets["test"]), sets["test"], config.loss)
        after = probe.measure(backbone)
        print(f"| {method} | {preset} | {lr} | {args.seed} | {metrics['energy_mae']:.2f} | "
              f"{metrics['forces_mae']:.1f} | {moved} | {result.steps} | {seconds:.0f} | {after:.1f} |", flush=True)


if __name__ == "__main__":
    main()
