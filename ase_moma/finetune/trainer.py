"""One trainer for every way of adapting a potential to new DFT data (DESIGN §6).

Methods: ``zero_shot`` (no training), ``readout`` (the read-out layers only),
``full`` (every weight), ``lora`` (low-rank increments on the path weights) and
``sparse`` (STR increments on the path weights). All use schedule-free AdamW,
the Huber loss of :mod:`ase_moma.finetune.loss`, mini-batches of seeded order
and early stopping on the validation loss (the best weights are kept). Before
training, the per-element reference energies can be refitted to the training
energies by least squares (a different DFT set-up shifts them). A spin head
(:mod:`ase_moma.finetune.spin`) can ride on any method: it always trains
densely, beside whatever the method moves (with ``zero_shot``, the backbone
stays frozen and only the head trains).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ase_moma.backbone import Backbone
from ase_moma.finetune.delta import Delta, apply_delta, state_delta
from ase_moma.finetune.increments import IncrementSet
from ase_moma.finetune.lora import ALPHA, RANK
from ase_moma.finetune.loss import LossWeights, batch_labels, evaluate, potential_loss
from ase_moma.finetune.potential_data import PotentialSet
from ase_moma.finetune.spin import SPIN_KINDS
from ase_moma.finetune.spin_model import SpinBackbone
from ase_moma.heads import EnergyReference

METHODS = ("zero_shot", "readout", "full", "lora", "sparse")
PRESETS = {"L": 0.01, "H": 0.3}  # λ_τ, the threshold's weight decay: accurate (L) or sparse (H)
SPIN_LOSS = LossWeights(energy=1.0, forces=1.0, stress=1.0, magmoms=1.0)


@dataclass
class FinetuneConfig:
    """How a potential is adapted.

    method: one of METHODS. preset: ``"L"`` or ``"H"``, the sparse method's
    threshold decay λ_τ (``tau_decay`` overrides it). lr, weight_decay: of the
    trained weights (ΔW, LoRA factors, or the model's own); tau_lr: of the
    thresholds τ (default ``lr``). epochs, patience: early stopping on the
    validation loss, checked once per epoch. max_steps: stop after this many
    optimiser steps in all (short runs). refit_references: refit the
    per-element reference energies to the training energies before training.
    rank, alpha: LoRA's. seed: of the increments' initialisation and the batch order.
    spin_head: ``"vector"``, ``"collinear"`` or None; head_lr: its learning rate.
    loss: the loss weights; default 1:10:100 (energy, forces, stress), or
    1:1:1:1 with moments when a spin head is trained.
    """

    method: str = "sparse"
    preset: str = "L"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-8
    tau_lr: float | None = None
    tau_decay: float | None = None
    patience: int = 10
    max_steps: int | None = None
    warmup_steps: int = 0
    refit_references: bool = True
    rank: int = RANK
    alpha: float = ALPHA
    seed: int = 0
    spin_head: str | None = None
    head_lr: float = 1e-3
    loss: LossWeights | None = None

    def __post_init__(self) -> None:
        if self.loss is None:
            self.loss = SPIN_LOSS if self.spin_head else LossWeights()

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fine-tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown sparsity preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("epochs", "batch_size", "patience", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.spin_head is not None and self.spin_head not in SPIN_KINDS:
            raise ValueError(f"spin head must be one of {', '.join(SPIN_KINDS)}, got {self.spin_head!r}")
        if not self.lr > 0 or (self.tau_lr is not None and not self.tau_lr > 0):
            raise ValueError("learning rates must be positive")
        self.loss.check()

    def threshold_decay(self) -> float:
        """λ_τ: ``tau_decay`` if set, else the preset's."""
        return self.tau_decay if self.tau_decay is not None else PRESETS[self.preset]


@dataclass
class FinetuneResult:
    """What a run did. history: per epoch, the mean training loss and the validation metrics.
    step_seconds: mean wall time of a training step (forward, backward, update), the first excluded."""

    method: str
    epochs_run: int
    steps: int
    stopped_early: bool
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, Any]]
    reference_shifts: dict[int, float]
    thresholds: dict[str, float]
    step_seconds: float


