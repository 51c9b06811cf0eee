"""Sparse equivariant fine-tuning against its baselines on real DFT sets, on SevenNet-0.

For each set of ../shared/data/mlip (mlearn Si, Ge, Li, Mo with their own test
files, the training file split 90/10 into train/validation; InP and
alexandria_val split 80/10/10 at random with seed 0): energy MAE (meV/atom),
force MAE (meV/Å), stress MAE (GPa) on the test set, and the percent of path
weights updated, for zero-shot, readout-only, full, LoRA, sparse-L and sparse-H,
all under one trainer (schedule-free AdamW, Huber loss, early stopping,
per-element reference energies refitted to the training energies first), as
mean ± std over ``--seeds`` (the seed of the increments and the batch order).
Then, measured in the same run: sparse-L's and sparse-H's force MAE over
full's (goals ≤ 1.05 and ≤ 1.15), the training-step time of sparse over full,
the inference time of the exported sparse model over the original (beside an
identical copy of the original over the original: the timing's noise), and
forgetting: force MAE on alexandria_val before and after tuning on each mlearn set, mean ± std over seeds.

--quick (training sets capped at 24 frames, validation at 4, test at 12, batch
4, 5 epochs = 30 optimiser steps) runs on the 2-core CPU machine; the default
(whole sets, batch 64, up to 100 epochs, patience 10) is meant for a GPU.

    python bench/sparse_mlip.py --quick [--sets mlearn_Si InP ...] [--methods ...] [--seeds 0 1 2] [--epochs N]
                                [--lr LR] [--tau-lr LR] [--target-fraction F] [--anchored]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import ase.io
import numpy as np

from ase_moma import load_backbone
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.methods import method_options
from ase_moma.finetune.potential_data import read_potential_set, split_frames
from ase_moma.finetune.report import sparsity_report
from ase_moma.labelled_set import LabelledSet
from anchor_fisher import AnchoredFinetuner

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlip"
SETS = ("mlearn_Si", "mlearn_Ge", "mlearn_Li", "mlearn_Mo", "InP", "alexandria_val")
METHODS = {"zero_shot": ("zero_shot", {}), "readout": ("readout", {}), "full": ("full", {}), "lora": ("lora", {}),
           "sparse-L": ("sparse", {"preset": "L"}), "sparse-H": ("sparse", {"preset": "H"})}  # label: (method, options)
FORGETTING_SET = "alexandria_val"


def load_set(name: str, caps: tuple[int, int, int] | None) -> dict[str, LabelledSet]:
    """train/valid/test of one set, each a seeded random subset of at most ``caps`` frames in quick mode."""
    if name.startswith("mlearn_"):
        frames = ase.io.read(DATA / f"{name}_training.extxyz", ":")
        train, valid, _ = split_frames(frames, (0.9, 0.1, 0.0), seed=0)
        test = ase.io.read(DATA / f"{name}_test.extxyz", ":")
    else:
        train, valid, test = split_frames(ase.io.read(DATA / f"{name}.extxyz", ":"), (0.8, 0.1, 0.1), seed=0)
    parts = {"train": train, "valid": valid, "test": test}
    if caps is not None:
        rng = np.random.default_rng(0)
        parts = {role: [frames[i] for i in sorted(rng.permutation(len(frames))[:cap])]
                 for (role, frames), cap in zip(parts.items(), caps)}
    return {role: read_potential_set(frames, forces=True, stress=True, what=f"{name} {role} set")
            for role, frames in parts.items() if frames}


@dataclasses.dataclass
class ForgettingProbe:
    """Force MAE (meV/Å) on the forgetting set's frames, measured before tuning and after it."""

    data: LabelledSet
    graphs: list
    loss: object
    before: float

    def measure(self, backbone) -> float:
        return evaluate(backbone, self.graphs, self.data, self.loss)["forces_mae"]


