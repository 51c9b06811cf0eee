"""The spin-aware head on iron: frozen, sparse-tuned and fully tuned SevenNet-0 with a spin head.

fe_spin.extxyz (../shared/data/magnetic) is split 80/10/10 within each config_type (seed 0), so
every kind of configuration is in every part. For (a) the frozen backbone + head, (b) sparse
tuning + head, (c) full tuning + head: energy MAE (meV/atom), force MAE (meV/Å), stress MAE (GPa),
moment MAE (μB) over vector components and over magnitudes, on the test part, beside the bare
backbone's zero-shot errors. CHGNet 0.3.0's own magnetic-moment prediction (magnitudes) on the
same test frames is the outside reference.

--quick (training capped at 48 frames, validation 8, test 32, all of at most 32 atoms; batch 8,
3 epochs) runs on the 2-core CPU machine; the default (whole parts, batch 64, up to 100 epochs)
is meant for a GPU.

--head collinear trains signed scalar moments (magnitudes signed along each frame's largest moment)
instead of vectors (the default).

    python bench/spin_fe.py --quick [--head vector|collinear] [-o bench/out/spin_fe]
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
RUNS = {"frozen + head": "zero_shot", "sparse + head": "sparse", "full + head": "full"}


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
    parser.add_argument("-o", "--output", default="bench/out/spin_fe")
    args = parser.parse_args()
    if not DATA.is_file():
        parser.error(f"real data not found at {DATA}")
    parts = stratified_split(ase.io.read(DATA, ":"))
    if args.quick:
        rng = np.random.default_rng(0)
        for role, cap in (("train", 48), ("valid", 8), ("test", 32)):
            small = [atoms for atoms in parts[role] if len(atoms) <= 32]
            parts[role] = [small[i] for i in sorted(rng.permutation(len(small))[:cap])]
    data = {role: read_potential_set(frames, forces=True, stress=True, magmoms=args.head, what=f"fe_spin {role}")
            for role, frames in parts.items()}
    print(", ".join(f"{len(v)} {k}" for k, v in data.items()) + " frames", flush=True)
    base_config = (FinetuneConfig(spin_head=args.head, batch_size=8, epochs=3, patience=3) if args.quick
                   else FinetuneConfig(spin_head=args.head))
    bare = load_backbone("sevennet", device=args.device)
    unlabelled = dataclasses.replace(data["test"], magmoms=None)  # the bare backbone predicts no moments
    zero_shot = evaluate(bare, [bare.graph(a) for a in unlabelled.frames], unlabelled, base_config.loss)
    print(f"  zero-shot (no head) E {zero_shot['energy_mae']:.2f} meV/atom  F {zero_shot['forces_mae']:.1f} meV/Å  "
          f"S {zero_shot['stress_mae']:.3f} GPa", flush=True)
    rows = []
    for label, method in RUNS.items():
        backbone = load_backbone("sevennet", device=args.device)
        tuner = Finetuner(backbone, dataclasses.replace(base_config, method=method))
        start = time.perf_counter()
        result = tuner.fit(data["train"], data["valid"], progress=False)
        tuner.export()
        metrics = evaluate(tuner.model, [backbone.graph(a) for a in data["test"].frames], data["test"],
                           base_config.loss)
        rows.append({"run": label, **metrics, "steps": result.steps, "seconds": time.perf_counter() - start,
                     "head_fraction": tuner.spin.parameter_fraction()})
        print(f"  {label:14s} E {metrics['energy_mae']:7.2f} meV/atom  F {metrics['forces_mae']:6.1f} meV/Å  "
              f"S {metrics['stress_mae']:.3f} GPa  m {metrics['magmoms_mae']:.3f} μB  "
              f"|m| {metrics['magmom_magnitude_mae']:.3f} μB  ({result.steps} steps)", flush=True)

    chgnet = load_calculator("chgnet", device=args.device).predict(data["test"].frames, batch_size=8)
    predicted = np.concatenate([np.abs(row["magmoms"]) for row in chgnet])
    reference = np.concatenate([np.linalg.norm(m, axis=-1) if m.ndim == 2 else np.abs(m) for m in data["test"].magmoms])
    chgnet_mae = float(np.mean(np.abs(predicted - reference)))
    report = {"quick": args.quick, "sizes": {k: len(v) for k, v in data.items()}, "rows": rows,
              "zero_shot_no_head": zero_shot,
              "chgnet_0.3.0_magnitude_mae": chgnet_mae, "config": dataclasses.asdict(base_config)}
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
    print(f"| CHGNet 0.3.0 (own magmoms) | – | – | – | – | {chgnet_mae:.3f} |")
    print(f"\nspin head parameters: {100 * rows[0]['head_fraction']:.2f} % of SevenNet-0's")


if __name__ == "__main__":
    main()
