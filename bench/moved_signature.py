"""Does what sparse fine-tuning moves mean anything? Per irrep degree l, against chance and two controls.

For a tuned potential, the share of its moved path-weight entries that lie in l = 0, 1, 2 paths (and in
weights with no irrep split, "other") is set beside the share of all path-weight entries there (what a
random choice of the same size would give). Two controls separate what the data asks for from what the
method prefers:

``shares``    every module of bench/out/compose_potentials/hub (sparse-L, sparse-H, full, LoRA on the DFT
              sets; run that bench's ``modules`` stage first) and every module this script trained.
``control``   sparse-L on a set's module frames (the hub recipe: 120 frames, 10 validation, batch 8, 100 steps,
              seed 0) with the labels shuffled: per-atom energies and stresses permuted across frames, force
              rows permuted across the atoms of each frame. What it moves is the method's preference alone.
``terms``     sparse-L on 8-atom Si cells labelled with SevenNet-0 plus a known perturbation: a radial Gaussian
              pair term, or an angular three-body term (tests/pair_terms.py), ``--cells`` cells, batch 4,
              ``--steps`` steps, seeds 0-2 (cells and training). A radial term needs no angular information.

    python bench/moved_signature.py control --sets mlearn_Mo
    python bench/moved_signature.py terms [--cells 24] [--steps 40] [--seeds 0 1 2]
    python bench/moved_signature.py shares
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from compose_potentials import MODULE_FRAMES, MODULE_VALID, SETS, _sample, set_parts  # noqa: E402
from pair_terms import AngularTriplet, GaussianPair, labelled, silicon_cells  # noqa: E402

OUT = HERE / "out" / "moved_signature"
HUB = HERE / "out" / "compose_potentials" / "hub" / "modules"
TERMS = {"radial": GaussianPair(epsilon=0.06, r0=2.35, sigma=0.15),
         "angular": AngularTriplet(epsilon=1.4, r0=2.35, sigma=0.15)}  # RMS forces of both near 0.2 eV/Å
DEGREES = ("0", "1", "2", "other")


def shuffled(frames: list, seed: int) -> list:
    """Copies of ``frames`` whose labels no longer belong to their structures (see the module docstring)."""
    rng = np.random.default_rng(seed)
    per_atom = [a.calc.results["energy"] / len(a) for a in frames]
    order = rng.permutation(len(frames))
    result = []
    for atoms, source in zip(frames, order):
        copy = atoms.copy()
        forces = atoms.calc.results["forces"][rng.permutation(len(atoms))]
        copy.calc = SinglePointCalculator(copy, energy=per_atom[source] * len(atoms), forces=forces,
                                          stress=frames[source].calc.results["stress"])
        result.append(copy)
    return result


def _finetune(train: list, valid: list, out: Path, batch_size: int, steps: int, seed: int) -> dict:
    from ase_moma.finetune import FinetuneConfig
    from ase_moma.finetune.pipeline import finetune_potential

    config = FinetuneConfig(method="sparse", batch_size=batch_size, epochs=1000, patience=1000,
                            max_steps=steps, seed=seed)
    return finetune_potential("sevennet", train, valid, out, config, progress=False, overwrite=True,
                              stress_check=False)


def train_controls(sets: list[str]) -> None:
    for name in sets:
        parts = set_parts(name)
        train = shuffled(_sample(parts["train"], MODULE_FRAMES, seed=0), seed=0)
        valid = shuffled(_sample(parts["valid"], MODULE_VALID, seed=0), seed=1)
        record = _finetune(train, valid, OUT / f"control-{name}", batch_size=8, steps=100, seed=0)
        print(f"control-{name}: {100 * record['path_weights_updated']['fraction']:.2f} % moved", flush=True)


def train_terms(cells: int, steps: int, seeds: list[int]) -> None:
    from ase_moma import load_calculator

    calc = load_calculator("sevennet", device="cpu")
    for seed in seeds:
        frames = silicon_cells(cells + 6, seed)
        for label, term in TERMS.items():
            size = np.sqrt(np.mean([np.mean(f.calc.results["forces"] ** 2)
                                    for f in labelled(frames[:4], [term.calculator()])]))
            data = labelled(frames, [calc, term.calculator()])
            _finetune(data[:cells], data[cells:], OUT / f"term-{label}-s{seed}", batch_size=4, steps=steps,
                      seed=seed)
            print(f"term-{label}-s{seed}: RMS force of the term {1000 * size:.0f} meV/Å", flush=True)


def shares(folder: Path) -> dict[str, tuple[float, float]]:
    """Per degree: (share of the moved entries, share of all path-weight entries)."""
    from ase_moma.finetune.inspect import inspect_moved

    report = inspect_moved(folder)
    moved, size = report["total"]["updated"], report["total"]["size"]
    return {key: (row["updated"] / max(1, moved), row["size"] / size) for key, row in report["per_l"].items()}


def print_shares() -> None:
    folders = sorted(HUB.glob("*")) if HUB.is_dir() else []
    folders += sorted(OUT.glob("*")) if OUT.is_dir() else []
    rows = {folder.name: shares(folder) for folder in folders if folder.is_dir()}
    (OUT / "shares.json").parent.mkdir(parents=True, exist_ok=True)
    (OUT / "shares.json").write_text(json.dumps(rows, indent=1))
    chance = next(iter(rows.values()))
    print("| model | " + " | ".join(f"l = {d}" if d != "other" else "no irrep split" for d in DEGREES)
          + " | l = 0 ÷ chance | l = 2 ÷ chance |")
    print("|---|" + "---|" * (len(DEGREES) + 2))
    print("| all entries (chance) | " + " | ".join(f"{100 * chance[d][1]:.1f} %" for d in DEGREES) + " | 1 | 1 |")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * row[d][0]:.1f} %" for d in DEGREES)
              + f" | {row['0'][0] / row['0'][1]:.2f} | {row['2'][0] / row['2'][1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    control = stages.add_parser("control")
    control.add_argument("--sets", nargs="+", default=["mlearn_Mo"], choices=SETS)
    terms = stages.add_parser("terms")
    terms.add_argument("--cells", type=int, default=24)
    terms.add_argument("--steps", type=int, default=40)
    terms.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    stages.add_parser("shares")
    args = parser.parse_args()
    if args.stage == "control":
        train_controls(args.sets)
    elif args.stage == "terms":
        train_terms(args.cells, args.steps, args.seeds)
    else:
        print_shares()


if __name__ == "__main__":
    main()