def forgetting_probe(original, loss, quick: bool) -> ForgettingProbe:
    """FORGETTING_SET's test part (32 frames when ``quick``) as graphs of the untouched ``original``, with its
    force MAE before any tuning."""
    data = load_set(FORGETTING_SET, (0, 0, 32) if quick else None)["test"]
    graphs = [original.graph(a) for a in data.frames]
    return ForgettingProbe(data, graphs, loss, evaluate(original, graphs, data, loss)["forces_mae"])


def restrict_path_weights(backbone, kinds: list[str]) -> None:
    """Hide from sparse or LoRA tuning every path weight of ``backbone`` whose kind is not in ``kinds``
    (``linear``, ``radial_mlp``, ``tensor_product``): an ablation of what the method may move."""
    every = backbone.path_weights
    backbone.path_weights = lambda: [weight for weight in every() if weight.kind in kinds]


def inference_ratios(reference, tuned, control, graphs, repeats: int = 7) -> tuple[float, float]:
    """Time of ``tuned``, and of ``control`` (an identical copy of ``reference``), over that of
    ``reference`` to evaluate energy, forces and stress of every graph. The three take turns in a
    rotating order after one warm-up pass each; each model's fastest pass counts, the one least
    disturbed by other load. The control's ratio is the measurement's own noise."""
    models = (reference, tuned, control)
    times: list[list[float]] = [[], [], []]
    for repeat in range(repeats + 1):
        for turn in range(3):
            which = (turn - repeat) % 3
            model = models[which]
            start = time.perf_counter()
            for graph in graphs:
                model.forward(model.collate([graph]))
            if repeat:
                times[which].append(time.perf_counter() - start)
    return min(times[1]) / min(times[0]), min(times[2]) / min(times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="capped sets, batch 4, 5 epochs (CPU)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--lr", type=float, help="learning rate (default: FinetuneConfig's); sparse increments train "
                        "at lr/√f, so --lr 3.16e-4 --tau-lr 1e-3 trains sparse-L's at 1e-3")
    parser.add_argument("--tau-lr", type=float, help="threshold learning rate (default: the lr)")
    parser.add_argument("--target-fraction", type=float, help="fraction of path weights sparse moves, in place of "
                        "the preset's")
    parser.add_argument("--epochs", type=int, help="epochs (default: 5 with --quick, else 100); more epochs make "
                        "forgetting measurable")
    parser.add_argument("--anchored", action="store_true", help="sparse starts on the entries ranked by gain per "
                        "harm to an unlabelled anchor set of other elements (bench/anchor_fisher.py)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("-o", "--output", default="bench/out/sparse_mlip")
    args = parser.parse_args()
    if not DATA.is_dir():
        parser.error(f"real data not found at {DATA}")
    caps = (24, 4, 12) if args.quick else None
    base_config = FinetuneConfig(batch_size=4, epochs=5, patience=5) if args.quick else FinetuneConfig()
    sparse_settings = {"tau_lr": args.tau_lr, "target_fraction": args.target_fraction}
    if args.lr is not None:
        base_config = dataclasses.replace(base_config, lr=args.lr)
    if args.epochs is not None:
        base_config = dataclasses.replace(base_config, epochs=args.epochs, patience=args.epochs)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    original = load_backbone("sevennet", device=args.device)
    probe = forgetting_probe(original, base_config.loss, args.quick)

    rows, timing, forgetting = [], {}, {}
    for name in args.sets:
        data = load_set(name, caps)
        print(f"{name}: {len(data['train'])} train, {len(data['valid'])} valid, {len(data['test'])} test "
              f"frames", flush=True)
        step_seconds = {}
        for label, seed in [(label, seed) for label in args.methods for seed in args.seeds]:
            method, settings = METHODS[label]
            backbone = load_backbone("sevennet", device=args.device)
            options = method_options(method, **settings, **(sparse_settings if "preset" in settings else {}))
            config = dataclasses.replace(base_config, method=method, options=options, seed=seed)
            tuner = (AnchoredFinetuner if args.anchored else Finetuner)(backbone, config)
            start = time.perf_counter()
            result = tuner.fit(data["train"], data["valid"], progress=False)
            delta = tuner.export()
            seconds = time.perf_counter() - start
            test_graphs = [backbone.graph(a) for a in data["test"].frames]
            metrics = evaluate(backbone, test_graphs, data["test"], config.loss)
            shapes = {k: v.shape for k, v in backbone.model.state_dict().items()}
            updated = sparsity_report(backbone.path_weights(), shapes, delta)["total"]["fraction"]
            row = {"set": name, "method": label, "seed": seed, **metrics, "path_weights_updated_pct": 100 * updated,
                   "steps": result.steps, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                   "train_s": seconds, "step_s": result.step_seconds}
            rows.append(row)
            step_seconds[label] = result.step_seconds
            print(f"  {label:9s} seed {seed} E {metrics['energy_mae']:8.2f} meV/atom  "
                  f"F {metrics['forces_mae']:7.1f} meV/Å  "
                  f"S {metrics['stress_mae']:6.3f} GPa  updated {100 * updated:6.2f} %  "
                  f"{result.steps} steps, {seconds:.0f} s ({1e3 * result.step_seconds:.0f} ms a step)", flush=True)
            if name.startswith("mlearn_"):
                after = probe.measure(backbone)
                forgetting.setdefault(name, {}).setdefault(label, []).append(after)
                print(f"  {label:9s} forgetting: {FORGETTING_SET} force MAE {after:.1f} meV/Å "
                      f"(before tuning {probe.before:.1f})", flush=True)
            if label == "sparse-L" and seed == args.seeds[0]:
                control = load_backbone("sevennet", device=args.device)
                ratio, noise = inference_ratios(original, backbone, control, test_graphs)
                timing.setdefault("inference_ratio", {})[name] = ratio
                timing.setdefault("inference_control", {})[name] = noise
        if "sparse-L" in step_seconds and "full" in step_seconds:
            timing.setdefault("step_ratio", {})[name] = step_seconds["sparse-L"] / step_seconds["full"]

    report = {"quick": args.quick, "config": dataclasses.asdict(base_config), "rows": rows, "timing": timing,
              "forgetting": {"set": FORGETTING_SET, "frames": len(probe.data), "forces_mae_before": probe.before,
                             "forces_mae_after": forgetting}}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print_tables(report)


def print_tables(report: dict) -> None:
    """The benchmark's tables in Markdown: mean ± std over seeds, ratios to full, timing, forgetting."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in report["rows"]:
        groups.setdefault((row["set"], row["method"]), []).append(row)

    def stat(rows: list[dict], key: str, digits: int) -> str:
        values = np.array([r[key] for r in rows])
        return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")

    print("\n| set | method | seeds | energy MAE (meV/atom) | force MAE (meV/Å) | stress MAE (GPa) | "
          "path weights updated (%) | force MAE / full |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, method), rows in groups.items():
        full = groups.get((name, "full"))
        ratio = (f"{np.mean([r['forces_mae'] for r in rows]) / np.mean([r['forces_mae'] for r in full]):.3f}"
                 if full else "")
        print(f"| {name} | {method} | {len(rows)} | {stat(rows, 'energy_mae', 2)} | {stat(rows, 'forces_mae', 1)} | "
              f"{stat(rows, 'stress_mae', 3)} | {stat(rows, 'path_weights_updated_pct', 2)} | {ratio} |")
    timing = report["timing"]
    for key, target in (("step_ratio", "target ≤ 1.2"), ("inference_ratio", "target 1.00 ± 0.02"),
                        ("inference_control", "an identical copy of the original, the timing's noise")):
        values = timing.get(key, {})
        if values:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
            print(f"\n{key} ({target}): {shown}; mean {np.mean(list(values.values())):.3f}")
    forgetting = report["forgetting"]
    print(f"\nforgetting: force MAE (meV/Å) on {forgetting['frames']} {forgetting['set']} frames, before tuning "
          f"{forgetting['forces_mae_before']:.1f}; after tuning on:")
    for name, values in forgetting["forces_mae_after"].items():
        print(f"  {name}: " + ", ".join(f"{k} {np.mean(v):.1f}" + (f" ± {np.std(v):.1f}" if len(v) > 1 else "")
                                       for k, v in values.items()))


if __name__ == "__main__":
    main()
