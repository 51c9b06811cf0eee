"""Training checkpoints in safetensors + JSON, so an interrupted training run can resume.

A checkpoint holds the trained tensors as they are and as they were at the best
validation score so far, the optimiser's state, and a JSON record (epoch, steps,
best score, patience counter, history, and the hash of everything that defines
the run). It is written atomically after every epoch; a run that finds a record
with another run hash starts afresh instead of mixing runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ase_moma.atomic_io import atomic_directory
from ase_moma.module_files import load_tensors, read_json, save_tensors, write_json

STATE = "state.json"
TENSORS = "tensors.safetensors"


def save_checkpoint(folder: Path, record: dict[str, Any], current: dict[str, torch.Tensor],
                    best: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None) -> None:
    """Replace the checkpoint in ``folder`` with this one, atomically."""
    tensors = {f"current/{k}": v for k, v in current.items()}
    tensors.update({f"best/{k}": v for k, v in best.items()})
    groups = None
    if optimizer is not None:
        optim = optimizer.state_dict()
        for index, state in optim["state"].items():
            for key, value in state.items():
                tensors[f"optim/{index}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        groups = json.loads(json.dumps(optim["param_groups"]))
    with atomic_directory(folder, overwrite=True) as tmp:
        save_tensors(tmp / TENSORS, tensors)
        write_json(tmp / STATE, dict(record, param_groups=groups))


def load_checkpoint(folder: Path, run_hash: str) -> tuple[dict[str, Any], dict, dict, dict | None] | None:
    """(record, current, best, optimizer state dict or None) of a matching checkpoint, else None."""
    if not (folder / STATE).is_file():
        return None
    record = read_json(folder / STATE, "training checkpoint")
    if record.get("run_hash") != run_hash:
        return None
    tensors = load_tensors(folder / TENSORS)
    current = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("current/")}
    best = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("best/")}
    groups = record.pop("param_groups")
    if groups is None:
        return record, current, best, None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    return record, current, best, {"state": state, "param_groups": groups}
