"""One trainer for every way of adapting a potential to new DFT data.

Methods are classes (:mod:`ase_moma.finetune.methods`): ``zero_shot`` (no
training), ``readout`` (the read-out layers only), ``full`` (every weight),
``lora`` (low-rank increments on the path weights), ``sparse`` (STR increments
on the path weights, held to a budget of weights moved), and any a plugin
registers. All use schedule-free AdamW, the Huber loss of
:mod:`ase_moma.finetune.loss` and the shared training engine (seeded batches,
early stopping on the validation loss with the best weights kept, a
checkpoint after every epoch and resume). Before training, the per-element
reference energies can be refitted to the training energies by least squares
(a different DFT set-up shifts them). A spin head
(:mod:`ase_moma.spin.head`) can ride on any method: it always trains
densely, beside whatever the method moves (with ``zero_shot``, the backbone
stays frozen and only the head trains).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ase_moma.backbone import Backbone
from ase_moma.delta import Delta, apply_delta, state_delta
from ase_moma.finetune.chunks import atom_chunks, default_chunk_atoms
from ase_moma.finetune.loss import PotentialLoss, batch_labels, evaluate
from ase_moma.finetune.methods import FinetuneMethod, MethodOptions, StartContext, method_class, method_names
from ase_moma.finetune.methods.sparse import PRESETS
from ase_moma.finetune.spin_addon import SpinAddOn
from ase_moma.labelled_set import LabelledSet
from ase_moma.spin.exchange_start import ExchangeFit
from ase_moma.spin.head import SPIN_KINDS
from ase_moma.spin.model import SpinBackbone
from ase_moma.training.engine import EngineResult, Schedule, TrainingEngine
from ase_moma.training.references import fit_reference_energies, shifts_of
from ase_moma.training.run_settings import RunSettings
from ase_moma.training.work_folder import WorkFolder

METHODS = tuple(method_names())
SPIN_LOSS = PotentialLoss(energy=1.0, forces=1.0, stress=1.0, magmoms=1.0)
HEAD_MIN_IMPROVEMENT = 0.01
"""The fraction by which an epoch must lower the validation loss to count as better when a spin head trains:
its energy read-outs and magnitudes start at closed-form fits, and on the shipped PBE sets runs whose
validation loss crept down by less for all 100 epochs ended with held-out order gaps 2–3× those of runs that
stopped within ten (bench/RESULTS.md, "Moments that shrink and vanish")."""

__all__ = ["METHODS", "PRESETS", "FinetuneConfig", "Finetuner"]


@dataclass
class FinetuneConfig(RunSettings):
    """How a potential is adapted.

    method: a registered method's name (METHODS); options: its options
    (e.g. ``SparseOptions(preset="H")``, ``LoRAOptions(rank=8)``; None: its
    defaults). lr, weight_decay: of the trained weights (a method may scale
    the rate, as sparse increments do). epochs, patience: early stopping on the
    validation loss, checked once per epoch; epochs 0 only starts (reference
    energies refitted, a spin head at its ridge probe). max_steps: stop after
    this many optimiser steps in all (short runs). refit_references: refit the
    per-element reference energies to the training energies before training (None: where the backbone
    has reference energies that can be refitted, as SevenNet, MACE, CHGNet and JMP do, and not matgl or
    Orb; True refuses a backbone without them; :meth:`resolved_for` settles None).
    seed: of the method's initialisation and the batch order.
    spin_head: ``"vector"``, ``"collinear"`` or None; head_lr: its learning rate.
    exchange: whether the spin head carries its exchange energy (False: moments only, J ≡ 0,
    the ablation without it); J starts at its least-squares fit to the training residuals.
    exchange_environment: whether J reads the atoms' environments (their node features) beside
    distance and species (False: the ablation of J(r, Z_i, Z_j) alone). local_order: whether the
    moments' magnitudes read the local spin order beside the geometry (False: geometry alone).
    longitudinal: whether the head prices a moment's size (the on-site Landau energy, squared-moment
    magnitudes that can reach zero; False: the ablation, exchange of the geometry's magnitudes only).
    min_improvement: an epoch counts as better only where it lowers the validation loss by this fraction
    (default HEAD_MIN_IMPROVEMENT with a spin head, else 0).
    loss: the loss (its weights); default 1:10:100 (energy, forces, stress),
    or 1:1:1:1 with moments when a spin head is trained. chunk_atoms: each batch is
    computed in chunks of at most this many atoms, their gradients accumulated
    (the same step as the whole batch's, to round-off, in a fraction of the
    memory); default: ``chunks.default_chunk_atoms`` of the backbone's device.
    """

    method: str = "sparse"
    options: MethodOptions | None = None
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-8
    patience: int = 10
    max_steps: int | None = None
    warmup_steps: int = 0
    refit_references: bool | None = None
    seed: int = 0
    spin_head: str | None = None
    head_lr: float = 1e-3
    exchange: bool = True
    exchange_environment: bool = True
    local_order: bool = True
    longitudinal: bool = True
    min_improvement: float | None = None
    loss: PotentialLoss | None = None
    chunk_atoms: int | None = None

    def __post_init__(self) -> None:
        if self.loss is None:
            self.loss = SPIN_LOSS if self.spin_head else PotentialLoss()
        if self.min_improvement is None:
            self.min_improvement = HEAD_MIN_IMPROVEMENT if self.spin_head else 0.0
        if self.options is None and self.method in METHODS:
            self.options = method_class(self.method).Options()

    def make_method(self) -> FinetuneMethod:
        """A fresh instance of the method with these options (ValueError for an unknown method or a
        setting that cannot work)."""
        return method_class(self.method)(self.options)

    def resolved_for(self, backbone: Backbone) -> "FinetuneConfig":
        """This config with ``refit_references`` None settled for ``backbone``: True where it has reference
        energies to refit, else False."""
        if self.refit_references is not None:
            return self
        return dataclasses.replace(self, refit_references=backbone.capabilities.reference_energies)

    def check(self) -> None:
        self.make_method()
        self.schedule().check()
        if self.spin_head is not None and self.spin_head not in SPIN_KINDS:
            raise ValueError(f"spin head must be one of {', '.join(SPIN_KINDS)}, got {self.spin_head!r}")
        if self.chunk_atoms is not None and self.chunk_atoms < 1:
            raise ValueError(f"a chunk must hold at least one atom, got chunk_atoms={self.chunk_atoms}")
        if not self.lr > 0:
            raise ValueError("learning rates must be positive")
        self.loss.check()

    def schedule(self) -> Schedule:
        return super().schedule(max_steps=self.max_steps, min_improvement=self.min_improvement)


class Finetuner:
    """Adapts ``backbone`` in place: :meth:`fit`, then :meth:`export` for the plain tuned model.

    Between the two, a ``sparse`` or ``lora`` backbone computes with its
    path weights parametrised as W + increment (the in-training model).
    With a spin head, ``spin`` is the backbone with the head attached. The
    backbone's capabilities are checked here, before any data is read.
    """

    def __init__(self, backbone: Backbone, config: FinetuneConfig) -> None:
        config.check()
        config = config.resolved_for(backbone)
        self.method = config.make_method()
        backbone.require(f"{config.method} fine-tuning", *self.method.requires)
        if config.refit_references:
            backbone.require("refitting reference energies (pass refit_references=False / "
                             "--no-refit-references to keep them)", "reference_energies")
        if config.loss.stress > 0:
            backbone.require("fitting stress", "stress")
        self.backbone = backbone
        self.config = config
        self.base_state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
        self.reference_shifts: dict[int, float] = {}
        self.spin_addon = None if config.spin_head is None else SpinAddOn(
            backbone, config.spin_head, exchange=config.exchange, environment=config.exchange_environment,
            local_order=config.local_order, longitudinal=config.longitudinal, lr=config.head_lr, weight_decay=config.weight_decay, seed=config.seed)
        self.model = self.spin or backbone  # what computes energies, forces (and moments)

    @property
    def chunk_atoms(self) -> int | None:
        """Atoms per chunk of a training batch, and per batch of an evaluation (None: a whole batch)."""
        return self.config.chunk_atoms or default_chunk_atoms(self.backbone.device)

    @property
    def spin(self) -> SpinBackbone | None:
        """The backbone with its spin head attached (None without one)."""
        return self.spin_addon.model if self.spin_addon is not None else None

    @property
    def exchange_start(self) -> ExchangeFit | None:
        """The spin head's exchange start (None without one, or without exchange)."""
        return self.spin_addon.exchange_start if self.spin_addon is not None else None

    def fit(self, train: LabelledSet, valid: LabelledSet, *, progress: bool = True,
            work: WorkFolder | None = None) -> EngineResult:
        """Train on ``train`` with early stopping on ``valid``; the model keeps the best weights.

        work: the run's work folder: a checkpoint after every epoch, and one there with its run hash is
        resumed from (None: no checkpoints).
        """
        if len(valid) == 0:
            raise ValueError("the validation set is empty: early stopping needs at least one structure")
        config, backbone, addon = self.config, self.backbone, self.spin_addon
        if addon is not None:
            addon.check(train, valid)
        train_graphs, valid_graphs = self.graphs(train), self.graphs(valid)
        if addon is not None:
            addon.start_magnitudes(train_graphs, train)
        if config.refit_references:
            base_graphs = [g.graph for g in train_graphs] if addon is not None else train_graphs
            reference = fit_reference_energies(backbone, base_graphs, train.frames, train.energy)
            self.reference_shifts = shifts_of(reference, train.frames)
            backbone.add_reference_energies(self.reference_shifts)
        if addon is not None:
            shifts = addon.start_exchange(train_graphs, train, config.loss)
            if config.refit_references and shifts:
                backbone.add_reference_energies(shifts)
                for z, shift in shifts.items():
                    self.reference_shifts[z] = self.reference_shifts.get(z, 0.0) + shift
        untouched = self._untouched(valid_graphs, valid)
        optimizer, tensors = self._prepare(lambda: self._path_gradients(train_graphs, train))
        engine = TrainingEngine(tensors, optimizer, config.schedule(), score="loss", modes=self._modes(optimizer),
                                after_step=lambda steps: self.method.settle(),
                                work=work, progress=progress, desc=config.method)
        counts = train.n_atoms()
        result = engine.run(len(train), lambda rows: self._batch_loss(train_graphs, train, counts, rows),
                            lambda: self._validate(valid_graphs, valid))
        if untouched is not None and untouched[0]["loss"] <= result.best["loss"]:
            self._keep_untouched(untouched[1])
            result = dataclasses.replace(result, best=untouched[0], best_epoch=0, kept_start=True)
        return result

    def _untouched(self, graphs: list[Any], valid: LabelledSet
                   ) -> tuple[dict[str, float], dict[str, dict[str, torch.Tensor]]] | None:
        """The validation metrics and state of the backbone as it is before the method changes it (its
        reference energies refitted, a spin head at its start), for methods that change the backbone:
        a sparse start, or a few steps, can validate worse than the pretrained weights, and then
        training keeps these (:meth:`_keep_untouched`)."""
        if not self.method.trains_backbone:
            return None
        with torch.no_grad():
            state = {"model": {k: v.detach().clone() for k, v in self.backbone.model.state_dict().items()}}
            if self.spin_addon is not None:
                state["head"] = self.spin_addon.state()
        self.backbone.model.train(False)
        return self._validate(graphs, valid), state

    @torch.no_grad()
    def _keep_untouched(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Put back the untouched backbone (and the spin head's start): what the method attached is
        dropped unmerged."""
        self.method.discard()
        self.backbone.model.load_state_dict(state["model"])
        if self.spin_addon is not None:
            self.spin_addon.restore(state["head"])

    def _batch_loss(self, graphs: list[Any], data: LabelledSet, counts: np.ndarray, rows: list[int],
                    scale: float = 1.0) -> torch.Tensor:
        """``scale`` times the training loss of frames ``rows`` of ``data`` (``graphs``: their model graphs,
        ``counts``: ``data.n_atoms()``).

        A batch of one chunk returns its differentiable loss. A batch of several (``chunk_atoms``)
        back-propagates each chunk's share of the loss as it goes, so that one chunk's graph is held at
        a time, and returns the batch's loss detached, its gradient already accumulated.
        """
        counts = counts[rows]
        chunks = atom_chunks(counts, self.chunk_atoms)
        if len(chunks) == 1:
            return scale * self._chunk_loss(graphs, data, rows)
        total = torch.zeros((), dtype=torch.float64, device=self.backbone.device)
        for positions in chunks:
            part = [rows[p] for p in positions]
            value = scale * self._chunk_loss(graphs, data, part, structure_share=len(part) / len(rows),
                                             atom_share=float(counts[positions].sum() / counts.sum()))
            value.backward()
            total += value.detach()
        return total

    def _chunk_loss(self, graphs: list[Any], data: LabelledSet, rows: list[int], **shares: float) -> torch.Tensor:
        """The loss of frames ``rows``, scaled by their ``shares`` of a batch (``PotentialLoss``)."""
        loss = self.config.loss
        predicted = self.model.forward(self.model.collate([graphs[i] for i in rows]),
                                       forces=loss.forces > 0, stress=loss.stress > 0)
        return loss(predicted, batch_labels(data, rows, self.backbone.device), **shares)

    def graphs(self, data: LabelledSet) -> list[Any]:
        """The model's graphs of ``data``'s frames (with a spin head, each in its DFT spin configuration:
        :meth:`SpinAddOn.graphs`)."""
        if self.spin_addon is not None:
            return self.spin_addon.graphs(data)
        return [self.backbone.graph(atoms) for atoms in data.frames]

    def _validate(self, graphs: list[Any], valid: LabelledSet) -> dict[str, float]:
        """The validation metrics, and the method's own (e.g. the fraction of path weights moved now)."""
        return {**evaluate(self.model, graphs, valid, self.config.loss, self.chunk_atoms), **self.method.metrics()}

    @torch.no_grad()
    def export(self) -> Delta:
        """Merge what the method trained into the weights; the backbone becomes a plain tuned model.

        Returns the change from the pretrained weights; afterwards the model's
        state is exactly ``apply_delta(pretrained, delta)``.
        """
        model = self.backbone.model
        self.method.merge(model)
        delta = state_delta(self.base_state, model.state_dict())
        model.load_state_dict(self.base_state)
        apply_delta(model, delta)
        model.requires_grad_(False)
        model.eval()
        return delta

    def thresholds(self) -> dict[str, float]:
        """``{layer: θ}`` of a thresholded method (empty for other methods)."""
        return self.method.thresholds()

    def _path_gradients(self, graphs: list[Any], train: LabelledSet) -> dict[str, torch.Tensor]:
        """``{name: ∂L/∂W}`` of the mean training loss for every path weight W: one pass over the
        training set, forward and backward, without a step (the cost of one epoch)."""
        model, size = self.backbone.model, self.config.batch_size
        parameters = dict(model.named_parameters())
        names = [w.name for w in self.backbone.path_weights()]
        model.requires_grad_(False)
        for name in names:
            parameters[name].requires_grad_(True)
        model.train(True)  # as in training: the force graph is kept for the second derivative
        batches = [list(range(begin, min(begin + size, len(train)))) for begin in range(0, len(train), size)]
        counts = train.n_atoms()
        for rows in batches:
            loss = self._batch_loss(graphs, train, counts, rows, scale=1 / len(batches))
            if loss.requires_grad:
                loss.backward(inputs=[parameters[name] for name in names])
        model.train(False)
        gradients = {}
        for name in names:
            weight = parameters[name]
            gradients[name] = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            weight.grad = None
            weight.requires_grad_(False)
        return gradients

    def _prepare(self, path_gradients: Callable[[], dict[str, torch.Tensor]]
                 ) -> tuple[Any, dict[str, torch.Tensor]]:
        """Start the method (and the spin head); the optimiser and ``{name: tensor}`` that training changes."""
        import schedulefree

        config, backbone = self.config, self.backbone
        backbone.model.requires_grad_(False)
        trainable = self.method.start(backbone, StartContext(config.lr, config.weight_decay, config.seed,
                                                             path_gradients))
        groups, tensors = list(trainable.groups), dict(trainable.tensors)
        if self.spin_addon is not None:
            head = self.spin_addon.trainable()
            groups += head.groups
            tensors.update(head.tensors)
        if not tensors:
            return None, {}
        optimizer = schedulefree.AdamWScheduleFree(groups, lr=config.lr, warmup_steps=config.warmup_steps)
        return optimizer, tensors

    def _modes(self, optimizer: Any) -> Callable[[bool], None]:
        """Train mode builds the force graph for a second derivative; the schedule-free optimiser swaps
        between its training and its averaged (evaluation) weights, and the method settles on
        whichever weights are current (a sparsity budget is re-imposed)."""

        def switch(training: bool) -> None:
            self.backbone.model.train(training)
            if optimizer is not None:
                optimizer.train() if training else optimizer.eval()
            self.method.settle()

        return switch

