"""GemNet-OC's message passing: triplet, quadruplet, atom-edge and atom-atom interactions,
the atom update, the per-block output, and the interaction block that combines them.

Shapes: h (N, emb_size_atom) atom embeddings; m (E, emb_size_edge) embeddings of the
main graph's edges; ``bases`` hold each interaction's projected basis (see model.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ase_moma.plugins.gemnet_oc.config import GemNetOCConfig
from ase_moma.plugins.gemnet_oc.layers import (Bilinear, Dense, EdgeEmbedding, ScaleFactor, padded,
                                               residual_stack)

_INV_SQRT_2 = 1 / math.sqrt(2.0)


class TripletInteraction(nn.Module):
    """Messages from edges (or atoms) b→a into edges c→a, weighted by d_ba and the angle cab.

    symmetric: the result updates c→a and, through a second projection, a→c.
    """

    def __init__(self, emb_size_in: int, emb_size_out: int, config: GemNetOCConfig, symmetric: bool) -> None:
        super().__init__()
        trip_in, trip_out = config.emb_size_trip_in, config.emb_size_trip_out
        self.dense_ba = Dense(emb_size_in, emb_size_in, activation=True)
        self.mlp_rbf = Dense(config.emb_size_rbf, emb_size_in)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = Bilinear(trip_in, config.emb_size_cbf, trip_out)
        self.scale_cbf_sum = ScaleFactor()
        self.down_projection = Dense(emb_size_in, trip_in, activation=True)
        self.up_projection_ca = Dense(trip_out, emb_size_out, activation=True)
        if symmetric:
            self.up_projection_ac = Dense(trip_out, emb_size_out, activation=True)
        self.symmetric = symmetric

    def forward(self, m: torch.Tensor, bases: dict, index: dict, swap: torch.Tensor | None,
                expand: torch.Tensor | None = None, outer: tuple | None = None) -> torch.Tensor:
        x = self.dense_ba(m)
        if expand is not None:
            x = x[expand]
        x = self.scale_rbf(x * self.mlp_rbf(bases["rad"]))
        x = self.down_projection(x)[index["in"]]
        x = self.scale_cbf_sum(self.mlp_cbf(bases["cir"], x, index["out"], index["agg"], outer))
        if self.symmetric:
            return (self.up_projection_ca(x) + self.up_projection_ac(x)[swap]) * _INV_SQRT_2
        return self.up_projection_ca(x)


class QuadrupletInteraction(nn.Module):
    """Messages from edges d→b through b→a into c→a, weighted by d_db, angle abd, d_ca, angle cab
    and the dihedral c-a-b-d; updates c→a and a→c."""

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__()
        edge, quad_in, quad_out = config.emb_size_edge, config.emb_size_quad_in, config.emb_size_quad_out
        self.dense_db = Dense(edge, edge, activation=True)
        self.mlp_rbf = Dense(config.emb_size_rbf, edge)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = Dense(config.emb_size_cbf, quad_in)
        self.scale_cbf = ScaleFactor()
        self.mlp_sbf = Bilinear(quad_in, config.emb_size_sbf, quad_out)
        self.scale_sbf_sum = ScaleFactor()
        self.down_projection = Dense(edge, quad_in, activation=True)
        self.up_projection_ca = Dense(quad_out, edge, activation=True)
        self.up_projection_ac = Dense(quad_out, edge, activation=True)

    def forward(self, m: torch.Tensor, bases: dict, index: dict, swap: torch.Tensor) -> torch.Tensor:
        x = self.dense_db(m)
        x = self.scale_rbf(x * self.mlp_rbf(bases["rad"]))
        x = self.down_projection(x)[index["tin_in"]]
        x = self.scale_cbf(x * self.mlp_cbf(bases["cir"]))
        x = x[index["quad_tin"]]
        x = self.scale_sbf_sum(self.mlp_sbf(bases["sph"], x, index["quad_out"], index["quad_agg"]))
        return (self.up_projection_ca(x) + self.up_projection_ac(x)[swap]) * _INV_SQRT_2


class PairInteraction(nn.Module):
    """Messages from atoms b to atoms a over the atom-atom graph, weighted by d_ba."""

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__()
        atom, pair_in, pair_out = config.emb_size_atom, config.emb_size_aint_in, config.emb_size_aint_out
        self.bilinear = Dense(config.emb_size_rbf * pair_in, pair_out)
        self.scale_rbf_sum = ScaleFactor()
        self.down_projection = Dense(atom, pair_in, activation=True)
        self.up_projection = Dense(pair_out, atom, activation=True)

    def forward(self, h: torch.Tensor, rad: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor,
                rank: torch.Tensor) -> torch.Tensor:
        """rad: (N, emb_size_rbf, K) projected radial basis of each atom's K neighbours."""
        neighbours = padded(self.down_projection(h)[src], tgt, rank, len(h))  # (N, K, pair_in)
        summed = rad @ neighbours  # (N, emb_size_rbf, pair_in)
        return self.up_projection(self.scale_rbf_sum(self.bilinear(summed.flatten(1))))


