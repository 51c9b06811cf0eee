"""GemNet-OC's building blocks: scaled SiLU dense layers, residual pairs, scale factors, embeddings.

Parameter names follow the reference implementation's state-dict layout, so a
converted checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_SILU_SCALE = 1 / 0.6  # GemNet's scaled SiLU keeps unit variance for unit-variance inputs
_INV_SQRT_2 = 1 / math.sqrt(2.0)


class ScaledSiLU(nn.Module):
    """silu(x) / 0.6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x) * _SILU_SCALE


class Dense(nn.Module):
    """A bias-free linear map, followed by the scaled SiLU when ``activation``."""

    def __init__(self, in_features: int, out_features: int, activation: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        nn.init.orthogonal_(self.linear.weight)
        self._activation = ScaledSiLU() if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._activation(self.linear(x))


class ResidualLayer(nn.Module):
    """(x + two activated dense layers of x) / √2; width kept."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.dense_mlp = nn.Sequential(Dense(units, units, activation=True), Dense(units, units, activation=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.dense_mlp(x)) * _INV_SQRT_2


def residual_stack(units: int, count: int) -> nn.ModuleList:
    return nn.ModuleList(ResidualLayer(units) for _ in range(count))


class ScaleFactor(nn.Module):
    """A fitted constant that keeps activations at unit variance; 0 means "not fitted", i.e. 1.

    Stored as a frozen parameter, as the reference implementation stores it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.tensor(0.0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.where(self.scale_factor != 0, self.scale_factor, torch.ones_like(self.scale_factor))


class AtomEmbedding(nn.Module):
    """One learnt vector per element; (N,) atomic numbers (1-based) → (N, F)."""

    def __init__(self, size: int, num_elements: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(num_elements, size)
        nn.init.uniform_(self.embeddings.weight, -math.sqrt(3), math.sqrt(3))

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.embeddings(numbers - 1)


class EdgeEmbedding(nn.Module):
    """dense([h_source, h_target, m]) for every edge; (E, out)."""

    def __init__(self, atom_features: int, edge_features: int, out_features: int) -> None:
        super().__init__()
        self.dense = Dense(2 * atom_features + edge_features, out_features, activation=True)

    def forward(self, h: torch.Tensor, m: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.dense(torch.cat([h[src], h[tgt], m], dim=-1))


def padded(values: torch.Tensor, group: torch.Tensor, rank: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(n_groups, K, ...) with ``values[i]`` at (group[i], rank[i]) and zeros elsewhere; K = max rank + 1."""
    width = int(rank.max()) + 1 if rank.numel() else 0
    out = values.new_zeros((n_groups, width, *values.shape[1:]))
    out[group, rank] = values
    return out


class Bilinear(nn.Module):
    """Sum over the members of each group of basis ⊗ member embedding, then one dense map.

    The reference's "efficient" form: members are placed in a zero-padded
    (group, K, in) matrix so that the sum over members is a batched matmul.
    """

    def __init__(self, emb_size_in: int, emb_size_interm: int, emb_size_out: int) -> None:
        super().__init__()
        self.bilinear = Dense(emb_size_in * emb_size_interm, emb_size_out)

    def forward(self, basis: tuple[torch.Tensor, torch.Tensor], m: torch.Tensor, group: torch.Tensor,
                rank: torch.Tensor, outer: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
        """basis: (rad_W (G', interm, S'), sph (G, S, K)); m: (members, in) → (G or G', out).

        outer: (group2, rank2, n_groups2) to sum the groups' results once more (edges into atoms).
        """
        rad_w, sph = basis
        members = padded(m, group, rank, sph.shape[0])  # (G, K, in)
        sph_m = sph @ members  # (G, S, in)
        if outer is not None:
            group2, rank2, size2 = outer
            sph_m = padded(sph_m, group2, rank2, size2).flatten(1, 2)
        summed = rad_w @ sph_m  # (G', interm, in)
        return self.bilinear(summed.flatten(1))
