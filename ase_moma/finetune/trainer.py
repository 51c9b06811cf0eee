"""One trainer for every way of adapting a potential to new DFT data.

Methods: ``zero_shot`` (no training), ``readout`` (the read-out layers only),
``full`` (every weight), ``lora`` (low-rank increments on the path weights) and
``sparse`` (STR increments on the path weights, held to a budget of weights
moved: :mod:`ase_moma.finetune.sparse`). All use schedule-free AdamW, the
Huber loss of :mod:`ase_moma.finetune.loss` and the shared training engine
(seeded batches, early stopping on the validation loss with the best weights
kept, a checkpoint after every epoch and resume). Before
training, the per-element reference energies can be refitted to the training
energies by least squares (a different DFT set-up shifts them). A spin head
(:mod:`ase_moma.finetune.spin`) can ride on any method: it always trains
densely, beside whatever the method moves (with ``zero_shot``, the backbone
stays frozen and only the head trains).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ase_moma.backbone import Backbone
from ase_moma.delta import Delta, apply_delta, state_delta
from ase_moma.finetune.chunks import atom_chunks, default_chunk_atoms
from ase_moma.finetune.exchange_start import ExchangeFit, fit_exchange, ordered_geometries
from ase_moma.finetune.increments import IncrementSet
from ase_moma.finetune.lora import ALPHA, RANK
from ase_moma.finetune.loss import PotentialLoss, batch_labels, evaluate
from ase_moma.finetune.potential_data import PotentialSet
from ase_moma.finetune.spin import SPIN_KINDS
from ase_moma.finetune.spin_model import SpinBackbone
from ase_moma.training.engine import EngineResult, Schedule, TrainingEngine
from ase_moma.training.references import fit_reference_energies, shifts_of

METHODS = ("zero_shot", "readout", "full", "lora", "sparse")


@dataclass(frozen=True)
class Preset:
    """A sparse fine-tuning preset: λ_τ (the thresholds' decoupled weight decay, the paper's knob) and
    the fraction of path weights moved (the budget)."""

    tau_decay: float
    moved: float


# L (accurate): λ_τ 0.01 as in the paper's L, 10 % moved (the paper's L runs keep about 90 % sparse).
# H (sparse): λ_τ 0.3 as in the paper's H, 2 % moved (inside the paper's 0.5–3 % headline range).
PRESETS = {"L": Preset(tau_decay=0.01, moved=0.10), "H": Preset(tau_decay=0.3, moved=0.02)}
SPIN_LOSS = PotentialLoss(energy=1.0, forces=1.0, stress=1.0, magmoms=1.0)


@dataclass
class FinetuneConfig:
    """How a potential is adapted.

    method: one of METHODS. preset: ``"L"`` or ``"H"`` (see PRESETS), the
    sparse method's fraction of path weights moved and threshold decay λ_τ;
    ``target_fraction`` and ``tau_decay`` override them. lr, weight_decay: of
    the trained weights (ΔW, LoRA factors, or the model's own; sparse ΔW
    train at ``increment_lr()``); tau_lr: of the thresholds τ (default
    ``lr``). epochs, patience: early stopping on the validation loss,
    checked once per epoch; epochs 0 only starts (reference energies refitted,
    a spin head at its ridge probe). max_steps: stop after this many optimiser steps
    in all (short runs). refit_references: refit the
    per-element reference energies to the training energies before training.
    rank, alpha: LoRA's. seed: of the increments' initialisation and the batch order.
    spin_head: ``"vector"``, ``"collinear"`` or None; head_lr: its learning rate.
    exchange: whether the spin head carries its exchange energy (False: moments only, J ≡ 0,
    the ablation without it); J starts at its least-squares fit to the training residuals.
    exchange_environment: whether J reads the atoms' environments (their node features) beside
    distance and species (False: the ablation of J(r, Z_i, Z_j) alone). local_order: whether the
    moments' magnitudes read the local spin order beside the geometry (False: geometry alone).
    loss: the loss (its weights); default 1:10:100 (energy, forces, stress),
    or 1:1:1:1 with moments when a spin head is trained. chunk_atoms: each batch is
    computed in chunks of at most this many atoms, their gradients accumulated
    (the same step as the whole batch's, to round-off, in a fraction of the
    memory); default: ``chunks.default_chunk_atoms`` of the backbone's device.
    """

    method: str = "sparse"
    preset: str = "L"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-8
    tau_lr: float | None = None
    tau_decay: float | None = None
    target_fraction: float | None = None
    patience: int = 10
    max_steps: int | None = None
    warmup_steps: int = 0
    refit_references: bool = True
    rank: int = RANK
    alpha: float = ALPHA
    seed: int = 0
    spin_head: str | None = None
    head_lr: float = 1e-3
    exchange: bool = True
    exchange_environment: bool = True
    local_order: bool = True
    loss: PotentialLoss | None = None
    chunk_atoms: int | None = None

    def __post_init__(self) -> None:
        if self.loss is None:
            self.loss = SPIN_LOSS if self.spin_head else PotentialLoss()

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fine-tuning method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown sparsity preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        self.schedule().check()
        if self.target_fraction is not None and not 0 < self.target_fraction <= 1:
            raise ValueError(f"the target fraction of path weights moved must lie in (0, 1], got "
                             f"{self.target_fraction}")
        if self.spin_head is not None and self.spin_head not in SPIN_KINDS:
            raise ValueError(f"spin head must be one of {', '.join(SPIN_KINDS)}, got {self.spin_head!r}")
        if self.chunk_atoms is not None and self.chunk_atoms < 1:
            raise ValueError(f"a chunk must hold at least one atom, got chunk_atoms={self.chunk_atoms}")
        if not self.lr > 0 or (self.tau_lr is not None and not self.tau_lr > 0):
            raise ValueError("learning rates must be positive")
        self.loss.check()

    def threshold_decay(self) -> float:
        """λ_τ: ``tau_decay`` if set, else the preset's."""
        return self.tau_decay if self.tau_decay is not None else PRESETS[self.preset].tau_decay

    def increment_lr(self) -> float:
        """The learning rate of the increments: ``lr``, over √f for sparse ones moving a fraction f of
        the path weights, so that an Adam step (about lr per entry moved) moves the weights as far, in
        Euclidean norm, as a step of full fine-tuning at ``lr``."""
        return self.lr / math.sqrt(self.moved_fraction()) if self.method == "sparse" else self.lr

    def moved_fraction(self) -> float:
        """The fraction of path weights sparse fine-tuning moves: ``target_fraction``, else the preset's."""
        return self.target_fraction if self.target_fraction is not None else PRESETS[self.preset].moved

    def schedule(self) -> Schedule:
        return Schedule(self.epochs, self.batch_size, self.patience, self.seed, self.max_steps)


