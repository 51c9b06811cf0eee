"""Fitting a PropertyModel to one labelled task: the loop behind hub modules and downstream fine-tuning.

Targets are normalised by the training mean and std; the loss is the Huber loss
(δ = 1) on normalised values; AdamW with one learning rate for the backbone or
adapters and one for the head; early stopping on validation MAE with the best
weights restored. A checkpoint after every epoch lets an interrupted run resume.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone
from ase_moma.module_files import HEAD, WEIGHTS
from ase_moma.resume import load_checkpoint, save_checkpoint
from ase_moma.heads import EnergyReference, PropertyHead
from ase_moma.labelled_data import LabelledSet, TaskData
from ase_moma.property_model import KINDS, READOUTS, PropertyModel

ENERGY_KEYS = ("energy_per_atom",)


@dataclass
class TrainConfig:
    """How a property model is trained.

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
        if self.max_train is not None and self.max_train < 2:
            raise ValueError(f"max_train must be at least 2, got {self.max_train}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")

    def resolved_readout(self, target: str) -> str:
        """The read-out for ``target``: ``readout`` unless it is ``"auto"``."""
        if self.readout != "auto":
            return self.readout
        return "energy_per_atom" if target in ENERGY_KEYS else "head"


@dataclass
class FitResult:
    """epochs_run: epochs trained in all (resumed ones included); best_val_mae in target units."""

    epochs_run: int
    stopped_early: bool
    best_val_mae: float


def build_property_model(backbone: Backbone, config: TrainConfig, readout: str, train_graphs: list[Any],
                         train: LabelledSet, adapters: AdapterSet | None = None) -> PropertyModel:
    """A fresh read-out on ``backbone`` (its weights as they are) ready to train.

    adapters: start from these (e.g. merged ones) for an ``adapter`` model;
    None starts from identity adapters. The head is normalised by the training
    targets' mean and std; an energy read-out fits per-element references first.
    """
    torch.manual_seed(config.seed)  # adapters and head start from seeded random weights
    if config.kind == "adapter" and adapters is None:
        adapters = AdapterSet.for_backbone(backbone)
    mean, std = float(train.targets.mean()), float(train.targets.std())
    if readout == "head":
        with torch.no_grad():
            width = backbone.node_features(backbone.collate(train_graphs[:1])).invariant.shape[1]
        head = PropertyHead(width, config.hidden, mean, std).to(device=backbone.device, dtype=backbone.dtype)
    else:
        head = _fitted_reference(backbone, train_graphs, train).to(backbone.device)
    model = PropertyModel(backbone, readout, head=head, adapters=adapters if config.kind == "adapter" else None)
    model.eval()  # no dropout or batch statistics in any backbone: train in eval mode
    backbone.model.requires_grad_(config.kind == "full")
    return model


def fit(model: PropertyModel, config: TrainConfig, train_graphs: Sequence[Any], train: LabelledSet,
        val_graphs: Sequence[Any], val: LabelledSet, work: Path, run_hash: str, *,
        progress: bool = True, desc: str = "train") -> FitResult:
    """Train ``model`` in place; on return it holds the weights with the best validation MAE.

    work: checkpoint folder; a checkpoint there with the same ``run_hash``
    (a digest of everything that defines the run) is resumed from.
    """
    mean, std = float(train.targets.mean()), float(train.targets.std())
    if not std > 0:
        raise ValueError(f"target {train.key!r} is constant over the training split ({mean}); nothing to learn")
    groups = _parameter_groups(model, config)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    trainable = {f"{gi}.{pi}": p for gi, group in enumerate(groups) for pi, p in enumerate(group["params"])}

    start_epoch, best_mae, bad_epochs = 0, math.inf, 0
    best = {k: p.detach().clone() for k, p in trainable.items()}
    resumed = load_checkpoint(work, run_hash)
    if resumed is not None:
        record, current, best, optim_state = resumed
        _assign(trainable, current)
        optimizer.load_state_dict(optim_state)
        start_epoch, best_mae, bad_epochs = record["epoch"], record["best_val_mae"], record["bad_epochs"]

    device = model.backbone.device
    train_targets = torch.tensor(train.targets, dtype=torch.float64, device=device)
    n_batches = math.ceil(len(train_graphs) / config.batch_size)
    bar = tqdm(total=config.epochs * n_batches, initial=start_epoch * n_batches, disable=not progress,
               unit="batch", desc=desc)
    epoch = start_epoch
    while epoch < config.epochs and bad_epochs < config.patience:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_graphs))
        for begin in range(0, len(order), config.batch_size):
            rows = order[begin:begin + config.batch_size].tolist()
            prediction = model.normalised([train_graphs[i] for i in rows], mean, std).double()
            loss = torch.nn.functional.huber_loss(prediction, (train_targets[rows] - mean) / std)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
        epoch += 1
        val_mae = float(np.mean(np.abs(model.predict_graphs(val_graphs) - val.targets)))
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
    return FitResult(epoch, bad_epochs >= config.patience, best_mae)