class AtomUpdate(nn.Module):
    """Sum of each atom's incoming edge embeddings, weighted by a radial basis, then an MLP to atom width."""

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__()
        self.dense_rbf = Dense(config.emb_size_rbf, config.emb_size_edge)
        self.scale_sum = ScaleFactor()
        widen = [Dense(config.emb_size_edge, config.emb_size_atom, activation=True)] * (
            config.emb_size_edge != config.emb_size_atom)
        self.layers = nn.ModuleList([*widen, *residual_stack(config.emb_size_atom, config.num_atom)])

    def summed(self, m: torch.Tensor, rad: torch.Tensor, tgt: torch.Tensor, n_atoms: int) -> torch.Tensor:
        x = torch.zeros(n_atoms, m.shape[1], dtype=m.dtype, device=m.device)
        x.index_add_(0, tgt, m * self.dense_rbf(rad))
        x = self.scale_sum(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, h: torch.Tensor, m: torch.Tensor, rad: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.summed(m, rad, tgt, len(h))


class OutputBlock(AtomUpdate):
    """A block's per-atom energy features: the atom update, merged with h, then more residual layers."""

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__(config)
        self.seq_energy2 = residual_stack(config.emb_size_atom, config.num_output_afteratom)

    def forward(self, h: torch.Tensor, m: torch.Tensor, rad: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        x = self.summed(m, rad, tgt, len(h))
        if len(self.seq_energy2):
            x = (x + h) * _INV_SQRT_2
            for layer in self.seq_energy2:
                x = layer(x)
        return x


class InteractionBlock(nn.Module):
    """One GemNet-OC block: all four interactions, residual updates of m, then of h, then m from h."""

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__()
        atom, edge = config.emb_size_atom, config.emb_size_edge
        self.dense_ca = Dense(edge, edge, activation=True)
        self.trip_interaction = TripletInteraction(edge, edge, config, symmetric=True)
        self.quad_interaction = QuadrupletInteraction(config)
        self.atom_edge_interaction = TripletInteraction(atom, edge, config, symmetric=True)
        self.edge_atom_interaction = TripletInteraction(edge, atom, config, symmetric=False)
        self.atom_interaction = PairInteraction(config)
        self.layers_before_skip = residual_stack(edge, config.num_before_skip)
        self.layers_after_skip = residual_stack(edge, config.num_after_skip)
        self.atom_emb_layers = residual_stack(atom, config.num_atom_emb_layers)
        self.atom_update = AtomUpdate(config)
        self.concat_layer = EdgeEmbedding(atom, edge, edge)
        self.residual_m = residual_stack(edge, config.num_concat)

    def forward(self, h: torch.Tensor, m: torch.Tensor, bases: dict, g: dict) -> tuple[torch.Tensor, torch.Tensor]:
        swap = g["main_swap"]
        x = (self.dense_ca(m)
             + self.trip_interaction(m, bases["e2e"], _triplet_index(g, "e2e"), swap)
             + self.quad_interaction(m, bases["qint"], g, swap)
             + self.atom_edge_interaction(h, bases["a2e"], _triplet_index(g, "a2e"), swap, expand=g["aea_src"])
             ) / 2.0  # 1/√(number of edge interactions = 4)
        h_e2a = self.edge_atom_interaction(m, bases["e2a"], _triplet_index(g, "e2a"), None,
                                           outer=(g["aea_tgt"], g["aea_inner"], len(h)))
        h_a2a = self.atom_interaction(h, bases["a2a"], g["a2a_src"], g["a2a_tgt"], g["a2a_inner"])
        h = (h + h_e2a + h_a2a) / math.sqrt(3.0)  # 1/√(number of atom interactions = 3)
        for layer in self.layers_before_skip:
            x = layer(x)
        m = (m + x) * _INV_SQRT_2
        for layer in self.layers_after_skip:
            m = layer(m)
        for layer in self.atom_emb_layers:
            h = layer(h)
        h = (h + self.atom_update(h, m, bases["atom_update"], g["main_tgt"])) * _INV_SQRT_2
        m2 = self.concat_layer(h, m, g["main_src"], g["main_tgt"])
        for layer in self.residual_m:
            m2 = layer(m2)
        return h, (m + m2) * _INV_SQRT_2


def _triplet_index(g: dict, kind: str) -> dict[str, torch.Tensor]:
    return {"in": g[f"{kind}_in"], "out": g[f"{kind}_out"], "agg": g[f"{kind}_agg"]}