class Finetuner:
    """Adapts ``backbone`` in place: :meth:`fit`, then :meth:`export` for the plain tuned model.

    Between the two, a ``sparse`` or ``lora`` backbone computes with its
    path weights parametrised as W + increment (the in-training model).
    With a spin head, ``spin`` is the backbone with the head attached.
    """

    def __init__(self, backbone: Backbone, config: FinetuneConfig) -> None:
        config.check()
        self.backbone = backbone
        self.config = config
        self.base_state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
        self.increments: IncrementSet | None = None
        self.reference_shifts: dict[int, float] = {}
        self.spin: SpinBackbone | None = None
        if config.spin_head is not None:
            torch.manual_seed(config.seed)
            self.spin = SpinBackbone.for_backbone(backbone, config.spin_head)
        self.model = self.spin or backbone  # what computes energies, forces (and moments)

    def fit(self, train: PotentialSet, valid: PotentialSet, *, progress: bool = True) -> FinetuneResult:
        """Train on ``train`` with early stopping on ``valid``; the model keeps the best weights."""
        if len(valid) == 0:
            raise ValueError("the validation set is empty: early stopping needs at least one structure")
        config, backbone = self.config, self.backbone
        if self.spin is not None and (train.magmoms is None or valid.magmoms is None):
            raise ValueError("the spin head trains on moments: read the sets with "
                             f"magmoms={config.spin_head!r}")
        train_graphs = [backbone.graph(atoms) for atoms in train.frames]
        valid_graphs = [backbone.graph(atoms) for atoms in valid.frames]
        if config.refit_references:
            self.reference_shifts = _refit_references(backbone, train_graphs, train)
        optimizer, trainable = self._prepare()
        history: list[dict[str, Any]] = []
        best = {"epoch": 0, **self._validate(valid_graphs, valid, optimizer)}
        best_values = _snapshot(trainable)
        history.append({"epoch": 0, "train_loss": None, **_prefixed(best)})
        steps, step_times, bad_epochs, epoch = 0, [], 0, 0
        n_batches = math.ceil(len(train) / config.batch_size)
        budget = config.epochs * n_batches if config.max_steps is None else min(config.max_steps,
                                                                               config.epochs * n_batches)
        bar = tqdm(total=budget if trainable else 0, disable=not progress, unit="step", desc=config.method)
        while trainable and epoch < config.epochs and bad_epochs < config.patience and steps < budget:
            epoch += 1
            losses = []
            self._train_mode(optimizer, True)
            order = np.random.default_rng([config.seed, epoch]).permutation(len(train))
            for begin in range(0, len(order), config.batch_size):
                if steps >= budget:
                    break
                start = time.perf_counter()
                rows = order[begin:begin + config.batch_size].tolist()
                labels = batch_labels(train, rows, backbone.device)
                out = self.model.forward(backbone.collate([train_graphs[i] for i in rows]),
                                         forces=config.loss.forces > 0, stress=config.loss.stress > 0)
                loss = potential_loss(out, labels, config.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step_times.append(time.perf_counter() - start)
                losses.append(float(loss.detach()))
                steps += 1
                bar.update(1)
            metrics = self._validate(valid_graphs, valid, optimizer)
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **_prefixed(metrics),
                            "thresholds": self._mean_threshold()})
            if metrics["loss"] < best["loss"]:
                best, bad_epochs = {"epoch": epoch, **metrics}, 0
                best_values = _snapshot(trainable)
            else:
                bad_epochs += 1
            bar.set_postfix(epoch=epoch, val_loss=f"{metrics['loss']:.4g}", best=f"{best['loss']:.4g}")
        bar.close()
        _restore(trainable, best_values)
        return FinetuneResult(
            method=config.method, epochs_run=epoch, steps=steps, stopped_early=bad_epochs >= config.patience,
            best_epoch=best.pop("epoch"), best_val=best, history=history,
            reference_shifts=dict(self.reference_shifts),
            thresholds=self.increments.layer_thresholds() if self.increments is not None else {},
            step_seconds=float(np.mean(step_times[1:] or step_times)) if step_times else 0.0)

    @torch.no_grad()
    def export(self) -> Delta:
        """Merge the increments into the weights; the backbone becomes a plain tuned model.

        Returns the change from the pretrained weights; afterwards the model's
        state is exactly ``apply_delta(pretrained, delta)``.
        """
        model = self.backbone.model
        if self.increments is not None:
            dense = self.increments.dense()
            self.increments.detach()
            self.increments = None
            parameters = dict(model.named_parameters())
            for name, increment in dense.items():
                parameters[name].copy_(parameters[name] + increment)
        delta = state_delta(self.base_state, model.state_dict())
        model.load_state_dict(self.base_state)
        apply_delta(model, delta)
        model.requires_grad_(False)
        model.eval()
        return delta

    def _prepare(self) -> tuple[Any, dict[str, torch.nn.Parameter]]:
        """Make the method's parameters trainable; the optimiser and ``{name: parameter}`` trained."""
        import schedulefree

        config, backbone = self.config, self.backbone
        backbone.model.requires_grad_(False)
        groups: list[dict[str, Any]] = []
        trainable: dict[str, torch.nn.Parameter] = {}
        if config.method in ("sparse", "lora"):
            torch.manual_seed(config.seed)
            self.increments = IncrementSet(backbone, config.method, rank=config.rank, alpha=config.alpha)
            self.increments.attach(backbone)
            groups.append({"params": self.increments.increment_parameters(), "lr": config.lr,
                           "weight_decay": config.weight_decay})
            if config.method == "sparse":
                groups.append({"params": self.increments.threshold_parameters(),
                               "lr": config.tau_lr or config.lr, "weight_decay": config.threshold_decay()})
            trainable = {n: p for n, p in self.increments.named_parameters()}
        elif config.method in ("readout", "full"):
            named = dict(backbone.model.named_parameters())
            names = backbone.readout_parameters() if config.method == "readout" else list(named)
            trainable = {n: named[n] for n in names}
            for parameter in trainable.values():
                parameter.requires_grad_(True)
            groups.append({"params": list(trainable.values()), "lr": config.lr,
                           "weight_decay": config.weight_decay})
        if self.spin is not None:
            head = dict(self.spin.head.named_parameters())
            trainable.update({f"spin_head.{n}": p for n, p in head.items()})
            groups.append({"params": list(head.values()), "lr": config.head_lr, "weight_decay": config.weight_decay})
        if not trainable:
            return None, {}
        optimizer = schedulefree.AdamWScheduleFree(groups, lr=config.lr, warmup_steps=config.warmup_steps)
        return optimizer, trainable

    def _train_mode(self, optimizer: Any, training: bool) -> None:
        """Train mode builds the force graph for a second derivative; the schedule-free
        optimiser swaps between its training and its averaged (evaluation) weights."""
        self.backbone.model.train(training)
        if optimizer is not None:
            optimizer.train() if training else optimizer.eval()

    def _validate(self, graphs: Sequence[Any], valid: PotentialSet, optimizer: Any) -> dict[str, float]:
        self._train_mode(optimizer, False)
        return evaluate(self.model, graphs, valid, self.config.loss)

    def _mean_threshold(self) -> float | None:
        if self.increments is None or not self.increments.thresholds:
            return None
        return float(np.mean(list(self.increments.layer_thresholds().values())))


