"""Soft-threshold reparametrisation (STR) of a path-weight increment: W' = W + S(ΔW).

S(ΔW) = sign(ΔW) · relu(|ΔW| − δ) with δ = sigmoid(τ), τ one learnable scalar
per layer (a :class:`LayerThreshold` shared by the layer's tensors). ΔW starts
from N(0, σ²) rather than zero, because at zero the threshold would block
every gradient; δ starts at ``initial_threshold``. Entries with |ΔW| ≤ δ are
pruned: they leave W unchanged and receive no gradient.
"""

from __future__ import annotations

import math

import torch

SIGMA = 0.01  # std of the initial ΔW
INITIAL_THRESHOLD = 1e-3  # sigmoid(τ₀)


def soft_threshold(delta: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """sign(delta) · relu(|delta| − threshold), elementwise; zero where |delta| ≤ threshold."""
    return torch.sign(delta) * torch.relu(delta.abs() - threshold)


class LayerThreshold(torch.nn.Module):
    """The learnable τ of one layer; ``threshold()`` is δ = sigmoid(τ)."""

    def __init__(self, initial_threshold: float = INITIAL_THRESHOLD) -> None:
        super().__init__()
        if not 0 < initial_threshold < 1:
            raise ValueError(f"the initial threshold must lie in (0, 1), got {initial_threshold}")
        self.tau = torch.nn.Parameter(torch.tensor(math.log(initial_threshold / (1 - initial_threshold))))

    def threshold(self) -> torch.Tensor:
        return torch.sigmoid(self.tau)


class SparseIncrement(torch.nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrisation W ↦ W + S(ΔW) of one path weight.

    shape, dtype, device: those of W. threshold: the layer's shared τ.
    """

    def __init__(self, weight: torch.Tensor, threshold: LayerThreshold, sigma: float = SIGMA) -> None:
        super().__init__()
        self.delta = torch.nn.Parameter(torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
                                        * sigma)
        self.layer_threshold = threshold

    def increment(self) -> torch.Tensor:
        """S(ΔW), the shape of W; exactly zero at pruned entries."""
        return soft_threshold(self.delta, self.layer_threshold.threshold().to(self.delta.dtype))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.increment()

    def increment_parameters(self) -> list[torch.nn.Parameter]:
        """ΔW: the parameters of the increment group (τ is the layer's, trained apart)."""
        return [self.delta]