class Finetuner:
    """Adapts ``backbone`` in place: :meth:`fit`, then :meth:`export` for the plain tuned model.

    Between the two, a ``sparse`` or ``lora`` backbone computes with its
    path weights parametrised as W + increment (the in-training model).
    With a spin head, ``spin`` is the backbone with the head attached. The
    backbone's capabilities are checked here, before any data is read.
    """

    def __init__(self, backbone: Backbone, config: FinetuneConfig) -> None:
        config.check()
        needed = {"sparse": ("path_weights",), "lora": ("path_weights",), "readout": ("readout",)}
        backbone.require(f"{config.method} fine-tuning", *needed.get(config.method, ()))
        if config.refit_references:
            backbone.require("refitting reference energies (pass refit_references=False / "
                             "--no-refit-references to keep them)", "reference_energies")
        if config.loss.stress > 0:
            backbone.require("fitting stress", "stress")
        self.backbone = backbone
        self.config = config
        self.base_state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
        self.increments: IncrementSet | None = None
        self.reference_shifts: dict[int, float] = {}
        self.spin: SpinBackbone | None = None
        self.exchange_start: ExchangeFit | None = None
        if config.spin_head is not None:
            torch.manual_seed(config.seed)
            self.spin = SpinBackbone.for_backbone(backbone, config.spin_head, environment=config.exchange_environment,
                                                  local_order=config.local_order)
        self.model = self.spin or backbone  # what computes energies, forces (and moments)

    def fit(self, train: PotentialSet, valid: PotentialSet, *, progress: bool = True,
            checkpoint: Path | None = None, run_hash: str = "") -> EngineResult:
        """Train on ``train`` with early stopping on ``valid``; the model keeps the best weights.

        checkpoint: a folder for a checkpoint after every epoch; a checkpoint
        there with the same ``run_hash`` is resumed from.
        """
        if len(valid) == 0:
            raise ValueError("the validation set is empty: early stopping needs at least one structure")
        config, backbone = self.config, self.backbone
        if self.spin is not None and (train.magmoms is None or valid.magmoms is None):
            raise ValueError("the spin head trains on moments: read the sets with "
                             f"magmoms={config.spin_head!r}")
        train_graphs, valid_graphs = self.graphs(train), self.graphs(valid)
        if self.spin is not None:
            ordered = ordered_geometries(train.frames, [graph.spins.cpu().numpy() for graph in train_graphs])
            self._start_magnitudes(train_graphs, train, open_environment=bool(ordered))
        if config.refit_references:
            base_graphs = [g.graph for g in train_graphs] if self.spin is not None else train_graphs
            reference = fit_reference_energies(backbone, base_graphs, train.frames, train.energy)
            self.reference_shifts = shifts_of(reference, train.frames)
            backbone.add_reference_energies(self.reference_shifts)
        if self.spin is not None and config.exchange:
            self.exchange_start = fit_exchange(self.spin, train_graphs, train, config.loss, geometries=ordered,
                                               seed=config.seed)
            if config.refit_references and self.exchange_start.reference_shifts:
                backbone.add_reference_energies(self.exchange_start.reference_shifts)
                for z, shift in self.exchange_start.reference_shifts.items():
                    self.reference_shifts[z] = self.reference_shifts.get(z, 0.0) + shift
        untouched = self._untouched(valid_graphs, valid)
        gradients = self._path_gradients(train_graphs, train) if config.method == "sparse" else None
        optimizer, tensors = self._prepare(gradients)
        engine = TrainingEngine(tensors, optimizer, config.schedule(), score="loss", modes=self._modes(optimizer),
                                after_step=self._hold_budget,
                                checkpoint=checkpoint, run_hash=run_hash, progress=progress, desc=config.method)
        counts = train.n_atoms()
        result = engine.run(len(train), lambda rows: self._batch_loss(train_graphs, train, counts, rows),
                            lambda: self._validate(valid_graphs, valid))
        if untouched is not None and untouched[0]["loss"] <= result.best["loss"]:
            self._keep_untouched(untouched[1])
            result = dataclasses.replace(result, best=untouched[0], best_epoch=0, kept_start=True)
        return result

    def _untouched(self, graphs: list[Any], valid: PotentialSet
                   ) -> tuple[dict[str, float], dict[str, dict[str, torch.Tensor]]] | None:
        """The validation metrics and state of the backbone as it is before the method changes it (its
        reference energies refitted, a spin head at its start), for methods that change the backbone:
        a sparse start, or a few steps, can validate worse than the pretrained weights, and then
        training keeps these (:meth:`_keep_untouched`)."""
        if self.config.method == "zero_shot":
            return None
        with torch.no_grad():
            state = {"model": {k: v.detach().clone() for k, v in self.backbone.model.state_dict().items()}}
            if self.spin is not None:
                state["head"] = {k: v.detach().clone() for k, v in self.spin.head.state_dict().items()}
        self.backbone.model.train(False)
        return self._validate(graphs, valid), state

    @torch.no_grad()
    def _keep_untouched(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Put back the untouched backbone (and the spin head's start): increments removed unmerged."""
        if self.increments is not None:
            self.increments.detach()
            self.increments = None
        self.backbone.model.load_state_dict(state["model"])
        if self.spin is not None:
            self.spin.head.load_state_dict(state["head"])

    def _batch_loss(self, graphs: list[Any], data: PotentialSet, counts: np.ndarray, rows: list[int],
                    scale: float = 1.0) -> torch.Tensor:
        """``scale`` times the training loss of frames ``rows`` of ``data`` (``graphs``: their model graphs,
        ``counts``: ``data.n_atoms()``).

        A batch of one chunk returns its differentiable loss. A batch of several (``chunk_atoms``)
        back-propagates each chunk's share of the loss as it goes, so that one chunk's graph is held at
        a time, and returns the batch's loss detached, its gradient already accumulated.
        """
        counts = counts[rows]
        size = self.config.chunk_atoms or default_chunk_atoms(self.backbone.device)
        chunks = atom_chunks(counts, size)
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

    def _chunk_loss(self, graphs: list[Any], data: PotentialSet, rows: list[int], **shares: float) -> torch.Tensor:
        """The loss of frames ``rows``, scaled by their ``shares`` of a batch (``PotentialLoss``)."""
        loss = self.config.loss
        predicted = self.model.forward(self.model.collate([graphs[i] for i in rows]),
                                       forces=loss.forces > 0, stress=loss.stress > 0)
        return loss(predicted, batch_labels(data, rows, self.backbone.device), **shares)

    @torch.no_grad()
    def _start_magnitudes(self, graphs: list[Any], train: PotentialSet, *, open_environment: bool,
                          batch_size: int = 16) -> None:
        """The spin head's magnitudes start at the ridge probe of the training |m_i| on the frozen
        backbone's per-atom features, then of what it leaves on the training spins' order features
        (LP-FT, as for property heads). J's view of the environment is pointed along those features'
        main directions of variation where the training set gives some geometry in different orders
        (``open_environment``), and stays shut (J of distance and species) where it gives none: how J changes with the
        environment is learnt only from differences between orders, and without any it only fitted
        the backbone's errors (fe_spin, bench/RESULTS.md). The projection is not trained: at the head's
        learning rate a few steps moved it far enough to make J diverge."""
        parts = [self.spin.features_and_order(self.spin.collate(graphs[i:i + batch_size]))
                 for i in range(0, len(graphs), batch_size)]
        features, order = (torch.cat(columns) for columns in zip(*parts))
        magnitudes = torch.as_tensor(np.concatenate([_magnitudes(m) for m in train.magmoms]))
        structures = torch.as_tensor(np.repeat(np.arange(len(train)), train.n_atoms()))
        self.spin.head.start_from_probe(features, magnitudes, structures, order)
        if open_environment:
            self.spin.head.start_environment(features)

    def graphs(self, data: PotentialSet) -> list[Any]:
        """The model's graphs of ``data``'s frames. With a spin head, each frame's spin configuration is
        its DFT moments' directions (or signs), as a user sets it with set_initial_magnetic_moments."""
        if self.spin is None:
            return [self.backbone.graph(atoms) for atoms in data.frames]
        if data.magmoms is None:
            raise ValueError(f"the spin head needs the moments of {data.source}: read it with magmoms=...")
        graphs = []
        for atoms, moments in zip(data.frames, data.magmoms):
            configured = atoms.copy()
            configured.set_initial_magnetic_moments(None)  # (n,) and (n, 3) moments do not replace each other
            configured.set_initial_magnetic_moments(moments)
            graphs.append(self.spin.graph(configured))
        return graphs

    def _validate(self, graphs: list[Any], valid: PotentialSet) -> dict[str, float]:
        """The validation metrics, and for sparse increments the fraction of path weights moved now."""
        metrics = evaluate(self.model, graphs, valid, self.config.loss)
        if self._sparse():
            metrics["path_weights_moved"] = self.increments.moved_fraction()
        return metrics

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

    def thresholds(self) -> dict[str, float]:
        """``{layer: θ}`` of sparse increments (empty for other methods)."""
        return self.increments.layer_thresholds() if self.increments is not None else {}

    def _path_gradients(self, graphs: list[Any], train: PotentialSet) -> dict[str, torch.Tensor]:
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

    def _prepare(self, gradients: dict[str, torch.Tensor] | None) -> tuple[Any, dict[str, torch.Tensor]]:
        """Make the method's parameters trainable; the optimiser and ``{name: tensor}`` that training changes."""
        import schedulefree

        config, backbone = self.config, self.backbone
        backbone.model.requires_grad_(False)
        groups: list[dict[str, Any]] = []
        tensors: dict[str, torch.Tensor] = {}
        if config.method in ("sparse", "lora"):
            torch.manual_seed(config.seed)
            self.increments = IncrementSet(backbone, config.method, rank=config.rank, alpha=config.alpha)
            self.increments.attach(backbone)
            groups.append({"params": self.increments.increment_parameters(), "lr": config.increment_lr(),
                           "weight_decay": config.weight_decay})
            if config.method == "sparse":
                groups.append({"params": self.increments.threshold_parameters(),
                               "lr": config.tau_lr or config.lr, "weight_decay": config.threshold_decay()})
                self.increments.start_along(gradients, config.moved_fraction())
            tensors = {f"increments.{n}": t for n, t in self.increments.state_tensors().items()}
        elif config.method in ("readout", "full"):
            named = dict(backbone.model.named_parameters())
            names = backbone.readout_parameters() if config.method == "readout" else list(named)
            for name in names:
                named[name].requires_grad_(True)
                tensors[name] = named[name]
            groups.append({"params": [named[n] for n in names], "lr": config.lr,
                           "weight_decay": config.weight_decay})
        if self.spin is not None:
            head = dict(self.spin.head.named_parameters())
            if not config.exchange:  # J ≡ 0: its network stays at its zero output, untrained
                for name in [n for n in head if n.startswith(("exchange.", "species."))]:
                    head.pop(name).requires_grad_(False)
            tensors.update({f"spin_head.{n}": p for n, p in head.items()})
            for name in [n for n in head if n.startswith("environment.")]:  # set at the start, not trained
                head.pop(name).requires_grad_(False)
            groups.append({"params": list(head.values()), "lr": config.head_lr, "weight_decay": config.weight_decay})
        if not tensors:
            return None, {}
        optimizer = schedulefree.AdamWScheduleFree(groups, lr=config.lr, warmup_steps=config.warmup_steps)
        return optimizer, tensors

    def _modes(self, optimizer: Any) -> Callable[[bool], None]:
        """Train mode builds the force graph for a second derivative; the schedule-free optimiser swaps
        between its training and its averaged (evaluation) weights, and the sparsity budget is
        re-imposed on whichever weights are current."""

        def switch(training: bool) -> None:
            self.backbone.model.train(training)
            if optimizer is not None:
                optimizer.train() if training else optimizer.eval()
            self._hold_budget()

        return switch

    def _hold_budget(self, steps: int = 0) -> None:
        """Re-solve the cut c so that sparse increments move exactly their target fraction."""
        if self._sparse():
            self.increments.hold_fraction(self.config.moved_fraction())

    def _sparse(self) -> bool:
        """Whether sparse increments are attached (between preparing and exporting)."""
        return self.increments is not None and self.increments.kind == "sparse"


def _magnitudes(moments: np.ndarray) -> np.ndarray:
    """|m| per atom of (n, 3) vectors or (n,) signed scalars."""
    return np.linalg.norm(moments, axis=-1) if moments.ndim == 2 else np.abs(moments)