def evaluate(model: PropertyModel, parts: dict[str, tuple[Sequence[Any], LabelledSet]],
             train_mean: float) -> dict[str, float]:
    """``{part}_mae``, ``{part}_rmse`` and ``{part}_mae_predict_mean`` for each named split."""
    metrics: dict[str, float] = {}
    for part, (graphs, subset) in parts.items():
        error = model.predict_graphs(graphs) - subset.targets
        metrics[f"{part}_mae"] = float(np.mean(np.abs(error)))
        metrics[f"{part}_rmse"] = float(np.sqrt(np.mean(error ** 2)))
        metrics[f"{part}_mae_predict_mean"] = float(np.mean(np.abs(subset.targets - train_mean)))
    return metrics


def module_record(model: PropertyModel, config: TrainConfig, task_data: TaskData,
                  parts: dict[str, tuple[Sequence[Any], LabelledSet]], result: FitResult, *, task: str,
                  unit: str, source: str, data_hashes: dict[str, str]) -> dict[str, Any]:
    """The module.json content of a trained model: task, read-out, sizes, metrics, training, data.

    parts: the graphs of every split (:meth:`TaskData.graphs`); val and test
    are evaluated. source: where the data came from; data_hashes: the splits'
    ``train_hash`` and ``val_hash``, as the caller computed them for its run hash.
    """
    from ase_moma import __version__

    train = task_data.train
    mean, std = float(train.targets.mean()), float(train.targets.std())
    return {
        "task": task, "target": train.key, "unit": unit, "kind": config.kind,
        "readout": model.readout, "head": model.head.config(),
        "n_train": len(train), "n_val": len(task_data.val),
        "n_test": len(task_data.test) if task_data.test else 0,
        "normalisation": {"mean": mean, "std": std},
        "metrics": {"train_target_std": std,
                    **evaluate(model, {k: v for k, v in parts.items() if k != "train"}, mean)},
        "training": dict(dataclasses.asdict(config), epochs_run=result.epochs_run,
                         stopped_early=result.stopped_early),
        "data": {"source": source, "split": task_data.split_source, **data_hashes},
        "build_mode": config.mode, "created_by": f"ase-moma {__version__}",
    }


def model_tensors(model: PropertyModel, kind: str) -> dict[str, dict[str, torch.Tensor]]:
    """``{"weights.safetensors": backbone or adapter state, "head.safetensors": head state}``."""
    body = model.model if kind == "full" else model.adapters.adapters
    return {WEIGHTS: {k: v.float() if v.is_floating_point() else v for k, v in body.state_dict().items()},
            HEAD: dict(model.head.state_dict())}


def _fitted_reference(backbone: Backbone, graphs: list[Any], train: LabelledSet) -> EnergyReference:
    """Per-element reference energies that best bridge the backbone's energies and the targets."""
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
