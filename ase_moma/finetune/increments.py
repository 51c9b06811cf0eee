"""Increments on a backbone's path weights, attached with ``torch.nn.utils.parametrize``.

While attached, every path weight W of the model reads as W + increment; W
itself stays frozen in ``parametrizations.<name>.original``. :meth:`dense`
gives the increments as plain tensors for export, :meth:`detach` restores the
plain model with its original weights.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from ase_moma.backbone import Backbone
from ase_moma.finetune.lora import ALPHA, RANK, LowRankIncrement, dense_blocks
from ase_moma.finetune.sparse import INITIAL_THRESHOLD, SIGMA, LayerThreshold, SparseIncrement, ThresholdOffset

INCREMENT_KINDS = ("sparse", "lora")


class IncrementSet(torch.nn.Module):
    """One increment per path weight of ``backbone``: ``sparse`` (STR) or ``lora``.

    Sparse increments share one :class:`LayerThreshold` per ``PathWeight.layer``.
    Construction draws the initial increments from torch's global generator.
    """

    def __init__(self, backbone: Backbone, kind: str, *, sigma: float = SIGMA,
                 initial_threshold: float = INITIAL_THRESHOLD, rank: int = RANK, alpha: float = ALPHA) -> None:
        super().__init__()
        if kind not in INCREMENT_KINDS:
            raise ValueError(f"increment kind must be one of {', '.join(INCREMENT_KINDS)}, got {kind!r}")
        self.kind = kind
        self.path_weights = backbone.path_weights()
        if not self.path_weights:
            raise ValueError(f"the {backbone.name} backbone exposes no path weights to tune")
        parameters = dict(backbone.model.named_parameters())
        self.thresholds = torch.nn.ModuleDict()
        self.offset = ThresholdOffset()
        self.increments = torch.nn.ModuleDict()
        for weight in self.path_weights:
            tensor = parameters[weight.name]
            if kind == "sparse":
                key = _key(weight.layer)
                if key not in self.thresholds:
                    self.thresholds[key] = LayerThreshold(initial_threshold).to(tensor.device)
                increment = SparseIncrement(tensor, self.thresholds[key], self.offset.to(tensor.device), sigma)
            else:
                increment = LowRankIncrement(tensor, weight.blocks or dense_blocks(tensor.shape), rank, alpha)
            self.increments[_key(weight.name)] = increment
        self._model: torch.nn.Module | None = None

    def attach(self, backbone: Backbone) -> None:
        """Parametrise each path weight of ``backbone.model`` as W + increment; W is frozen."""
        if self._model is not None:
            raise RuntimeError("these increments are already attached")
        modules = dict(backbone.model.named_modules())
        for weight in self.path_weights:
            owner, attribute = _owner(modules, weight.name)
            getattr(owner, attribute).requires_grad_(False)
            parametrize.register_parametrization(owner, attribute, self.increments[_key(weight.name)])
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
        return {weight.name: self.increments[_key(weight.name)].increment().detach().clone()
                for weight in self.path_weights}

    def increment_parameters(self) -> list[torch.nn.Parameter]:
        """ΔW (sparse) or the A, B factors (lora)."""
        return [p for increment in self.increments.values() for p in increment.increment_parameters()]

    def threshold_parameters(self) -> list[torch.nn.Parameter]:
        """The per-layer τ of sparse increments (empty for lora)."""
        return [threshold.tau for threshold in self.thresholds.values()]

    def layer_thresholds(self) -> dict[str, float]:
        """``{layer: δ_ℓ = sigmoid(τ_ℓ)}`` now (sparse increments)."""
        layers = {_key(w.layer): w.layer for w in self.path_weights}
        return {layers[key]: float(threshold.threshold().detach()) for key, threshold in self.thresholds.items()}

    @torch.no_grad()
    def moved_fraction(self) -> float:
        """The fraction of path-weight entries the sparse increments move now."""
        moved = sum(int(torch.count_nonzero(inc.increment())) for inc in self.increments.values())
        return moved / sum(inc.delta.numel() for inc in self.increments.values())

    @torch.no_grad()
    def start_along(self, gradients: dict[str, torch.Tensor], fraction: float, sigma: float = SIGMA) -> None:
        """ΔW starts a step of at most σ down the training loss: ΔW₀ = −sign(g) · σ · min(|g| / g*, 1),
        g = ∂L/∂W and g* the |g| of the entry at the edge of the budget (the ``fraction`` of all
        path-weight entries with the largest |g|). The budget then first keeps the entries the loss is
        most sensitive to, each starting at σ; an entry without gradient starts at zero and never moves.
        gradients: ``{parameter name: ∂L/∂W}`` (shape of W) for every path weight.
        """
        magnitudes = torch.cat([gradients[w.name].reshape(-1).abs().double() for w in self.path_weights])
        keep = min(max(round(fraction * magnitudes.numel()), 1), magnitudes.numel())
        edge = float(torch.topk(magnitudes, keep).values[-1])
        if edge <= 0:
            raise ValueError("the training loss has no gradient on the path weights: nothing to fine-tune")
        for weight in self.path_weights:
            increment = self.increments[_key(weight.name)]
            gradient = gradients[weight.name].to(increment.delta.dtype)
            increment.delta.copy_(-torch.sign(gradient) * sigma * (gradient.abs() / edge).clamp(max=1.0))

    @torch.no_grad()
    def hold_fraction(self, fraction: float) -> None:
        """Set the global offset c so that the increments move ``fraction`` of all path-weight entries.

        With margins m = |ΔW| − sigmoid(τ_ℓ) over every entry, c is the (k+1)-th
        largest margin for k = round(fraction · N): the k entries with the largest
        margins stay (those of them with m > 0 move), the rest are pruned.
        Entries tied with the (k+1)-th margin stay too: the increments start at
        one size σ, so a gradient tied at the budget's edge (float32 rounding;
        it happened on mlearn Si with one thread) tied the k-th and (k+1)-th
        margins, and a cut equal to both moved no entry at all.
        """
        parts = [inc.margins().reshape(-1) for inc in self.increments.values()]
        margins = torch.cat([part.double() for part in parts])
        keep = min(max(round(fraction * margins.numel()), 0), margins.numel())
        if keep >= margins.numel():
            self.offset.value.fill_(float(margins.min()) - 1e-12)
            return
        largest = torch.topk(margins, keep + 1).values
        cut = largest[-1].to(parts[0].dtype)
        if keep and largest[-2] == largest[-1]:  # a tie at the edge: a cut equal to it would move none of them
            cut = torch.nextafter(cut, torch.full_like(cut, -math.inf))
        self.offset.value.fill_(float(cut))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything training changes here: ΔW or the LoRA factors, τ, and the offset c."""
        tensors = {name: p for name, p in self.named_parameters()}
        if self.kind == "sparse":
            tensors["offset"] = self.offset.value
        return tensors


def _key(name: str) -> str:
    """A ModuleDict key for a dotted name (dots are not allowed there)."""
    return name.replace(".", ":")


def _owner(modules: dict[str, torch.nn.Module], name: str) -> tuple[torch.nn.Module, str]:
    """The module holding parameter ``name`` and the attribute name there."""
    owner, _, attribute = name.rpartition(".")
    return modules[owner], attribute
