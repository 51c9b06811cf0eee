"""GemNet-OC as a conservative potential: energies, and forces and stress by autograd.

Every distance and angle is computed from the atoms' positions and the cells inside
:meth:`GemNetOC.forward`, after an optional strain, so forces (−∂E/∂r) and stress
((1/V) ∂E/∂ε) are exact derivatives of the energy. The direct-force head JMP was
pre-trained with is not part of this model: forces from a separate head are not the
gradient of the energy, which molecular dynamics and relaxations need.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from ase_moma.plugins.gemnet_oc.bases import BasisEmbedding, CircularBasis, RadialBasis, SphericalBasis
from ase_moma.plugins.gemnet_oc.config import GemNetOCConfig
from ase_moma.plugins.gemnet_oc.graph import GRAPHS
from ase_moma.plugins.gemnet_oc.interactions import InteractionBlock, OutputBlock
from ase_moma.plugins.gemnet_oc.layers import AtomEmbedding, Dense, EdgeEmbedding, padded, residual_stack

# extra(h (N, F), main-graph edge vectors (E, 3) Å) → ((B,) eV, per-atom output or None)
ExtraEnergy = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


class GemNetOC(nn.Module):
    """GemNet-OC with all four interactions (as JMP); module names as the reference's state dict.

    The reference shares one radial basis between three angular bases and registers each
    output block's layers twice (``layers`` and ``seq_energy_pre``); here every module
    appears once (no tensor is stored twice), and the converter maps those names.

    ``reference_energies`` (num_elements,) eV per atom of element Z (index Z − 1) is
    added to the energy: zero in a pretrained checkpoint, refitted on fine-tuning.
    """

    def __init__(self, config: GemNetOCConfig) -> None:
        super().__init__()
        self.config = config
        radial, spherical = config.num_radial, config.num_spherical

        def rbf(cutoff: float) -> RadialBasis:
            return RadialBasis(radial, cutoff, config.envelope_exponent)

        self.radial_basis = rbf(config.cutoff)
        self.cbf_basis_qint = CircularBasis(spherical, rbf(config.cutoff_qint))
        self.sbf_basis_qint = SphericalBasis(spherical, rbf(config.cutoff))
        self.radial_basis_aeaint = rbf(config.cutoff_aeaint)
        self.cbf_basis_aeint = CircularBasis(spherical, rbf(config.cutoff))
        self.cbf_basis_eaint = CircularBasis(spherical, rbf(config.cutoff_aeaint))
        self.radial_basis_aint = rbf(config.cutoff_aint)
        self.cbf_basis_tint = CircularBasis(spherical, rbf(config.cutoff))

        self.mlp_rbf_qint = Dense(radial, config.emb_size_rbf)
        self.mlp_cbf_qint = BasisEmbedding(radial, config.emb_size_cbf, spherical)
        self.mlp_sbf_qint = BasisEmbedding(radial, config.emb_size_sbf, spherical ** 2)
        self.mlp_rbf_aeint = Dense(radial, config.emb_size_rbf)
        self.mlp_cbf_aeint = BasisEmbedding(radial, config.emb_size_cbf, spherical)
        self.mlp_rbf_eaint = Dense(radial, config.emb_size_rbf)
        self.mlp_cbf_eaint = BasisEmbedding(radial, config.emb_size_cbf, spherical)
        self.mlp_rbf_aint = BasisEmbedding(radial, config.emb_size_rbf)
        self.mlp_rbf_tint = Dense(radial, config.emb_size_rbf)
        self.mlp_cbf_tint = BasisEmbedding(radial, config.emb_size_cbf, spherical)
        self.mlp_rbf_h = Dense(radial, config.emb_size_rbf)
        self.mlp_rbf_out = Dense(radial, config.emb_size_rbf)

        self.atom_emb = AtomEmbedding(config.emb_size_atom, config.num_elements)
        self.edge_emb = EdgeEmbedding(config.emb_size_atom, radial, config.emb_size_edge)
        self.int_blocks = nn.ModuleList(InteractionBlock(config) for _ in range(config.num_blocks))
        self.out_blocks = nn.ModuleList(OutputBlock(config) for _ in range(config.num_blocks + 1))
        self.out_mlp_E = nn.Sequential(
            Dense(config.emb_size_atom * (config.num_blocks + 1), config.emb_size_atom, activation=True),
            *residual_stack(config.emb_size_atom, config.num_global_out_layers))
        self.out_energy = Dense(config.emb_size_atom, 1)
        self.reference_energies = nn.Parameter(torch.zeros(config.num_elements))

    def forward(self, g: dict[str, torch.Tensor], *, forces: bool = True, stress: bool = True,
                extra: ExtraEnergy | None = None) -> dict[str, torch.Tensor]:
        """energy (B,) eV; forces (N, 3) eV/Å and stress (B, 3, 3) eV/Å³ (ASE's sign) when asked.

        ``g`` is a batch from :func:`~ase_moma.plugins.gemnet_oc.graph.collate`. extra: an
        energy added before differentiating, ``extra(h, vectors)`` → ((B,) eV, per-atom output
        or None) from the last block's atom embeddings and the main graph's edge vectors; its
        per-atom output is returned as ``per_atom``.
        """
        positions, strain = g["positions"], None
        if forces:
            positions = positions.detach().requires_grad_(True)
        if stress:
            strain = torch.zeros_like(g["cell"], requires_grad=True)
        with torch.enable_grad() if (forces or stress) else contextlib.nullcontext():
            energy, h, vectors = self.energy_and_features(g, positions, strain)
            out = {}
            if extra is not None:
                added, out["per_atom"] = extra(h, vectors)
                energy = energy + added.to(energy.dtype)
            out["energy"] = energy
            if forces or stress:
                wrt = ([positions] if forces else []) + ([strain] if stress else [])
                grads = torch.autograd.grad(energy.sum(), wrt, create_graph=self.training)
                if forces:
                    out["forces"] = -grads[0]
                if stress:
                    volume = torch.linalg.det(g["cell"]).abs()
                    out["stress"] = grads[-1] / volume[:, None, None]
        return out

    def energy_and_features(self, g: dict[str, torch.Tensor], positions: torch.Tensor | None = None,
                            strain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) energies in eV, (N, emb_size_atom) atom embeddings after the last block, and (E, 3)
        vectors in Å of the main graph's edges (source image − target).

        strain: (B, 3, 3) symmetric-in-effect deformation ε applied as r → r (1 + ε).
        """
        positions = g["positions"] if positions is None else positions
        cell = g["cell"]
        if strain is not None:
            deformation = torch.eye(3, dtype=cell.dtype, device=cell.device) + (strain + strain.transpose(1, 2)) / 2
            positions = torch.einsum("ni,nij->nj", positions, deformation[g["batch"]])
            cell = cell @ deformation
        vectors = {name: _edge_vectors(g, name, positions, cell) for name in GRAPHS}
        geometry = {name: _lengths_and_directions(v) for name, v in vectors.items()}
        bases = self._bases(g, geometry, len(positions))
        numbers = g["numbers"]
        h = self.atom_emb(numbers)
        m = self.edge_emb(h, bases["main_rbf"], g["main_src"], g["main_tgt"])
        outputs = [self.out_blocks[0](h, m, bases["output"], g["main_tgt"])]
        for block, output in zip(self.int_blocks, self.out_blocks[1:]):
            h, m = block(h, m, bases, g)
            outputs.append(output(h, m, bases["output"], g["main_tgt"]))
        per_atom = self.out_energy(self.out_mlp_E(torch.cat(outputs, dim=-1))).squeeze(-1)
        per_atom = per_atom + self.reference_energies[numbers - 1]
        energy = torch.zeros(len(g["n_atoms"]), dtype=per_atom.dtype, device=per_atom.device)
        return energy.index_add(0, g["batch"], per_atom), h, vectors["main"]

    def _bases(self, g: dict, geometry: dict, n_atoms: int) -> dict:
        """Every interaction's projected bases (shared by all blocks)."""
        d_main, u_main = geometry["main"]
        d_qint, u_qint = geometry["qint"]
        d_aea, u_aea = geometry["aea"]
        d_a2a, _ = geometry["a2a"]
        rbf_main = self.radial_basis(d_main)

        rad, cir = self.cbf_basis_tint(d_main, _cosine(u_main[g["e2e_out"]], u_main[g["e2e_in"]]))
        e2e = {"rad": self.mlp_rbf_tint(rbf_main),
               "cir": (self.mlp_cbf_tint.project(rad), _angular(cir, g["e2e_out"], g["e2e_agg"], len(d_main)))}

        cos_cab, cos_abd, dihedral = _quadruplet_angles(u_main, u_qint, g)
        rad_q, cir_q = self.cbf_basis_qint(d_qint, cos_abd)
        rad_s, sph_s = self.sbf_basis_qint(d_main, cos_cab, dihedral)
        qint = {"rad": self.mlp_rbf_qint(rbf_main),
                "cir": self.mlp_cbf_qint.per_member(rad_q, cir_q, g["tin_out"]),
                "sph": (self.mlp_sbf_qint.project(rad_s), _angular(sph_s, g["quad_out"], g["quad_agg"], len(d_main)))}

        rad, cir = self.cbf_basis_aeint(d_main, _cosine(u_main[g["a2e_out"]], u_aea[g["a2e_in"]]))
        a2e = {"rad": self.mlp_rbf_aeint(self.radial_basis_aeaint(d_aea)),
               "cir": (self.mlp_cbf_aeint.project(rad), _angular(cir, g["a2e_out"], g["a2e_agg"], len(d_main)))}

        rad, cir = self.cbf_basis_eaint(d_aea, _cosine(u_aea[g["e2a_out"]], u_main[g["e2a_in"]]))
        per_atom = padded(self.mlp_cbf_eaint.project(rad), g["aea_tgt"], g["aea_inner"], n_atoms)
        per_atom = per_atom.transpose(1, 2).flatten(2)  # (N, interm, K·S)
        e2a = {"rad": self.mlp_rbf_eaint(rbf_main),
               "cir": (per_atom, _angular(cir, g["e2a_out"], g["e2a_agg"], len(d_aea)))}

        a2a = padded(self.mlp_rbf_aint.project(self.radial_basis_aint(d_a2a)), g["a2a_tgt"], g["a2a_inner"],
                     n_atoms).transpose(1, 2)  # (N, emb_size_rbf, K)
        return {"main_rbf": rbf_main, "e2e": e2e, "qint": qint, "a2e": a2e, "e2a": e2a, "a2a": a2a,
                "atom_update": self.mlp_rbf_h(rbf_main), "output": self.mlp_rbf_out(rbf_main)}


def _edge_vectors(g: dict, name: str, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """(E, 3) vectors in Å from each edge's target to its source image."""
    shift = g[f"{name}_shift"].to(positions.dtype)
    offset = torch.einsum("ei,eij->ej", shift, cell[g["batch"][g[f"{name}_tgt"]]])
    return positions[g[f"{name}_src"]] + offset - positions[g[f"{name}_tgt"]]


def _lengths_and_directions(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.linalg.vector_norm(vectors, dim=-1)
    return lengths, vectors / lengths[:, None]


def _cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1).clamp(-1, 1)


def _angular(values: torch.Tensor, group: torch.Tensor, rank: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(members, S) angular basis → (groups, S, K) zero-padded, as the bilinear layers take it."""
    return padded(values, group, rank, n_groups).transpose(1, 2)


def _quadruplet_angles(u_main: torch.Tensor, u_qint: torch.Tensor,
                       g: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos of angle cab per quadruplet, cos of angle abd per input triplet, dihedral c-a-b-d per quadruplet.

    As the reference, "abd" is the angle between b→a and d→b and the dihedral is the
    unsigned angle between the normals of the planes (c, a, b) and (a, b, d).
    """
    u_ba = u_qint[g["tin_out"]]
    u_db = u_main[g["tin_in"]]
    cos_abd = _cosine(u_ba, u_db)
    normal_abd = torch.linalg.cross(u_db, u_ba)[g["quad_tin"]]
    u_ca = u_main[g["tout_out"]]
    u_ba_out = u_qint[g["tout_in"]]
    cos_cab = _cosine(u_ca, u_ba_out)
    normal_cab = torch.linalg.cross(u_ca, u_ba_out)[g["quad_tout"]]
    sine = torch.linalg.vector_norm(torch.linalg.cross(normal_cab, normal_abd), dim=-1).clamp(min=1e-9)
    dihedral = torch.atan2(sine, (normal_cab * normal_abd).sum(-1))
    return cos_cab[g["quad_tout"]], cos_abd, dihedral
