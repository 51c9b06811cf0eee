"""Soft-threshold reparametrisation (STR) of a path-weight increment, held to a sparsity budget.

W' = W + S(ΔW), S(ΔW) = sign(ΔW) · relu(m) · 1[m > c], m = |ΔW| − δ_ℓ, δ_ℓ = sigmoid(τ_ℓ).

- δ_ℓ: STR's soft threshold, from one learnable scalar τ_ℓ per layer
  (:class:`LayerThreshold`) trained with its own learning rate and decoupled
  weight decay λ_τ; it shrinks every increment slightly and, through the
  margins m, decides how the layers share the budget.
- c: one global cut on the margins (a buffer in :class:`ThresholdOffset`),
  re-solved after every optimiser step so that exactly the target fraction of
  path weights is moved: below the cut an entry is pruned, above it the entry
  keeps its whole soft-thresholded value (the cut does not shrink what
  survives).
- ΔW starts a step of at most SIGMA down the training loss
  (:meth:`SparseIncrements.start_along`): the target
  fraction of entries with the largest |∂L/∂W| start at SIGMA = 10 δ₀ (the
  paper's ratio σ/δ₀), every other entry below, in the order of its |∂L/∂W|.
  So the budget holds from the first step and first keeps the entries the loss
  is most sensitive to; nothing trained is thrown away later, as a warm-up
  from all entries active to the target would (it pruned 90 % of what 15 steps
  had learned, and chose by how far Adam had moved an entry — about lr per
  step whatever its gradient — rather than by how much it mattered). An entry
  with no gradient (the embedding of an element absent from the data) starts
  at zero and never moves.

Pruned entries (m ≤ max(c, 0)) leave W unchanged and get no gradient.
:class:`SparseIncrements` holds one increment per path weight, their shared
thresholds and the cut.
"""

from __future__ import annotations

import math

import torch

from ase_moma.backbone import Backbone
from ase_moma.finetune.increments import IncrementSet, module_key

# Scale of the initial ΔW: a tenth of one Adam step at lr 1e-3, so that the start decides which entries
# the budget keeps but not how far they move; the paper's σ = 0.01 would be a step ten times lr.
SIGMA = 1e-4
INITIAL_THRESHOLD = 1e-5  # sigmoid(τ₀): the paper's σ/δ₀ = 0.01/1e-3 = 10, at this σ


def soft_threshold(delta: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """sign(delta) · relu(|delta| − threshold), elementwise; zero where |delta| ≤ threshold."""
    return torch.sign(delta) * torch.relu(delta.abs() - threshold)


class LayerThreshold(torch.nn.Module):
    """The learnable τ of one layer; ``threshold()`` is sigmoid(τ)."""

    def __init__(self, initial_threshold: float = INITIAL_THRESHOLD) -> None:
        super().__init__()
        if not 0 < initial_threshold < 1:
            raise ValueError(f"the initial threshold must lie in (0, 1), got {initial_threshold}")
        self.tau = torch.nn.Parameter(torch.tensor(math.log(initial_threshold / (1 - initial_threshold))))

    def threshold(self) -> torch.Tensor:
        return torch.sigmoid(self.tau)


class ThresholdOffset(torch.nn.Module):
    """The global cut c on the margins |ΔW| − δ_ℓ (a buffer: set by the budget, not trained)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("value", torch.zeros((), dtype=torch.float64))


class SparseIncrement(torch.nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrisation W ↦ W + S(ΔW) of one path weight.

    shape, dtype, device: those of W. threshold: the layer's shared τ; offset:
    the global c shared by all increments. ΔW is drawn from N(0, sigma²) until
    training sets its start (:meth:`SparseIncrements.start_along`).
    """

    def __init__(self, weight: torch.Tensor, threshold: LayerThreshold, offset: ThresholdOffset,
                 sigma: float = SIGMA) -> None:
        super().__init__()
        self.delta = torch.nn.Parameter(torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
                                        * sigma)
        self.layer_threshold = threshold
        self.offset = [offset]  # shared, not a submodule: its buffer is saved once, by SparseIncrements

    def margins(self) -> torch.Tensor:
        """m = |ΔW| − δ_ℓ, the shape of W."""
        return self.delta.abs() - self.layer_threshold.threshold().to(self.delta.dtype)

    def kept(self) -> torch.Tensor:
        """Where the increment is not pruned: m > max(c, 0) (a boolean mask, no gradient)."""
        return self.margins().detach() > self.offset[0].value.to(self.delta.dtype).clamp(min=0)

    def increment(self) -> torch.Tensor:
        """S(ΔW), the shape of W; exactly zero at pruned entries."""
        return soft_threshold(self.delta, self.layer_threshold.threshold().to(self.delta.dtype)) * self.kept()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.increment()

    def increment_parameters(self) -> list[torch.nn.Parameter]:
        """ΔW: the parameters of the increment group (τ is the layer's, trained apart)."""
        return [self.delta]


class SparseIncrements(IncrementSet):
    """A :class:`SparseIncrement` per path weight of ``backbone``, one :class:`LayerThreshold` per
    ``PathWeight.layer`` and one :class:`ThresholdOffset` shared by all. Construction draws the
    initial ΔW from torch's global generator."""

    def __init__(self, backbone: Backbone, *, sigma: float = SIGMA,
                 initial_threshold: float = INITIAL_THRESHOLD) -> None:
        parameters = dict(backbone.model.named_parameters())
        thresholds = torch.nn.ModuleDict()
        for weight in backbone.path_weights():
            if module_key(weight.layer) not in thresholds:
                thresholds[module_key(weight.layer)] = LayerThreshold(initial_threshold).to(
                    parameters[weight.name].device)
        offset = ThresholdOffset().to(next(iter(parameters.values())).device)

        def make(weight, tensor: torch.Tensor) -> SparseIncrement:
            return SparseIncrement(tensor, thresholds[module_key(weight.layer)], offset, sigma)

        super().__init__(backbone, make, thresholds=thresholds, offset=offset)

    def threshold_parameters(self) -> list[torch.nn.Parameter]:
        """The per-layer τ."""
        return [threshold.tau for threshold in self.thresholds.values()]

    def layer_thresholds(self) -> dict[str, float]:
        """``{layer: δ_ℓ = sigmoid(τ_ℓ)}`` now."""
        layers = {module_key(w.layer): w.layer for w in self.path_weights}
        return {layers[key]: float(threshold.threshold().detach()) for key, threshold in self.thresholds.items()}

    @torch.no_grad()
    def moved_fraction(self) -> float:
        """The fraction of path-weight entries the increments move now."""
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
            increment = self.increment_of(weight)
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
        """ΔW, τ and the offset c."""
        return {**super().state_tensors(), "offset": self.offset.value}

