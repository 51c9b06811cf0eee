"""The starter hub's matminer modules against the ridge probe on the plain backbone, same training structures.

For every module of the starter hub trained on a shared matminer task: rebuild the exact training set it
recorded (the split, seed and ``max_train`` of its module.json; the sha256 of the rebuilt set must equal the
recorded ``train_hash``), fit the ridge probe on the plain backbone's frozen mean-pooled features of those
structures, and print the test MAE of the module (recomputed here), of the probe and of predicting the
training mean. This is issue 13's rule "a property model is never worse than the probe" for hub module
training.

    python bench/starter_vs_probe.py [-o bench/out/starter_vs_probe.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from ase_moma.hub.starter import write_starter_hub
from ase_moma.labelled_data import load_task_data
from ase_moma.probe import fit_ridge_probe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "matminer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="bench/out/starter_vs_probe.json")
    args = parser.parse_args()
    tasks = json.loads((DATA / "tasks.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        hub = write_starter_hub(Path(scratch) / "starter")
        plain = hub.load_backbone(device="cpu")
        print("| module | n_train | module test MAE | plain probe test MAE | mean-pred | unit |")
        print("|---|---|---|---|---|---|")
        for entry in hub.modules:
            if entry["task"] not in tasks:
                continue
            meta = hub.read_module(entry["name"])
            rows.append(compare(hub, plain, meta, tasks[meta["task"]]))
            row = rows[-1]
            print(f"| {row['module']} | {row['n_train']} | {row['module_test_mae']:.4g} | "
                  f"{row['probe_test_mae']:.4g} | {row['mean_test_mae']:.4g} | {row['unit']} |", flush=True)
    wins = sum(r["module_test_mae"] <= r["probe_test_mae"] for r in rows)
    print(f"\nmodule at or below the plain-backbone probe on {wins} of {len(rows)} tasks")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=1))


def compare(hub, plain, meta: dict, info: dict) -> dict:
    """Test MAE of one module, of the plain probe on its training structures, and of the training mean."""
    training = meta["training"]
    data = load_task_data(DATA / info["file"], meta["target"], DATA / "splits" / "seed0.json", meta["task"],
                          val_fraction=training["val_fraction"], seed=training["seed"],
                          max_train=training["max_train"])
    if data.train.data_hash() != meta["data"]["train_hash"]:
        raise RuntimeError(f"{meta['name']}: the rebuilt training set differs from the one the module recorded")
    features = {part: plain.embed(subset.frames).double().numpy() for part, subset in
                (("train", data.train), ("test", data.test))}
    probe = fit_ridge_probe(features["train"], data.train.targets)
    module = hub.load_module(meta["name"], device="cpu", backbone=hub.load_backbone(device="cpu"))
    targets = data.test.targets
    return {"module": meta["name"], "task": meta["task"], "n_train": len(data.train), "unit": meta["unit"],
            "module_test_mae": float(np.mean(np.abs(module.predict(data.test.frames) - targets))),
            "probe_test_mae": float(np.mean(np.abs(probe.predict(features["test"]) - targets))),
            "probe_alpha": probe.alpha,
            "mean_test_mae": float(np.mean(np.abs(targets - data.train.targets.mean())))}


if __name__ == "__main__":
    main()
