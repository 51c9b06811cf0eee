"""Increments on a backbone's path weights, attached with ``torch.nn.utils.parametrize``.

While attached, every path weight W of the model reads as W + increment; W
itself stays frozen in ``parametrizations.<name>.original``. :meth:`IncrementSet.dense`
gives the increments as plain tensors for export, :meth:`IncrementSet.detach` restores
the plain model with its original weights. :class:`IncrementMethod` is the
life cycle every increment method shares: attached at the start, merged into
the weights before export, or dropped unmerged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn.utils import parametrize

from ase_moma.backbone import Backbone, PathWeight
from ase_moma.finetune.methods.base import FinetuneMethod, Trainable


class IncrementSet(torch.nn.Module):
    """One increment per path weight of ``backbone``, made by ``make(path_weight, W)``: a module whose
    ``forward(W)`` is W + increment, with ``increment()`` and ``increment_parameters()``.

    Increments are made in the order of ``backbone.path_weights()`` (the order they draw their initial
    values from torch's global generator in). shared: modules the increments share (registered first,
    under these names, so that their parameters are named there).
    """

    def __init__(self, backbone: Backbone, make: Callable[[PathWeight, torch.Tensor], torch.nn.Module],
                 **shared: torch.nn.Module) -> None:
        super().__init__()
        for name, module in shared.items():
            setattr(self, name, module)
        self.path_weights = backbone.path_weights()
        if not self.path_weights:
            raise ValueError(f"the {backbone.name} backbone exposes no path weights to tune")
        parameters = dict(backbone.model.named_parameters())
        self.increments = torch.nn.ModuleDict({module_key(weight.name): make(weight, parameters[weight.name])
                                               for weight in self.path_weights})
        self._model: torch.nn.Module | None = None

    def increment_of(self, weight: PathWeight) -> torch.nn.Module:
        """The increment of one path weight."""
        return self.increments[module_key(weight.name)]

    def attach(self, backbone: Backbone) -> None:
        """Parametrise each path weight of ``backbone.model`` as W + increment; W is frozen."""
        if self._model is not None:
            raise RuntimeError("these increments are already attached")
        modules = dict(backbone.model.named_modules())
        for weight in self.path_weights:
            owner, attribute = _owner(modules, weight.name)
            getattr(owner, attribute).requires_grad_(False)
            parametrize.register_parametrization(owner, attribute, self.increment_of(weight))
        self._model = backbone.model

    def detach(self) -> None:
        """Remove the parametrisations; the model gets its original (untuned) weights back."""
        if self._model is None:
            return
        modules = dict(self._model.named_modules())
        for weight in self.path_weights:
            owner, attribute = _owner(modules, weight.name)
            parametrize.remove_parametrizations(owner, attribute, leave_parametrized=False)
        self._model = None

    @torch.no_grad()
    def dense(self) -> dict[str, torch.Tensor]:
        """``{parameter name: increment}`` (shape of W, W's dtype) for every path weight."""
        return {weight.name: self.increment_of(weight).increment().detach().clone() for weight in self.path_weights}

    def increment_parameters(self) -> list[torch.nn.Parameter]:
        """The increments' own trained parameters (ΔW, or the LoRA factors)."""
        return [p for increment in self.increments.values() for p in increment.increment_parameters()]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything training changes here (every parameter; subclasses add state)."""
        return dict(self.named_parameters())


class IncrementMethod(FinetuneMethod):
    """A method that trains increments on the path weights (``self.increments`` once started)."""

    requires = ("path_weights",)
    increments: IncrementSet | None = None

    @torch.no_grad()
    def merge(self, model: torch.nn.Module) -> None:
        if self.increments is None:
            return
        dense = self.increments.dense()
        self.discard()
        parameters = dict(model.named_parameters())
        for name, increment in dense.items():
            parameters[name].copy_(parameters[name] + increment)

    def attach(self, backbone: Backbone, increments: IncrementSet, groups: list[dict]) -> Trainable:
        """Attach ``increments`` to ``backbone``; they train in the optimiser ``groups``."""
        self.increments = increments
        increments.attach(backbone)
        return Trainable(groups, {f"increments.{n}": t for n, t in increments.state_tensors().items()})

    def discard(self) -> None:
        if self.increments is not None:
            self.increments.detach()
            self.increments = None


def module_key(name: str) -> str:
    """A ModuleDict key for a dotted name (dots are not allowed there)."""
    return name.replace(".", ":")


def _owner(modules: dict[str, torch.nn.Module], name: str) -> tuple[torch.nn.Module, str]:
    """The module holding parameter ``name`` and the attribute name there."""
    owner, _, attribute = name.rpartition(".")
    return modules[owner], attribute
