"""Training one hub module: a backbone (all weights or adapters) plus a read-out, on one task.

Targets are normalised by the training mean and std; the loss is the Huber loss
(δ = 1) on normalised values; AdamW with one learning rate for the backbone or
adapters and one for the head; early stopping on validation MAE with the best
weights restored. A checkpoint after every epoch lets an interrupted run resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone
from ase_moma.heads import EnergyReference, PropertyHead
from ase_moma.hub.checkpoint import load_checkpoint, save_checkpoint
from ase_moma.hub.files import HEAD, WEIGHTS
from ase_moma.hub.store import KINDS, Hub, check_module_name
from ase_moma.labelled_data import LabelledSet, random_split, read_labelled, read_split
from ase_moma.property_model import READOUTS, PropertyModel

ENERGY_KEYS = ("energy_per_atom",)


@dataclass
class TrainConfig:
    """How a module is trained.

    kind: ``"full"`` (every backbone weight moves) or ``"adapter"`` (only
    adapters and head). readout: ``"head"``, ``"energy_per_atom"`` or ``"auto"``
    (the backbone's energy head for keys in ENERGY_KEYS, else a property head).
    lr: backbone or adapter learning rate; head_lr: the head's. patience: epochs
    without a better validation MAE before stopping. max_train: subsample the
    training split to at most this many structures. mode: a label recorded in
    module.json (e.g. ``"quick"``).
    """

    kind: str = "full"
    readout: str = "auto"
    epochs: int = 40
    batch_size: int = 16
    lr: float = 5e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 8
    val_fraction: float = 0.1
    seed: int = 0
    max_train: int | None = None
    hidden: int = 128
    mode: str = "custom"

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"module kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.readout not in (*READOUTS, "auto"):
            raise ValueError(f"readout must be one of {', '.join(READOUTS)} or 'auto', got {self.readout!r}")
        for field in ("epochs", "batch_size", "patience", "hidden"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1, got {getattr(self, field)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")


@dataclass
class TaskData:
    """The labelled splits of one task (``test`` may be empty)."""

    train: LabelledSet
    val: LabelledSet
    test: LabelledSet | None
    split_source: str


def load_task_data(data: str | Path, target: str, config: TrainConfig, split: str | Path | None = None,
                   task: str | None = None) -> TaskData:
    """Read the frames and split them: by a split file when given, else at random (seeded)."""
    if split is not None:
        parts = read_split(split, task or Path(data).stem)
        wanted = sorted(set().union(*parts.values()))
        labelled = read_labelled(data, target, wanted)
        where = {index: row for row, index in enumerate(labelled.indices)}
        sets = {part: labelled.subset([where[i] for i in indices]) for part, indices in parts.items()}
        split_source = str(split)
    else:
        labelled = read_labelled(data, target)
        parts = random_split(len(labelled), config.val_fraction, config.seed)
        sets = {part: labelled.subset(rows) for part, rows in parts.items()}
        split_source = f"random (val_fraction={config.val_fraction}, seed={config.seed})"
    train = sets["train"]
    if config.max_train is not None and len(train) > config.max_train:
        keep = np.random.default_rng(config.seed).choice(len(train), config.max_train, replace=False)
        train = train.subset(sorted(keep.tolist()))
    for part, subset in (("train", train), ("val", sets["val"])):
        if len(subset) == 0:
            raise ValueError(f"the {part} split of {data} is empty")
    return TaskData(train, sets["val"], sets.get("test"), split_source)


def build_graphs(backbone: Backbone, labelled: LabelledSet) -> list[Any]:
    """Graphs of every frame; an error names the frame's index in its file."""
    graphs = []
    for atoms, index in zip(labelled.frames, labelled.indices):
        try:
            graphs.append(backbone.graph(atoms))
        except (ValueError, TypeError) as error:
            raise type(error)(f"{labelled.source}: frame {index}: {error}") from None
    return graphs


def train_module(hub: Hub | str | Path, name: str, data: str | Path, target: str, *,
                 config: TrainConfig | None = None, split: str | Path | None = None,
                 task: str | None = None, unit: str = "", device: str = "auto",
                 overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the hub's backbone on ``atoms.info[target]`` of ``data``; write module ``name``.

    split/task: a split file (``{task: {"train", "val", "test"}}``) and the task
    in it (default: the data file's stem); without one, a random split. Every
    frame is checked before training starts and nothing is written on error. An
    interrupted run leaves a checkpoint in ``HUB/.work/<name>/`` and the same call
    resumes from it. Returns the module's metadata as written to module.json.
    """
    from ase_moma import __version__

    config = config or TrainConfig()
    config.check()
    hub = hub if isinstance(hub, Hub) else Hub(hub)
    check_module_name(name)
    if name in hub.names() and not overwrite:
        raise FileExistsError(f"hub {hub.path} already has a module {name!r} (pass overwrite to replace it)")
    task_data = load_task_data(data, target, config, split, task)
    backbone = hub.load_backbone(device=device, dtype="float32")
    graphs = {part: build_graphs(backbone, subset) for part, subset in
              (("train", task_data.train), ("val", task_data.val), ("test", task_data.test)) if subset}
    readout = config.readout if config.readout != "auto" else (
        "energy_per_atom" if target in ENERGY_KEYS else "head")
    mean, std = float(task_data.train.targets.mean()), float(task_data.train.targets.std())
    if not std > 0:
        raise ValueError(f"target {target!r} is constant over the training split ({mean}); nothing to learn")

    model = _build_model(backbone, config, readout, mean, std, graphs["train"], task_data.train)
    groups = _parameter_groups(model, config)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    trainable = {f"{gi}.{pi}": p for gi, group in enumerate(groups) for pi, p in enumerate(group["params"])}
    data_hashes = {"train_hash": task_data.train.data_hash(), "val_hash": task_data.val.data_hash()}
    run_hash = _run_hash(hub, name, target, config, readout, data_hashes)
    work = hub.path / ".work" / name

    start_epoch, best_mae, bad_epochs = 0, math.inf, 0
    best = {k: p.detach().clone() for k, p in trainable.items()}
    resumed = load_checkpoint(work, run_hash)
    if resumed is not None:
        record, current, best, optim_state = resumed
        _assign(trainable, current)
        optimizer.load_state_dict(optim_state)
        start_epoch, best_mae, bad_epochs = record["epoch"], record["best_val_mae"], record["bad_epochs"]

    train_targets = torch.tensor(task_data.train.targets, dtype=torch.float64, device=backbone.device)
    n_batches = math.ceil(len(graphs["train"]) / config.batch_size)
    bar = tqdm(total=config.epochs * n_batches, initial=start_epoch * n_batches, disable=not progress,
               unit="batch", desc=f"train {name}")
    epoch = start_epoch
    while epoch < config.epochs and bad_epochs < config.patience:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(graphs["train"]))
        for begin in range(0, len(order), config.batch_size):
            rows = order[begin:begin + config.batch_size].tolist()
            prediction = model.normalised([graphs["train"][i] for i in rows], mean, std).double()
            loss = torch.nn.functional.huber_loss(prediction, (train_targets[rows] - mean) / std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
        epoch += 1
        val_mae = float(np.mean(np.abs(model.predict_graphs(graphs["val"]) - task_data.val.targets)))
        if val_mae < best_mae:
            best_mae, bad_epochs = val_mae, 0
            best = {k: p.detach().clone() for k, p in trainable.items()}
        else:
            bad_epochs += 1
        bar.set_postfix(epoch=epoch, val_mae=f"{val_mae:.4g}", best=f"{best_mae:.4g}")
        save_checkpoint(work, {"run_hash": run_hash, "epoch": epoch, "best_val_mae": best_mae,
                               "bad_epochs": bad_epochs}, trainable, best, optimizer)
    bar.close()
    _assign(trainable, best)

    metrics = _metrics(model, graphs, task_data, mean)
    meta = {
        "task": task or Path(data).stem, "target": target, "unit": unit, "kind": config.kind,
        "readout": readout, "head": model.head.config(),
        "n_train": len(task_data.train), "n_val": len(task_data.val),
        "n_test": len(task_data.test) if task_data.test else 0,
        "normalisation": {"mean": mean, "std": std}, "metrics": metrics,
        "training": dict(dataclasses.asdict(config), epochs_run=epoch, stopped_early=bad_epochs >= config.patience),
        "data": {"source": str(data), "split": task_data.split_source,
                 **data_hashes},
        "build_mode": config.mode, "created_by": f"ase-moma {__version__}",
    }
    hub.write_module(name, meta, _module_tensors(model, config.kind), overwrite=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    return hub.read_module(name)


def _build_model(backbone: Backbone, config: TrainConfig, readout: str, mean: float, std: float,
                 graphs: list[Any], train: LabelledSet) -> PropertyModel:
    torch.manual_seed(config.seed)  # adapters and head start from seeded random weights
    adapters = AdapterSet.for_backbone(backbone) if config.kind == "adapter" else None
    if readout == "head":
        with torch.no_grad():
            width = backbone.node_features(backbone.collate(graphs[:1])).invariant.shape[1]
        head = PropertyHead(width, config.hidden, mean, std).to(device=backbone.device, dtype=backbone.dtype)
    else:
        head = _fitted_reference(backbone, graphs, train).to(backbone.device)
    model = PropertyModel(backbone, readout, head=head, adapters=adapters)
    model.eval()  # no dropout or batch statistics in any backbone: train in eval mode
    backbone.model.requires_grad_(config.kind == "full")
    return model


def _fitted_reference(backbone: Backbone, graphs: list[Any], train: LabelledSet) -> EnergyReference:
    """Per-element reference energies that best bridge the pretrained energies and the targets."""
    with torch.no_grad():
        energies = torch.cat([backbone.energy(backbone.collate(graphs[start:start + 32])).double().cpu()
                              for start in range(0, len(graphs), 32)])
    counts = torch.tensor([len(atoms) for atoms in train.frames], dtype=torch.float64)
    compositions = [dict(zip(*np.unique(atoms.numbers, return_counts=True))) for atoms in train.frames]
    reference = EnergyReference()
    reference.fit([{int(z): int(n) for z, n in c.items()} for c in compositions],
                  torch.tensor(train.targets) * counts - energies)
    return reference


def _parameter_groups(model: PropertyModel, config: TrainConfig) -> list[dict[str, Any]]:
    body = model.model if config.kind == "full" else model.adapters
    groups = [{"params": [p for p in body.parameters() if p.requires_grad], "lr": config.lr}]
    head_parameters = list(model.head.parameters())
    if head_parameters:
        groups.append({"params": head_parameters, "lr": config.head_lr})
    return groups


def _assign(trainable: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    if trainable.keys() != values.keys():
        raise ValueError("the checkpoint does not match the model being trained")
    with torch.no_grad():
        for key, param in trainable.items():
            param.copy_(values[key])


def _run_hash(hub: Hub, name: str, target: str, config: TrainConfig, readout: str,
              data_hashes: dict[str, str]) -> str:
    content = json.dumps({"hub": hub.backbone["fingerprint"], "name": name, "target": target,
                          "readout": readout, "config": dataclasses.asdict(config), **data_hashes},
                         sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()


def _metrics(model: PropertyModel, graphs: dict[str, list], task_data: TaskData,
             mean: float) -> dict[str, float]:
    metrics: dict[str, float] = {"train_target_std": float(task_data.train.targets.std())}
    for part, subset in (("val", task_data.val), ("test", task_data.test)):
        if subset is None or part not in graphs:
            continue
        error = model.predict_graphs(graphs[part]) - subset.targets
        metrics[f"{part}_mae"] = float(np.mean(np.abs(error)))
        metrics[f"{part}_rmse"] = float(np.sqrt(np.mean(error ** 2)))
        metrics[f"{part}_mae_predict_mean"] = float(np.mean(np.abs(subset.targets - mean)))
    return metrics


def _module_tensors(model: PropertyModel, kind: str) -> dict[str, dict[str, torch.Tensor]]:
    body = model.model if kind == "full" else model.adapters.adapters
    return {WEIGHTS: {k: v.float() if v.is_floating_point() else v for k, v in body.state_dict().items()},
            HEAD: dict(model.head.state_dict())}
