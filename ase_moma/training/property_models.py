"""Fitting a PropertyModel to one labelled task: hub modules and downstream fine-tuning of compositions.

Targets are normalised by the training mean and std; the loss is the Huber loss
(δ = 1) on normalised values; AdamW with one learning rate for the backbone or
adapters and one for the head. The loop — early stopping on validation MAE,
best weights restored, a checkpoint after every epoch — is the shared
:class:`~ase_moma.training.engine.TrainingEngine`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone
from ase_moma.heads import PropertyHead
from ase_moma.labelled_data import TaskData
from ase_moma.labelled_set import LabelledSet
from ase_moma.module_files import HEAD, TRAINED_KINDS, WEIGHTS
from ase_moma.probe import fit_ridge_probe
from ase_moma.property_model import READOUTS, PropertyModel
from ase_moma.training.engine import EngineResult, TrainingEngine
from ase_moma.training.losses import NormalisedHuber
from ase_moma.training.references import fit_reference_energies
from ase_moma.training.run_settings import RunSettings
from ase_moma.training.work_folder import WorkFolder

ENERGY_KEYS = ("energy_per_atom",)


@dataclass
class TrainConfig(RunSettings):
    """How a property model is trained.

    kind: ``"full"`` (every backbone weight moves) or ``"adapter"`` (only
    adapters and head). readout: ``"head"``, ``"energy_per_atom"`` or ``"auto"``
    (the backbone's energy head for keys in ENERGY_KEYS, else a property head).
    lr: backbone or adapter learning rate; head_lr: the head's. patience: epochs
    without a better validation MAE before stopping. max_train: subsample the
    training split to at most this many structures. mode: a label recorded in
    module.json (e.g. ``"quick"``). modalities: views read beside the graph
    (``("composition", "text")``, see :mod:`ase_moma.modalities`): after
    training, a fusion head over them is fitted on the frozen model and kept
    when it beats the graph model on validation.
    """

    kind: str = "full"
    readout: str = "auto"
    epochs: int = 40
    batch_size: int = 16
    lr: float = 5e-4
    head_lr: float = 1e-3
    patience: int = 8
    val_fraction: float = 0.1
    max_train: int | None = None
    hidden: int = 128
    mode: str = "custom"
    modalities: tuple[str, ...] = ()

    def check(self) -> None:
        if self.kind not in TRAINED_KINDS:
            raise ValueError(f"module kind must be one of {', '.join(TRAINED_KINDS)}, got {self.kind!r}")
        if self.readout not in (*READOUTS, "auto"):
            raise ValueError(f"readout must be one of {', '.join(READOUTS)} or 'auto', got {self.readout!r}")
        for field in ("epochs", "batch_size", "patience", "hidden"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1, got {getattr(self, field)}")
        if self.max_train is not None and self.max_train < 2:
            raise ValueError(f"max_train must be at least 2, got {self.max_train}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.modalities:
            from ase_moma.modalities.registry import parse_modalities

            self.modalities = parse_modalities(self.modalities)

    def resolved_readout(self, target: str) -> str:
        """The read-out for ``target``: ``readout`` unless it is ``"auto"``."""
        if self.readout != "auto":
            return self.readout
        return "energy_per_atom" if target in ENERGY_KEYS else "head"


def build_property_model(backbone: Backbone, config: TrainConfig, readout: str, train_graphs: list[Any],
                         train: LabelledSet, adapters: AdapterSet | None = None) -> PropertyModel:
    """A fresh read-out on ``backbone`` (its weights as they are) ready to train.

    adapters: start from these (e.g. merged ones) for an ``adapter`` model;
    None starts from identity adapters. The head is normalised by the training
    targets' mean and std and starts as the ridge probe on the starting model's
    pooled features (so the run's epoch-0 validation is the probe's, and the
    engine keeps it unless fine-tuning does better); an energy read-out fits
    per-element references first.
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
        counts = np.array([len(atoms) for atoms in train.frames])
        head = fit_reference_energies(backbone, train_graphs, train.frames, train.targets * counts).to(backbone.device)
    model = PropertyModel(backbone, readout, head=head, adapters=adapters if config.kind == "adapter" else None)
    if readout == "head":  # LP-FT: the head starts as the ridge probe of the features training starts from
        head.start_from_probe(fit_ridge_probe(backbone.embed_graphs(train_graphs).double().numpy(), train.targets))
    model.eval()  # no dropout or batch statistics in any backbone: train in eval mode
    backbone.model.requires_grad_(config.kind == "full")
    return model


def fit(model: PropertyModel, config: TrainConfig, train_graphs: Sequence[Any], train: LabelledSet,
        val_graphs: Sequence[Any], val: LabelledSet, work: WorkFolder | None, *,
        progress: bool = True, desc: str = "train", to_beat: float | None = None) -> EngineResult:
    """Train ``model`` in place; on return it holds the weights with the best validation MAE.

    work: the run's checkpoint folder and hash; a checkpoint there with the same run hash (a digest of
    everything that defines the run) is resumed from (None: no checkpoints). to_beat: another model's validation
    MAE; the run stops after the schedule's grace epochs (GRACE) that have not beaten it.
    """
    loss = NormalisedHuber(float(train.targets.mean()), float(train.targets.std()))
    groups = _parameter_groups(model, config)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    targets = torch.tensor(train.targets, dtype=torch.float64, device=model.backbone.device)
    engine = TrainingEngine(
        tensors={f"{gi}.{pi}": p for gi, group in enumerate(groups) for pi, p in enumerate(group["params"])},
        optimizer=optimizer, schedule=config.schedule(to_beat=to_beat),
        score="val_mae", work=work, progress=progress, desc=desc)
    return engine.run(
        len(train_graphs),
        lambda rows: loss(model.normalised([train_graphs[i] for i in rows], loss.mean, loss.std), targets[rows]),
        lambda: {"val_mae": float(np.mean(np.abs(model.predict_graphs(val_graphs) - val.targets)))})


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
                  parts: dict[str, tuple[Sequence[Any], LabelledSet]], result: EngineResult, *, task: str,
                  unit: str, source: str, data_hashes: dict[str, str]) -> dict[str, Any]:
    """The module.json content of a trained model: task, read-out, sizes, metrics, training, data.

    parts: the graphs of every split (:meth:`TaskData.graphs`); val and test
    are evaluated. source: where the data came from; data_hashes: the splits'
    ``train_hash`` and ``val_hash``, as the caller computed them for its run hash.
    """
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
                         stopped_early=result.stopped_early, gave_up=result.gave_up,
                         best_epoch=result.best_epoch,
                         resumed_from=result.resumed_from,
                         start_val_mae=result.history[0]["val_mae"],
                         val_mae_by_epoch=[row["val_mae"] for row in result.history]),
        "data": {"source": source, "split": task_data.split_source, **data_hashes},
        "build_mode": config.mode,
    }


