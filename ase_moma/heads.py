"""Property heads: per-structure targets read from a backbone's node features."""

from __future__ import annotations

import torch

from ase_moma.backbone import NodeFeatures, mean_pool


class PropertyHead(torch.nn.Module):
    """Mean pooling of invariant node features, then an MLP, in target units.

    width: F, the invariant feature width. hidden: MLP width. The MLP predicts the
    target normalised by the training mean and std, which are kept as buffers,
    so ``forward`` returns the target in its own unit (shape (B,)).
    """

    def __init__(self, width: int, hidden: int = 128, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"target std must be positive, got {std}")
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(width, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, 1),
        )
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def normalised(self, features: NodeFeatures, n_graphs: int) -> torch.Tensor:
        """(B,) prediction of (target − mean) / std."""
        return self.mlp(mean_pool(features.invariant, features.batch, n_graphs)).squeeze(-1)

    def forward(self, features: NodeFeatures, n_graphs: int) -> torch.Tensor:
        return self.normalised(features, n_graphs) * self.std + self.mean

    def config(self) -> dict[str, int]:
        """Constructor arguments (besides mean and std) for rebuilding the head."""
        return {"width": self.mlp[0].in_features, "hidden": self.mlp[0].out_features}
