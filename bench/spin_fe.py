"""The spin-aware head on iron: frozen, sparse-tuned and fully tuned SevenNet-0 with a spin head.

fe_spin.extxyz (../shared/data/magnetic) is split 80/10/10 within each config_type (seed 0), so
every kind of configuration is in every part. The spin configuration is an input: each frame's
DFT moment directions (or signs, --head collinear) are set as its initial magnetic moments, and
the head predicts magnitudes from geometry. For (a) the head's start, the ridge probe of the
training magnitudes on the frozen backbone's per-atom features, untrained, (b) the frozen backbone
+ trained head, (c) sparse tuning + head, (d) full tuning + head: energy MAE (meV/atom), force MAE
(meV/Å), stress MAE (GPa), moment MAE (μB) over vector components (or signed values) and over
magnitudes, on the test part, beside the bare backbone's zero-shot errors and the trivial baseline
(every magnitude = the training mean). CHGNet 0.3.0's own magnitudes on the same test frames are
the outside reference. Then the time of a training step (forward, backward) with the head over one
without, on the same batch.

--quick (training capped at 48 frames, validation 8, test 32, all of at most 32 atoms; batch 8,
3 epochs) runs on the 2-core CPU machine; the default (whole parts, batch 64, up to 100 epochs)
is meant for a GPU.

--hold-out CONFIG_TYPE tests on configurations of a kind never trained on (e.g. BCC-HCP-transition,
or EOS_001_Jun2020: 54-atom cells, where --quick takes 32 frames of that size since none is smaller).

    python bench/spin_fe.py --quick [--head vector|collinear] [--hold-out CONFIG_TYPE] [-o bench/out/spin_fe]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import ase.io
import numpy as np

from ase_moma import load_backbone, load_calculator
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import evaluate
from ase_moma.finetune.potential_data import read_potential_set

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic" / "fe_spin.extxyz"
# label: what each run changes in the configuration; the probe is the head's untrained start
RUNS = {"probe (frozen, untrained head)": {"method": "zero_shot", "epochs": 0},
        "frozen + head": {"method": "zero_shot"}, "sparse + head": {"method": "sparse"},
        "full + head": {"method": "full"}}


def stratified_split(frames: list, seed: int = 0) -> dict[str, list]:
    """80/10/10 within each ``config_type``, seeded."""
    groups = defaultdict(list)
    for index, atoms in enumerate(frames):
        groups[atoms.info.get("config_type", "none")].append(index)
    parts = {"train": [], "valid": [], "test": []}
    rng = np.random.default_rng(seed)
    for _, indices in sorted(groups.items()):
        order = [indices[i] for i in rng.permutation(len(indices))]
        n_valid = n_test = max(1, round(0.1 * len(order))) if len(order) >= 3 else 0
        parts["valid"] += order[:n_valid]
        parts["test"] += order[n_valid:n_valid + n_test]
        parts["train"] += order[n_valid + n_test:]
    return {role: [frames[i] for i in sorted(indices)] for role, indices in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="capped parts, batch 8, 3 epochs (CPU)")
    parser.add_argument("--head", default="vector", choices=["vector", "collinear"], help="spin head kind")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--head-lr", type=float, default=1e-2,
                        help="the head's learning rate (it trains from scratch, unlike the backbone)")
    parser.add_argument("--hold-out", metavar="CONFIG_TYPE",
                        help="test on every frame of this config_type and train/validate on the other types only")
    parser.add_argument("-o", "--output", default="bench/out/spin_fe")
    args = parser.parse_args()
    if not DATA.is_file():
        parser.error(f"real data not found at {DATA}")
    frames = ase.io.read(DATA, ":")
    if args.hold_out:
        held = [atoms for atoms in frames if atoms.info.get("config_type") == args.hold_out]
        if not held:
            parser.error(f"no frame of {DATA} has config_type {args.hold_out!r}")
        parts = stratified_split([atoms for atoms in frames if atoms.info.get("config_type") != args.hold_out])
        parts["test"] = held
    else:
        parts = stratified_split(frames)
    if args.quick:
        rng = np.random.default_rng(0)
        for role, cap in (("train", 48), ("valid", 8), ("test", 32)):
            # a held-out kind may have only bigger cells: then its frames are taken as they are
            small = [atoms for atoms in parts[role] if len(atoms) <= 32] or parts[role]
            parts[role] = [small[i] for i in sorted(rng.permutation(len(small))[:cap])]
    data = {role: read_potential_set(frames, forces=True, stress=True, magmoms=args.head, what=f"fe_spin {role}")
            for role, frames in parts.items()}
    print(", ".join(f"{len(v)} {k}" for k, v in data.items()) + " frames", flush=True)
    base_config = (FinetuneConfig(spin_head=args.head, batch_size=8, epochs=3, patience=3, head_lr=args.head_lr)
                   if args.quick else FinetuneConfig(spin_head=args.head, head_lr=args.head_lr))
    bare = load_backbone("sevennet", device=args.device)
    unlabelled = dataclasses.replace(data["test"], magmoms=None)  # the bare backbone predicts no moments
    zero_shot = evaluate(bare, [bare.graph(a) for a in unlabelled.frames], unlabelled, base_config.loss)
    print(f"  zero-shot (no head) E {zero_shot['energy_mae']:.2f} meV/atom  F {zero_shot['forces_mae']:.1f} meV/Å  "
          f"S {zero_shot['stress_mae']:.3f} GPa", flush=True)
    rows = []
    for label in args.runs:
        backbone = load_backbone("sevennet", device=args.device)
        tuner = Finetuner(backbone, dataclasses.replace(base_config, **RUNS[label]))
        start = time.perf_counter()
        result = tuner.fit(data["train"], data["valid"], progress=False)
        tuner.export()
        metrics = evaluate(tuner.model, tuner.graphs(data["test"]), data["test"], base_config.loss)
        rows.append({"run": label, **metrics, "steps": result.steps, "seconds": time.perf_counter() - start,
                     "head_fraction": tuner.spin.parameter_fraction()})
        print(f"  {label:30s} E {metrics['energy_mae']:7.2f} meV/atom  F {metrics['forces_mae']:6.1f} meV/Å  "
              f"S {metrics['stress_mae']:.3f} GPa  m {metrics['magmoms_mae']:.3f} μB  "
              f"|m| {metrics['magmom_magnitude_mae']:.3f} μB  ({result.steps} steps)", flush=True)

    chgnet = load_calculator("chgnet", device=args.device).predict(data["test"].frames, batch_size=8)
    predicted = np.concatenate([np.abs(row["magmoms"]) for row in chgnet])
    reference = np.concatenate([magnitudes(m) for m in data["test"].magmoms])
    chgnet_mae = float(np.mean(np.abs(predicted - reference)))
    train_mean = float(np.mean(np.concatenate([magnitudes(m) for m in data["train"].magmoms])))
    mean_mae = float(np.mean(np.abs(reference - train_mean)))
    head_step, plain_step = step_times(data["train"], base_config, args.device)
    report = {"quick": args.quick, "sizes": {k: len(v) for k, v in data.items()}, "rows": rows,
              "zero_shot_no_head": zero_shot,
              "chgnet_0.3.0_magnitude_mae": chgnet_mae, "predict_mean_magnitude_mae": mean_mae,
              "step_seconds": {"with_head": head_step, "plain": plain_step, "ratio": head_step / plain_step},
              "config": dataclasses.asdict(base_config)}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\n| run | energy MAE (meV/atom) | force MAE (meV/Å) | stress MAE (GPa) | moment MAE, {args.head} (μB) "
          "| moment MAE, magnitudes (μB) |")
    print("|---|---|---|---|---|---|")
    print(f"| zero-shot, no head (no moments) | {zero_shot['energy_mae']:.2f} | {zero_shot['forces_mae']:.1f} | "
          f"{zero_shot['stress_mae']:.3f} | – | – |")
    for row in rows:
        print(f"| {row['run']} | {row['energy_mae']:.2f} | {row['forces_mae']:.1f} | {row['stress_mae']:.3f} | "
              f"{row['magmoms_mae']:.3f} | {row['magmom_magnitude_mae']:.3f} |")
    print(f"| every magnitude = training mean ({train_mean:.2f} μB) | – | – | – | – | {mean_mae:.3f} |")
    print(f"| CHGNet 0.3.0 (own magmoms) | – | – | – | – | {chgnet_mae:.3f} |")
    print(f"\nspin head parameters: {100 * rows[0]['head_fraction']:.2f} % of SevenNet-0's")
    print(f"training step (forward + backward, all weights, one batch of {STEP_BATCH}): with the head "
          f"{head_step:.2f} s, plain {plain_step:.2f} s, ratio {head_step / plain_step:.2f} (goal ≤ 2)")


def magnitudes(moments: np.ndarray) -> np.ndarray:
    return np.linalg.norm(moments, axis=-1) if moments.ndim == 2 else np.abs(moments)


STEP_BATCH = 8


def step_times(train, config, device: str, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of a full training step (loss, backward) with the spin head and without, on
    the same batch of training frames; alternated so machine load hits both alike."""
    from ase_moma.finetune.loss import PotentialLoss, batch_labels

    backbone = load_backbone("sevennet", device=device)
    tuner = Finetuner(backbone, dataclasses.replace(config, method="full"))
    rows = list(range(STEP_BATCH))
    batches = {"head": tuner.model.collate(tuner.graphs(train)[:STEP_BATCH]),
               "plain": backbone.collate([backbone.graph(a) for a in train.frames[:STEP_BATCH]])}
    models = {"head": tuner.model, "plain": backbone}
    losses = {"head": config.loss, "plain": PotentialLoss()}
    labels = {"head": batch_labels(train, rows, backbone.device)}
    labels["plain"] = dataclasses.replace(labels["head"], magmoms=None)
    backbone.model.requires_grad_(True)
    backbone.model.train(True)
    times = {"head": [], "plain": []}
    for repeat in range(repeats + 1):
        for key in (("head", "plain") if repeat % 2 else ("plain", "head")):
            start = time.perf_counter()
            losses[key](models[key].forward(batches[key]), labels[key]).backward()
            if repeat:
                times[key].append(time.perf_counter() - start)
    return float(np.median(times["head"])), float(np.median(times["plain"]))


if __name__ == "__main__":
    main()
