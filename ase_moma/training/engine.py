"""The one training loop under hub modules, composed models, fine-tuned potentials and fusion heads.

Callers bring what is their own concern — which tensors train, the optimiser,
a loss for a batch of item indices, a validation that returns metrics — and the
engine does the rest the same way for all: seeded batch order per epoch, an
optional cap on optimiser steps, validation once per epoch (and once before
training, so a run that only gets worse keeps the starting weights), early
stopping on one validation metric, best-weights restore, a progress bar, a
safetensors checkpoint after every epoch and resume from it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ase_moma.training.checkpoint import load_checkpoint, save_checkpoint
from ase_moma.training.work_folder import WorkFolder


GRACE = 5
"""Epochs a fine-tune gets to beat another model's validation MAE (a schedule's ``to_beat``) before it stops:
half of MoMa's patience of 10. A fine-tune starts at its own probe (LP-FT), so its first epochs show
whether the composed features can go below the plain backbone's probe at all; one that has not after five
would be discarded for that probe at the end anyway, and its remaining epochs were most of the time a user
waited (the default path's 40 minutes on a held-out task, issue 53)."""


@dataclass(frozen=True)
class Schedule:
    """How long and in what order: ``epochs`` over the items in batches of ``batch_size``, in an order
    seeded by (``seed``, epoch); stop after ``patience`` epochs without a better score, or after
    ``max_steps`` optimiser steps in all, or, when ``to_beat`` is given (another model's score on the same
    validation set), after ``grace`` epochs whose best score is still not below it: a run that cannot beat
    the alternative early is not worth its remaining epochs. An epoch counts as better only where its
    score is below the best × (1 − ``min_improvement``): a run creeping down by less is flat. ``epochs`` 0
    keeps the starting point (validated once)."""

    epochs: int
    batch_size: int
    patience: int
    seed: int = 0
    max_steps: int | None = None
    to_beat: float | None = None
    grace: int = GRACE
    min_improvement: float = 0.0

    def check(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be at least 0, got {self.epochs}")
        for name in ("batch_size", "patience", "grace"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if not 0 <= self.min_improvement < 1:
            raise ValueError(f"min_improvement must be a fraction in [0, 1), got {self.min_improvement}")

    def budget(self, n_items: int) -> int:
        """Optimiser steps this schedule allows over ``n_items`` items."""
        steps = self.epochs * math.ceil(n_items / self.batch_size)
        return steps if self.max_steps is None else min(steps, self.max_steps)


@dataclass
class EngineResult:
    """What a run did. history: one row per validation (epoch 0 is before training), with the mean
    training loss, the validation metrics and (from epoch 1) the epoch's wall time in seconds, its
    steps and its validation; best: the chosen epoch's metrics; step_seconds: mean
    wall time of a step (forward, backward, update), the first excluded; resumed_from: the epoch
    a checkpoint was resumed at (0: a fresh run); kept_start: whether the caller's untouched starting
    point validated better than every epoch and was put back (see ``Finetuner.fit``); gave_up: whether it
    stopped because its best score had not beaten the schedule's ``to_beat`` within ``grace`` epochs."""

    epochs_run: int
    steps: int
    stopped_early: bool
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    step_seconds: float = 0.0
    resumed_from: int = 0
    kept_start: bool = False
    gave_up: bool = False


@dataclass
class TrainingEngine:
    """Trains ``tensors`` (name → tensor) with ``optimizer`` on a schedule.

    tensors: everything the run changes and must save and restore (trained
    parameters, plus state such as thresholds). score: the validation metric
    to minimise. modes: called with True before each epoch and False before
    validating (train/eval mode of a model, a schedule-free optimiser's
    averaging). after_step: called after every optimiser step with the step
    count (e.g. re-solving a sparsity budget), and once on resuming with the steps
    already done.
    work: the run's work folder (:class:`~ase_moma.training.work_folder.WorkFolder`): a checkpoint goes to
    its path after every epoch, and one there with its run hash is resumed from (None: no checkpoints).
    """

    tensors: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer | None
    schedule: Schedule
    score: str
    modes: Callable[[bool], None] = lambda training: None
    after_step: Callable[[int], None] = lambda steps: None
    work: WorkFolder | None = None
    progress: bool = True
    desc: str = "train"

    def run(self, n_items: int, loss: Callable[[Sequence[int]], torch.Tensor],
            validate: Callable[[], dict[str, float]]) -> EngineResult:
        """Train over items ``0..n_items-1``; on return the tensors hold the best weights.

        loss: the scalar loss of a batch of item indices: differentiable, for the engine to
        back-propagate, or detached when the callable has back-propagated it itself (a batch
        accumulated chunk by chunk); gradients are zeroed before it is called.
        validate: metrics of the current weights, including ``score``.
        """
        self.schedule.check()
        if n_items < 1:
            raise ValueError("nothing to train on: the training set is empty")
        budget = self.schedule.budget(n_items) if self.tensors else 0
        state = self._resume()
        if state is None:
            self.modes(False)
            first = validate()
            state = {"epoch": 0, "steps": 0, "bad_epochs": 0, "best_epoch": 0, "best": first,
                     "history": [{"epoch": 0, "train_loss": None, **first}],
                     "resumed_from": 0}
            best_values = self._snapshot()
        else:
            state, best_values = state
        step_times: list[float] = []
        bar = tqdm(total=budget, initial=min(state["steps"], budget), disable=not self.progress, unit="step",
                   desc=self.desc)
        while (state["epoch"] < self.schedule.epochs and state["bad_epochs"] < self.schedule.patience
               and state["steps"] < budget and not self._gave_up(state)):
            state["epoch"] += 1
            epoch_start = time.perf_counter()
            self.modes(True)
            order = np.random.default_rng([self.schedule.seed, state["epoch"]]).permutation(n_items)
            losses = []
            for begin in range(0, n_items, self.schedule.batch_size):
                if state["steps"] >= budget:
                    break
                start = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                value = loss(order[begin:begin + self.schedule.batch_size].tolist())
                if value.requires_grad:
                    value.backward()
                self.optimizer.step()
                state["steps"] += 1
                self.after_step(state["steps"])
                step_times.append(time.perf_counter() - start)
                losses.append(float(value.detach()))
                bar.update(1)
            self.modes(False)
            metrics = validate()
            state["history"].append({"epoch": state["epoch"], "train_loss": float(np.mean(losses)), **metrics,
                                     "seconds": time.perf_counter() - epoch_start})
            if metrics[self.score] < state["best"][self.score] * (1 - self.schedule.min_improvement):
                state.update(best=metrics, best_epoch=state["epoch"], bad_epochs=0)
                best_values = self._snapshot()
            else:
                state["bad_epochs"] += 1
            bar.set_postfix(epoch=state["epoch"], **{self.score: f"{metrics[self.score]:.4g}",
                                                      "best": f"{state['best'][self.score]:.4g}"})
            if self.work is not None:
                save_checkpoint(self.work.path, {"run_hash": self.work.run_hash, **state}, self.tensors, best_values,
                                self.optimizer)
        bar.close()
        self._assign(best_values)
        return EngineResult(
            epochs_run=state["epoch"], steps=state["steps"],
            stopped_early=state["bad_epochs"] >= self.schedule.patience,
            best_epoch=state["best_epoch"], best=dict(state["best"]), history=state["history"],
            step_seconds=float(np.mean(step_times[1:] or step_times)) if step_times else 0.0,
            resumed_from=state["resumed_from"], gave_up=self._gave_up(state))

    def _gave_up(self, state: dict[str, Any]) -> bool:
        """Whether ``grace`` epochs have run and the best score is still not below the schedule's ``to_beat``."""
        return (self.schedule.to_beat is not None and state["epoch"] >= self.schedule.grace
                and state["best"][self.score] >= self.schedule.to_beat)

    def _resume(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        if self.work is None:
            return None
        found = load_checkpoint(self.work.path, self.work.run_hash)
        if found is None:
            return None
        record, current, best, optim_state = found
        self._assign(current)
        if self.optimizer is not None and optim_state is not None:
            self.optimizer.load_state_dict(optim_state)
        record.pop("run_hash")
        record["resumed_from"] = record["epoch"]
        self.after_step(record["steps"])
        return record, best

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.tensors.items()}

    @torch.no_grad()
    def _assign(self, values: dict[str, torch.Tensor]) -> None:
        if values.keys() != self.tensors.keys():
            raise ValueError("the checkpoint does not match the model being trained")
        for name, tensor in self.tensors.items():
            tensor.copy_(values[name].to(dtype=tensor.dtype, device=tensor.device))
