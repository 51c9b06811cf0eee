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
  (:meth:`~ase_moma.finetune.increments.IncrementSet.start_along`): the target
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
"""

from __future__ import annotations

import math

import torch

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
    training sets its start (:meth:`IncrementSet.start_along`).
    """

    def __init__(self, weight: torch.Tensor, threshold: LayerThreshold, offset: ThresholdOffset,
                 sigma: float = SIGMA) -> None:
        super().__init__()
        self.delta = torch.nn.Parameter(torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
                                        * sigma)
        self.layer_threshold = threshold
        self.offset = [offset]  # shared, not a submodule: its buffer is saved once, by the IncrementSet

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
