"""Losses as objects: each is called on a batch's predictions and labels and returns a scalar.

:class:`NormalisedHuber` is the property-model loss; the potential loss
(energy, forces, stress, moments) is :class:`ase_moma.finetune.loss.PotentialLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NormalisedHuber:
    """Huber loss (δ = ``delta``) between a normalised prediction and (target − mean) / std.

    mean, std: of the training targets, in the target's unit; normalising makes
    one δ and one learning rate fit targets of any scale.
    """

    mean: float
    std: float
    delta: float = 1.0

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError(f"the target is constant over the training split ({self.mean}); nothing to learn")

    def __call__(self, normalised: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """normalised: (B,) prediction of (target − mean)/std; target: (B,) in the target's unit."""
        reference = (target.to(torch.float64) - self.mean) / self.std
        return torch.nn.functional.huber_loss(normalised.double(), reference, delta=self.delta)
