"""Where forgetting sits: a tuned model's change re-applied to SevenNet-0 one part at a time.

For each method, tunes SevenNet-0 on one set with bench/sparse_mlip.py's --quick caps (24 training
frames, batch 4, --epochs epochs of 6 steps) — an mlearn set, or ``emt_alloy``, the held-out EMT
Cu–Ni–Al set of bench/heldout_emt_alloy.py (24/4/12 cells already) — takes the exported change
and adds it to the original part by part: each interaction block, the species embedding, the read-out,
the parameters that are not path weights (the radial basis frequencies, the per-element energy
scale), and then by kind (e3nn linears, radial MLPs). For each part, "only" applies that part's
change alone and "without" applies all the rest; the set's test force MAE says what the part
buys, the force MAE on bench/sparse_mlip.py's 32 alexandria_val frames says what it costs.
The table ends with each part's moved entries and the L2 norm of its change.

    python bench/forgetting_by_block.py [--set mlearn_Mo|emt_alloy] [--epochs 15] [--methods full sparse-L] [--seed 0]
                                        [--tune-kinds linear]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from ase_moma import load_backbone
from ase_moma.delta import Delta, apply_delta
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.methods import method_options
from ase_moma.finetune.loss import evaluate
from heldout_emt_alloy import emt_alloy_sets
from sparse_mlip import FORGETTING_SET, METHODS, SETS, forgetting_probe, load_set, restrict_path_weights


def block_of(name: str) -> str:
    """The part of SevenNet-0 a parameter belongs to: ``block0``..``block4``, ``embed``, ``readout`` or
    ``other:<module>``."""
    head = name.split(".")[0]
    if head[0].isdigit():
        return "block" + head.split("_")[0]
    if head.startswith("onehot"):
        return "embed"
    if head.startswith("reduce"):
        return "readout"
    return "other:" + head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="mlearn_Mo", choices=SETS + ("emt_alloy",))
    parser.add_argument("--epochs", type=int, default=15, help="epochs of 6 steps (default 15: 90 steps)")
    parser.add_argument("--methods", nargs="+", default=["full", "sparse-L"], choices=["full", "sparse-L", "sparse-H"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-kinds", nargs="+", help="let sparse move only path weights of these kinds "
                        "(linear, radial_mlp); default: all")
    args = parser.parse_args()

    scratch = load_backbone("sevennet", device="cpu")
    pristine = {name: tensor.clone() for name, tensor in scratch.model.state_dict().items()}
    path_kinds = {weight.name: weight.kind for weight in scratch.path_weights()}
    config = FinetuneConfig(batch_size=4, epochs=args.epochs, patience=args.epochs, seed=args.seed)
    probe = forgetting_probe(scratch, config.loss, quick=True)
    data = emt_alloy_sets() if args.set == "emt_alloy" else load_set(args.set, (24, 4, 12))
    graphs = [scratch.graph(atoms) for atoms in data["test"].frames]

    def measure(change: Delta) -> tuple[float, float]:
        """Test and forgetting-set force MAE (meV/Å) of the original plus ``change``, on one reused copy."""
        scratch.model.load_state_dict(pristine)
        apply_delta(scratch.model, change)
        return evaluate(scratch, graphs, data["test"], config.loss)["forces_mae"], probe.measure(scratch)

    print(f"{args.set}, {args.epochs * 6} steps, seed {args.seed}; {FORGETTING_SET} force MAE before tuning "
          f"{probe.before:.1f} meV/Å")
    for label in args.methods:
        method, settings = METHODS[label]
        backbone = load_backbone("sevennet", device="cpu")
        if args.tune_kinds:
            restrict_path_weights(backbone, args.tune_kinds)
        tuner = Finetuner(backbone, dataclasses.replace(config, method=method,
                                                        options=method_options(method, **settings)))
        start = time.perf_counter()
        tuner.fit(data["train"], data["valid"], progress=False)
        change = tuner.export()
        fit, forgetting = measure(change)
        print(f"\n{label} ({time.perf_counter() - start:.0f} s): test force MAE {fit:.1f} meV/Å, "
              f"{FORGETTING_SET} {forgetting:.1f} meV/Å\n")
        print("| part | only: test F | only: alexandria_val F | without: test F | without: alexandria_val F |")
        print("|---|---|---|---|---|")
        for grouping in (block_of, lambda name: path_kinds.get(name, "not a path weight")):
            for part in sorted({grouping(name) for name in change}):
                only = measure({n: v for n, v in change.items() if grouping(n) == part})
                rest = measure({n: v for n, v in change.items() if grouping(n) != part})
                print(f"| {part} | {only[0]:.1f} | {only[1]:.1f} | {rest[0]:.1f} | {rest[1]:.1f} |", flush=True)
        print("\n| part | entries moved | L2 norm of the change |\n|---|---|---|")
        for part in sorted({block_of(name) for name in change}):
            values = [v for n, (_, v) in change.items() if block_of(n) == part]
            print(f"| {part} | {sum(v.numel() for v in values)} | "
                  f"{float(torch.sqrt(sum((v.double() ** 2).sum() for v in values))):.3f} |")


if __name__ == "__main__":
    main()
