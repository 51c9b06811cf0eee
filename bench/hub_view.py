"""Each hub module's prediction of its own property, for every structure of a task: the ``hub`` view of
``bench/fusion.py`` (issue 53: knowledge from other tasks reaching a new one as one more view of the
fusion, whatever AMC's weights do).

For every property module of HUB (the starter hub: ``ase-moma hub starter HUB``) except the one trained on the
task itself, the module predicts its property for every structure of the task; the (N, K) predictions are
stored in the fusion cache beside the other views (``CACHE/<task>.npz``, keys ``hub`` and
``hub_present``, and ``hub_modules`` naming the columns). Tasks whose structures are the same, in the same
order (the three transport tasks of ``bench/unseen_tasks.py``), are predicted once.

    python bench/hub_view.py --hub HUB --data bench/out/unseen --cache bench/out/fusion_unseen
    python bench/fusion.py --data bench/out/unseen --cache bench/out/fusion_unseen --views composition structure hub
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np

from ase_moma.compose.embeddings import modules_in_turn
from ase_moma.hub import Hub
from ase_moma.labelled_set import structures_hash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="bench/fusion.py's cache of views")
    parser.add_argument("--tasks", nargs="+")
    args = parser.parse_args()
    tasks = json.loads((args.data / "tasks.json").read_text())
    names = args.tasks or [name for name in tasks if isinstance(tasks[name], dict) and "file" in tasks[name]]
    hub = Hub(args.hub)
    done: dict[tuple[str, tuple[str, ...]], tuple[np.ndarray, list[str]]] = {}
    for task in names:
        frames = ase.io.read(args.data / tasks[task]["file"], ":")
        modules = [entry["name"] for entry in hub.modules if entry.get("kind") != "delta" and entry["task"] != task]
        key = (structures_hash(frames), tuple(modules))
        if key not in done:
            start = time.perf_counter()
            done[key] = predictions(hub, modules, frames), modules
            print(f"{task}: {len(modules)} modules × {len(frames)} structures in {time.perf_counter() - start:.0f} s",
                  flush=True)
        path = args.cache / f"{task}.npz"
        stored = dict(np.load(path)) if path.is_file() else {}
        stored.update(hub=done[key][0], hub_present=np.ones(len(frames), dtype=bool), hub_modules=np.array(modules))
        np.savez(path, **stored)


def predictions(hub: Hub, modules: list[str], frames: list) -> np.ndarray:
    """(N, K) each module's prediction for every frame, the graphs built once, the backbone loaded once."""
    backbone = hub.load_backbone(device="cpu", dtype="float32")
    graphs = [backbone.graph(atoms) for atoms in frames]
    return np.stack([np.asarray(model.predict_graphs(graphs), dtype=np.float64)
                     for _, model in modules_in_turn(hub, modules, backbone)], axis=1)


if __name__ == "__main__":
    main()