def trained_module_files(model: PropertyModel, config: TrainConfig, meta: dict[str, Any],
                         parts: dict[str, tuple[Sequence[Any], LabelledSet]],
                         work: WorkFolder | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The safetensors files of a trained module (:func:`model_tensors`), with a fusion head over
    ``config.modalities`` fitted and recorded in ``meta`` when any are asked for; its members checkpoint
    in the model's ``work`` folder (see :func:`~ase_moma.modalities.fusion_training.fit_fusion`)."""
    tensors = model_tensors(model, config.kind)
    if config.modalities:
        from ase_moma.modalities.fusion_training import FusionConfig, add_fusion

        add_fusion(meta, tensors, model, config.modalities, parts, FusionConfig(seed=config.seed), work)
    return tensors


def model_tensors(model: PropertyModel, kind: str) -> dict[str, dict[str, torch.Tensor]]:
    """``{"weights.safetensors": backbone or adapter state, "head.safetensors": head state}``."""
    body = model.model if kind == "full" else model.adapters.adapters
    return {WEIGHTS: {k: v.float() if v.is_floating_point() else v for k, v in body.state_dict().items()},
            HEAD: dict(model.head.state_dict())}


def _parameter_groups(model: PropertyModel, config: TrainConfig) -> list[dict[str, Any]]:
    body = model.model if config.kind == "full" else model.adapters
    groups = [{"params": [p for p in body.parameters() if p.requires_grad], "lr": config.lr}]
    head_parameters = list(model.head.parameters())
    if head_parameters:
        groups.append({"params": head_parameters, "lr": config.head_lr})
    return groups
