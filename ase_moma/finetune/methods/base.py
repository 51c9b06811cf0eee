"""What a fine-tuning method is: the one place that says which tensors train, at what learning rate, what
happens after a step, and what the exported model records.

A method is a :class:`FinetuneMethod` subclass with its own options dataclass (a subclass of
:class:`MethodOptions`), registered by name in the entry-point group ``ase_moma.finetune_methods``
(:mod:`ase_moma.finetune.methods`). :class:`~ase_moma.finetune.trainer.Finetuner` runs every method the
same way: it builds the method with its options, asks :meth:`FinetuneMethod.start` for the trainable
tensors (once the training data are read), calls :meth:`FinetuneMethod.settle` after every optimiser step
and whenever the weights in use change, and :meth:`FinetuneMethod.merge` before export (or
:meth:`FinetuneMethod.discard` when the untouched backbone validates better).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from ase_moma.backbone import Backbone


@dataclass
class MethodOptions:
    """A method's own settings; a method with settings subclasses this with its fields."""

    def check(self) -> None:
        """Raise ValueError naming a setting that cannot work."""


@dataclass
class StartContext:
    """What a method may use to start: the optimiser's base learning rate and weight decay, the run's
    seed, and ``path_gradients()``, the mean training loss's gradient on every path weight
    (``{parameter name: ∂L/∂W}``, computed on first call: one pass over the training set)."""

    lr: float
    weight_decay: float
    seed: int
    path_gradients: Callable[[], dict[str, torch.Tensor]]


@dataclass
class Trainable:
    """What a method trains: the optimiser's parameter groups (each a dict with ``params``, ``lr`` and
    ``weight_decay``) and every tensor training changes, by name (saved in checkpoints, restored to the
    best epoch's values; parameters and state such as thresholds)."""

    groups: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class FinetuneMethod:
    """One way of adapting a backbone to DFT data.

    name: the ``--method`` name. Options: its options dataclass. requires: the backbone capabilities it
    needs (``Backbone.require``). trains_backbone: False for a method that leaves the backbone as it is.
    """

    name: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    requires: ClassVar[tuple[str, ...]] = ()
    trains_backbone: ClassVar[bool] = True

    def __init__(self, options: MethodOptions | None = None) -> None:
        options = self.Options() if options is None else options
        if type(options) is not self.Options:
            raise TypeError(f"the {self.name} method takes {self.Options.__name__}, got {type(options).__name__}")
        options.check()
        self.options = options

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add this method's own command-line flags to ``group`` (none by default)."""

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> MethodOptions:
        """The options the flags of :meth:`add_arguments` ask for."""
        return cls.Options()

    def start(self, backbone: Backbone, context: StartContext) -> Trainable:
        """Make the method's tensors trainable on ``backbone`` (its weights are frozen on entry)."""
        raise NotImplementedError

    def settle(self) -> None:
        """Called after every optimiser step and whenever the weights in use change."""

    def metrics(self) -> dict[str, float]:
        """Method-specific figures recorded beside each validation (e.g. the fraction moved)."""
        return {}

    def merge(self, model: torch.nn.Module) -> None:
        """Fold whatever the method keeps outside ``model``'s own weights into them (before export)."""

    def discard(self) -> None:
        """Drop whatever the method attached, unmerged (the untouched backbone is put back)."""

    def thresholds(self) -> dict[str, float]:
        """Per-layer thresholds of a thresholded method (empty otherwise)."""
        return {}

    def record(self) -> dict[str, Any]:
        """What finetune.json and the hub module record about the method: ``method`` and ``preset``."""
        return {"method": self.name, "preset": None}


def dense_trainable(backbone: Backbone, names: list[str], context: StartContext) -> Trainable:
    """The backbone's own parameters ``names`` trained in place at the base learning rate."""
    named = dict(backbone.model.named_parameters())
    tensors = {}
    for name in names:
        named[name].requires_grad_(True)
        tensors[name] = named[name]
    return Trainable([{"params": list(tensors.values()), "lr": context.lr, "weight_decay": context.weight_decay}],
                     tensors)
