"""``sparse``: soft-thresholded increments on the path weights, held to a budget of entries moved.

The increments (:class:`~ase_moma.finetune.sparse.SparseIncrements`) start a step down the training
loss's gradient on the entries it is most sensitive to, train at ``lr / √f`` for a budget moving a
fraction f of the path weights (so an Adam step moves the weights as far, in Euclidean norm, as a step
of full fine-tuning at ``lr``), with their per-layer thresholds τ at ``tau_lr`` and decoupled weight decay
λ_τ; after every step the cut is re-solved so that exactly f of the entries move.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

import torch

from ase_moma.backbone import Backbone
from ase_moma.finetune.increments import IncrementMethod
from ase_moma.finetune.methods.base import MethodOptions, StartContext, Trainable
from ase_moma.finetune.sparse import SparseIncrements


@dataclass(frozen=True)
class Preset:
    """A sparse fine-tuning preset: λ_τ (the thresholds' decoupled weight decay, the paper's knob) and
    the fraction of path weights moved (the budget)."""

    tau_decay: float
    moved: float


# L (accurate): λ_τ 0.01 as in the paper's L, 10 % moved (the paper's L runs keep about 90 % sparse).
# H (sparse): λ_τ 0.3 as in the paper's H, 2 % moved (inside the paper's 0.5–3 % headline range).
PRESETS = {"L": Preset(tau_decay=0.01, moved=0.10), "H": Preset(tau_decay=0.3, moved=0.02)}


@dataclass
class SparseOptions(MethodOptions):
    """preset: ``"L"`` or ``"H"`` (PRESETS); ``target_fraction`` (the fraction of path weights moved)
    and ``tau_decay`` (λ_τ) override its values; tau_lr: the thresholds' learning rate (default: the
    base learning rate)."""

    preset: str = "L"
    target_fraction: float | None = None
    tau_decay: float | None = None
    tau_lr: float | None = None

    def check(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown sparsity preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.target_fraction is not None and not 0 < self.target_fraction <= 1:
            raise ValueError(f"the target fraction of path weights moved must lie in (0, 1], got "
                             f"{self.target_fraction}")
        if self.tau_lr is not None and not self.tau_lr > 0:
            raise ValueError("learning rates must be positive")

    def moved_fraction(self) -> float:
        """The fraction of path weights moved: ``target_fraction``, else the preset's."""
        return self.target_fraction if self.target_fraction is not None else PRESETS[self.preset].moved

    def threshold_decay(self) -> float:
        """λ_τ: ``tau_decay`` if set, else the preset's."""
        return self.tau_decay if self.tau_decay is not None else PRESETS[self.preset].tau_decay


class Sparse(IncrementMethod):
    """Sparse equivariant fine-tuning (STR increments held to a budget)."""

    name = "sparse"
    Options = SparseOptions
    options: SparseOptions
    increments: SparseIncrements | None = None

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--preset", choices=list(PRESETS), default="L",
                           help="sparse: threshold decay 0.01 (L, accurate) or 0.3 (H, sparser)")
        group.add_argument("--tau-lr", type=float, help="learning rate of the sparse thresholds (default: --lr)")
        group.add_argument("--tau-decay", type=float, help="override the preset's threshold decay")
        group.add_argument("--moved-fraction", "--target-sparsity", dest="moved_fraction", type=float, metavar="F",
                           help="sparse: the fraction of path weights moved (default: the preset's, L 0.10, H 0.02); "
                           "--target-sparsity is its deprecated old name")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> SparseOptions:
        return SparseOptions(preset=args.preset, target_fraction=args.moved_fraction, tau_decay=args.tau_decay,
                             tau_lr=args.tau_lr)

    def start(self, backbone: Backbone, context: StartContext) -> Trainable:
        gradients = context.path_gradients()
        torch.manual_seed(context.seed)
        increments = SparseIncrements(backbone)
        fraction = self.options.moved_fraction()
        trainable = self.attach(backbone, increments, [
            {"params": increments.increment_parameters(), "lr": context.lr / math.sqrt(fraction),
             "weight_decay": context.weight_decay},
            {"params": increments.threshold_parameters(), "lr": self.options.tau_lr or context.lr,
             "weight_decay": self.options.threshold_decay()}])
        increments.start_along(gradients, fraction)
        return trainable

    def settle(self) -> None:
        """Re-solve the cut so that the increments move exactly their target fraction."""
        if self.increments is not None:
            self.increments.hold_fraction(self.options.moved_fraction())

    def metrics(self) -> dict[str, float]:
        return {"path_weights_moved": self.increments.moved_fraction()} if self.increments is not None else {}

    def thresholds(self) -> dict[str, float]:
        return self.increments.layer_thresholds() if self.increments is not None else {}

    def record(self) -> dict[str, Any]:
        return {"method": self.name, "preset": self.options.preset}
