"""Compose a property model from a module hub (MoMa AMC), fine-tune it, and rank structures with it.

1. a hub: the one given with --hub, or a verified copy of the starter hub that ships with ase-moma
   (SevenNet-0 adapter modules for the upstream, matminer and mlearn tasks);
2. compose for a task (default: the 2D TB-mBJ band gap of matminer's jarvis_2d_gap_tbmbj, seed-0
   split, shipped in data/matminer; ``--data`` takes any folder laid out the same way, such as the
   full matminer benchmark with its ten tasks; the task's own starter module is left out) and print
   each module's weight and kNN proxy MAE;
3. fine-tune the composed model with a fresh head (starting from its ridge probe), then rank the
   task's test structures by predicted value with the ASE calculator that ``load_calculator(OUT)``
   returns.

    python examples/compose_and_rank.py [--hub HUB] [--data FOLDER] [--task jarvis_2d_gap_tbmbj] [-o OUT]
        [--n-train 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import ase.io
import numpy as np

from ase_moma import load_calculator
from ase_moma.compose import DOWNSTREAM, compose, finetune_composed
from ase_moma.hub import Hub
from ase_moma.hub.starter import write_starter_hub

DATA = Path(__file__).resolve().parents[1] / "data" / "matminer"  # the task shipped in the repository
def compose_and_rank(hub: Hub, task: str, out: Path, n_train: int, epochs: int, device: str = "auto",
                     folder: Path = DATA) -> None:
    """Compose for ``task`` (a task of ``folder``, laid out as data/matminer; seed-0 split), fine-tune, and
    rank its test structures."""
    info = json.loads((folder / "tasks.json").read_text())[task]
    data, split = folder / info["file"], folder / "splits" / "seed0.json"
    recipe = compose(hub, data, "target", out, split=split, task=task, n_train=n_train, unit=info["unit"],
                     device=device, overwrite=True, progress=False)
    timings = recipe["timings"]
    if recipe["excluded_same_task"]:
        print(f"compose: left out {', '.join(recipe['excluded_same_task'])} (trained on {task} itself)")
    print(f"compose: {task} ({n_train} training structures), embedding {timings['embedding_s']:.1f} s, "
          f"kNN {timings['knn_s']:.3f} s, solver {timings['solver_s']:.3f} s")
    for module in sorted(recipe["modules"], key=lambda m: -m["weight"])[:6]:
        print(f"         {module['name']:34s} weight {module['weight']:.3f}   "
              f"proxy MAE {module['proxy_mae']:.3f} {info['unit']}")
    meta = finetune_composed(out, dataclasses.replace(DOWNSTREAM, epochs=epochs, batch_size=16),
                             device=device, progress=False)
    metrics = meta["metrics"]
    kept = meta["composition"]["kept"]
    print(f"tune   : validation MAE {meta['training']['start_val_mae']:.3f} at the ridge probe the head starts "
          f"from, {metrics['val_mae']:.3f} kept: the {kept}"
          + (f" (epoch {meta['training']['best_epoch']})" if kept == "fine-tuned composition" else ""))
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
    parser.add_argument("--hub", help="an existing hub (default: a copy of the starter hub)")
    parser.add_argument("--data", type=Path, default=DATA, help="a folder laid out as data/matminer "
                        "(tasks.json, the task files, splits/seed0.json)")
    parser.add_argument("--task", default="jarvis_2d_gap_tbmbj", help="a task of DATA/tasks.json")
    parser.add_argument("-o", "--output", help="folder for the composed model (default: temporary)")
    parser.add_argument("--n-train", type=int, default=60, help="few-shot training structures")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ase_moma_compose_") as tmp:
        hub = Hub(args.hub) if args.hub else write_starter_hub(Path(tmp) / "hub")
        out = Path(args.output) if args.output else Path(tmp) / "composed"
        compose_and_rank(hub, args.task, out, args.n_train, args.epochs, args.device, args.data)
    if args.output:
        print(f"model and recipe in {out}; `ase-moma predict IN.extxyz --model {out} -o OUT.extxyz`")


if __name__ == "__main__":
    main()
