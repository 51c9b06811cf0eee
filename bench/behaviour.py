"""Figures a refactor of the fine-tuning code must keep, printed the same way before and after it.

Every fine-tuning method on the shipped mlearn Si frames (6 to train, 2 to validate, the 6 test frames; batch 2,
6 steps, seed 0, one thread, float32 on the CPU): the moved fraction of path weights and the test energy,
force and stress MAE; then a collinear spin head on the shipped PBE iron orders (backbone frozen, 2 epochs)
and its E(AFM) − E(FM) on a 16-atom bcc cell at a = 2.83 Å; then a hub module with fusion over the composition
view on the shipped 2D-gap task (seed-0 split, 60 training structures, an adapter module of 2 epochs) and its
test MAE, fused and graph alone. Run it before a change and after; the printed digits must be equal, or the
difference explained. ``--json FILE`` also writes them; ``--parts`` runs some of them.

    OMP_NUM_THREADS=1 python bench/behaviour.py [--json before.json] [--parts methods spin fusion]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ase.io
import torch
from ase.build import bulk

ROOT = Path(__file__).resolve().parents[1]
SI_TRAIN, SI_TEST = ROOT / "data" / "mlip" / "mlearn_Si_training.extxyz", ROOT / "data" / "mlip" / "mlearn_Si_test.extxyz"
IRON = ROOT / "data" / "magnetic" / "fe_orders_pbe_training.extxyz"
GAP_TASK = "jarvis_2d_gap_tbmbj"
MATMINER = ROOT / "data" / "matminer"
METHODS = (("zero_shot", "L"), ("readout", "L"), ("full", "L"), ("lora", "L"), ("sparse", "L"), ("sparse", "H"))


def methods(folder: Path) -> dict[str, dict[str, float]]:
    from ase_moma.finetune import FinetuneConfig, SparseOptions, finetune_potential

    frames, test = ase.io.read(SI_TRAIN, ":"), ase.io.read(SI_TEST, ":")
    figures = {}
    for method, preset in METHODS:
        config = FinetuneConfig(method=method, options=SparseOptions(preset=preset) if method == "sparse" else None,
                                batch_size=2, epochs=100, patience=100, max_steps=6,
                                seed=0)
        record = finetune_potential("sevennet", frames[:6], frames[6:], folder / f"{method}-{preset}", config,
                                    test=test, device="cpu", progress=False)
        figures[f"{method}-{preset}" if method == "sparse" else method] = {
            "moved": record["path_weights_updated"]["fraction"], **record["metrics"]["test"]}
    return figures


def spin(folder: Path) -> dict[str, float]:
    from ase_moma import load_calculator
    from ase_moma.finetune import FinetuneConfig, finetune_potential

    frames = [atoms for atoms in ase.io.read(IRON, ":") if len(atoms) <= 32][:24]
    config = FinetuneConfig(method="zero_shot", epochs=2, batch_size=8, spin_head="collinear", head_lr=1e-2, seed=0)
    finetune_potential("sevennet", frames[:18], frames[18:], folder / "spin", config, device="cpu", progress=False)
    calc = load_calculator(str(folder / "spin"), device="cpu")
    energies = {}
    for order, signs in (("FM", [1, 1]), ("AFM", [1, -1])):
        atoms = bulk("Fe", "bcc", a=2.83, cubic=True).repeat((2, 2, 2))
        layer = (atoms.get_scaled_positions()[:, 2] * 4).round().astype(int) % 2
        atoms.set_initial_magnetic_moments([2.2 * signs[k] for k in layer])
        atoms.calc = calc
        energies[order] = atoms.get_potential_energy() / len(atoms)
    return {"E_AFM_minus_E_FM_meV_per_atom": 1000 * (energies["AFM"] - energies["FM"])}


def fusion(folder: Path) -> dict[str, float]:
    from ase_moma import load_backbone
    from ase_moma.hub import Hub, TrainConfig, train_module

    hub = Hub.create(folder / "hub", load_backbone("sevennet", device="cpu"))
    config = TrainConfig(kind="adapter", epochs=2, batch_size=16, hidden=32, max_train=60, seed=0,
                         modalities=("composition",))
    meta = train_module(hub, "gap", MATMINER / f"{GAP_TASK}.extxyz", "target", config=config,
                        split=MATMINER / "splits" / "seed0.json", task=GAP_TASK, unit="eV", device="cpu",
                        progress=False)
    graph = meta["fusion"].get("graph_metrics") or meta["metrics"]
    return {"kept": meta["fusion"]["kept"], "test_mae": meta["metrics"]["test_mae"],
            "graph_test_mae": graph["test_mae"],
            "epochs_run": [member["epochs_run"] for member in meta["fusion"]["members"]]}


PARTS = {"methods": methods, "spin": spin, "fusion": fusion}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        figures = {part: PARTS[part](Path(tmp)) for part in args.parts}
    for name, row in figures.get("methods", {}).items():
        print(f"{name:10s} moved {row['moved']:.6f}  E {row['energy_mae']:.4f} meV/atom  F {row['forces_mae']:.4f} "
              f"meV/Å  S {row['stress_mae']:.6f} GPa")
    if "spin" in figures:
        print(f"spin head: E(AFM) - E(FM) {figures['spin']['E_AFM_minus_E_FM_meV_per_atom']:.4f} meV/atom")
    if "fusion" in figures:
        row = figures["fusion"]
        print(f"fusion: kept {row['kept']}, test MAE {row['test_mae']:.6f} eV "
              f"(graph alone {row['graph_test_mae']:.6f}), "
              f"epochs run {row['epochs_run']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
