"""Low-rank increments on path weights (LoRA, path by path as in ELoRA): W' = W + α/r · A B.

A flat e3nn weight concatenates one matrix per path; each path gets its own
pair A (rows × r), B (r × cols), so an increment never mixes paths and the
model stays equivariant. A dense weight (a radial MLP layer) is one block.
B starts at zero, so training starts from the pretrained model.
"""

from __future__ import annotations

from math import prod
from typing import Sequence

import torch

from ase_moma.backbone import Backbone
from ase_moma.finetune.increments import IncrementSet

RANK = 4
ALPHA = 8.0


class LowRankIncrement(torch.nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrisation W ↦ W + Σ_paths α/r · A_p B_p.

    blocks: ``(start, stop, rows, cols)`` of each path in the flattened W
    (rows · cols = stop − start), in order, tiling W.
    """

    def __init__(self, weight: torch.Tensor, blocks: Sequence[tuple[int, int, int, int]], rank: int = RANK,
                 alpha: float = ALPHA) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"the LoRA rank must be at least 1, got {rank}")
        self.blocks = [tuple(int(v) for v in block) for block in blocks]
        self.shape = tuple(weight.shape)
        self.scale = alpha / rank
        options = {"dtype": weight.dtype, "device": weight.device}
        self.down = torch.nn.ParameterList()
        self.up = torch.nn.ParameterList()
        for _, _, rows, cols in self.blocks:
            r = min(rank, rows, cols)
            self.down.append(torch.nn.Parameter(torch.randn(rows, r, **options) / r ** 0.5))
            self.up.append(torch.nn.Parameter(torch.zeros(r, cols, **options)))

    def increment(self) -> torch.Tensor:
        """α/r · A B path by path, the shape of W."""
        parts = [(a @ b).reshape(-1) for a, b in zip(self.down, self.up)]
        return (torch.cat(parts) * self.scale).reshape(self.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.increment()

    def increment_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.down, *self.up]


def dense_blocks(shape: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """One block for a whole weight: (rows = all but the last axis, cols = the last axis)."""
    cols = int(shape[-1]) if len(shape) > 1 else 1
    rows = prod(int(s) for s in shape) // cols
    return [(0, rows * cols, rows, cols)]


def low_rank_increments(backbone: Backbone, rank: int = RANK, alpha: float = ALPHA) -> IncrementSet:
    """A :class:`LowRankIncrement` per path weight of ``backbone``, path by path where the weight has
    e3nn paths (``PathWeight.blocks``), else over the whole weight. Draws A from torch's global generator."""
    return IncrementSet(backbone, lambda weight, tensor: LowRankIncrement(
        tensor, weight.blocks or dense_blocks(tensor.shape), rank, alpha))