def finetune(backbone: Backbone, config: FinetuneConfig, train: PotentialSet, valid: PotentialSet, *,
             progress: bool = True) -> tuple[FinetuneResult, Delta]:
    """Fit and export: ``backbone`` ends as the plain tuned model; returns the run and its delta."""
    tuner = Finetuner(backbone, config)
    result = tuner.fit(train, valid, progress=progress)
    return result, tuner.export()


@torch.no_grad()
def _refit_references(backbone: Backbone, graphs: Sequence[Any], data: PotentialSet) -> dict[int, float]:
    """Least-squares per-element shifts of the reference energies to the training energies; applied."""
    energies = torch.cat([backbone.energy(backbone.collate(graphs[start:start + 16])).double().cpu()
                          for start in range(0, len(graphs), 16)])
    compositions = [{int(z): int(n) for z, n in zip(*np.unique(atoms.numbers, return_counts=True))}
                    for atoms in data.frames]
    reference = EnergyReference()
    reference.fit(compositions, torch.as_tensor(data.energy) - energies)
    shifts = {z: float(reference.shift[z]) for z in sorted({z for c in compositions for z in c})}
    try:
        backbone.add_reference_energies(shifts)
    except NotImplementedError as error:
        raise ValueError(f"{error}; fine-tune with refit_references=False (--no-refit-references)") from None
    return shifts


def _prefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {f"val_{k}": v for k, v in metrics.items() if k != "epoch"}


def _snapshot(trainable: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainable.items()}


@torch.no_grad()
def _restore(trainable: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]) -> None:
    for name, parameter in trainable.items():
        parameter.copy_(values[name])
