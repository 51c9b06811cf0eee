"""Compose a property model from a module hub (MoMa AMC), fine-tune it, and rank structures with it.

1. a hub: the one given with --hub, or a small SevenNet-0 hub trained here on subsets of the upstream
   tasks (perovskite formation energy and band gap, carbon energies);
2. compose for a held-out task (default: the 2D band gap of matminer's jarvis_2d_gap_opt, seed-0 split)
   and print each module's weight and kNN proxy MAE;
3. fine-tune the composed model with a fresh head, then rank the task's test structures by predicted
   value with the ASE calculator that ``load_calculator(OUT)`` returns.

    python examples/compose_and_rank.py [--hub HUB] [--task jarvis_2d_gap_opt] [-o OUT] [--n-train 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import ase.io
import numpy as np

from ase_moma import load_backbone, load_calculator
from ase_moma.compose import DOWNSTREAM, compose, finetune_composed
from ase_moma.hub import Hub, TrainConfig, train_module

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SMALL_HUB = [  # (module, upstream file, info key, unit)
    ("perov_heat_all", "perov_5.extxyz", "heat_all", "eV/atom"),
    ("perov_ind_gap", "perov_5.extxyz", "ind_gap", "eV"),
    ("carbon_energy_per_atom", "carbon_24.extxyz", "energy_per_atom", "eV/atom"),
]


def build_small_hub(path: Path, frames: int = 48, device: str = "auto") -> Hub:
    """A 3-module SevenNet-0 hub, each module trained for 2 epochs on ``frames`` structures."""
    hub = Hub.create(path, load_backbone("sevennet", device=device))
    config = TrainConfig(epochs=2, batch_size=8, max_train=frames, val_fraction=0.2, hidden=64, mode="demo")
    for name, file, key, unit in SMALL_HUB:
        subset = path.parent / f"{name}.extxyz"
        ase.io.write(subset, ase.io.read(DATA / "upstream" / file, f":{2 * frames}"))
        train_module(hub, name, subset, key, config=config, unit=unit, device=device, progress=False)
        print(f"hub    : trained {name} on {frames} structures: "
              f"val MAE {hub.read_module(name)['metrics']['val_mae']:.3g} {unit}")
    return hub


def compose_and_rank(hub: Hub, task: str, out: Path, n_train: int, epochs: int, device: str = "auto") -> None:
    """Compose for ``task`` (matminer, seed-0 split), fine-tune, and rank its test structures."""
    info = json.loads((DATA / "matminer" / "tasks.json").read_text())[task]
    data, split = DATA / "matminer" / info["file"], DATA / "matminer" / "splits" / "seed0.json"
    recipe = compose(hub, data, "target", out, split=split, task=task, n_train=n_train, unit=info["unit"],
                     device=device, overwrite=True, progress=False)
    timings = recipe["timings"]
    print(f"compose: {task} ({n_train} training structures), embedding {timings['embedding_s']:.1f} s, "
          f"kNN {timings['knn_s']:.3f} s, solver {timings['solver_s']:.3f} s")
    for module in recipe["modules"]:
        print(f"         {module['name']:24s} weight {module['weight']:.3f}   "
              f"proxy MAE {module['proxy_mae']:.3f} {info['unit']}")
    meta = finetune_composed(out, dataclasses.replace(DOWNSTREAM, epochs=epochs, batch_size=16),
                             device=device, progress=False)
    metrics = meta["metrics"]
    print(f"tune   : {meta['training']['epochs_run']} epochs, test MAE {metrics['test_mae']:.3f} {info['unit']} "
          f"(predicting the training mean: {metrics['test_mae_predict_mean']:.3f})")

    calc = load_calculator(str(out), device=device)
    test = [ase.io.read(data, index) for index in json.loads(split.read_text())[task]["test"]]
    predicted = np.array(calc.predict(test))
    print(f"rank   : {len(test)} test structures by predicted {task} ({info['unit']}), highest first:")
    for index in np.argsort(-predicted)[:5]:
        atoms = test[index]
        print(f"         {atoms.get_chemical_formula():16s} predicted {predicted[index]:7.3f}   "
              f"DFT {atoms.info['target']:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", help="an existing hub (default: build a small one in a temporary folder)")
    parser.add_argument("--task", default="jarvis_2d_gap_opt", help="a task of matminer/tasks.json")
    parser.add_argument("-o", "--output", help="folder for the composed model (default: temporary)")
    parser.add_argument("--n-train", type=int, default=60, help="few-shot training structures")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ase_moma_compose_") as tmp:
        hub = Hub(args.hub) if args.hub else build_small_hub(Path(tmp) / "hub", device=args.device)
        out = Path(args.output) if args.output else Path(tmp) / "composed"
        compose_and_rank(hub, args.task, out, args.n_train, args.epochs, args.device)
    if args.output:
        print(f"model and recipe in {out}; `ase-moma predict IN.extxyz --model {out} -o OUT.extxyz`")


if __name__ == "__main__":
    main()
