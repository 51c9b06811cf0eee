"""The spin-aware head: per-atom magnetic moments and a spin-exchange energy (DESIGN §7).

Moments are read from the backbone's node features of its last interaction
block. ``vector`` (non-collinear): m_i = Σ_c g_c(s_i) v_ic, a mix of the
block's l=1 channels v_ic with gates g computed from the invariant features
s_i, so m rotates with the structure. ``collinear``: a signed scalar
m_i = MLP(s_i). A magnetic moment is an axial vector: inversion leaves it
unchanged. SevenNet-0 is equivariant under rotations only (``is_parity``
off: its "1e" channels mix polar and axial parts), so on such a backbone the
head averages over the structure and its inverse, m = ½ (m(r) + m(−r)),
from the features the backbone passes in ``NodeFeatures.inverted``; on a
parity-equivariant backbone the 1e channels are axial already.

The exchange energy sums over directed edges (each pair twice, hence ½):
E_spin = ½ Σ_ij J(r_ij, Z_i, Z_j) · f(m_i, m_j), with f the dot product
(or the product of scalars) and J a radial network times a smooth cutoff
envelope, so E_spin and its derivatives go to zero at the cutoff. The head
is an :class:`~ase_moma.backbone.EnergyTerm`: the backbone adds E_spin before
differentiating, so forces and stress are exact derivatives of the total.
"""

from __future__ import annotations

import math

import torch

from ase_moma.backbone import Edges, NodeFeatures

SPIN_KINDS = ("vector", "collinear")


class SpinHead(torch.nn.Module):
    """Moments and exchange energy from node features.

    kind: ``"vector"`` or ``"collinear"``. width: invariant features per atom
    (F). channels: l=1 channels read (C; vector heads only). cutoff: Å, the
    range of J. hidden: MLP width. n_basis: radial Bessel functions of J.
    vector_key: the block of ``NodeFeatures.equivariant`` the vector head reads.
    The last layers start at zero, so a fresh head predicts no moments and adds
    no energy: training starts from the backbone as it is.
    """

    def __init__(self, kind: str, width: int, cutoff: float, channels: int = 0, hidden: int = 64,
                 n_basis: int = 8, n_elements: int = 119, embedding: int = 16, vector_key: str = "1e") -> None:
        super().__init__()
        if kind not in SPIN_KINDS:
            raise ValueError(f"spin head kind must be one of {', '.join(SPIN_KINDS)}, got {kind!r}")
        if kind == "vector" and channels < 1:
            raise ValueError("a vector spin head needs the backbone's l=1 channels; this backbone has none")
        self.kind, self.cutoff, self.vector_key = kind, float(cutoff), vector_key
        self.settings = {"kind": kind, "width": width, "cutoff": float(cutoff), "channels": channels,
                         "hidden": hidden, "n_basis": n_basis, "n_elements": n_elements,
                         "embedding": embedding, "vector_key": vector_key}
        outputs = channels if kind == "vector" else 1
        self.moment = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.SiLU(),
                                          torch.nn.Linear(hidden, outputs))
        self.species = torch.nn.Embedding(n_elements, embedding)
        self.exchange = torch.nn.Sequential(torch.nn.Linear(n_basis + embedding, hidden), torch.nn.SiLU(),
                                            torch.nn.Linear(hidden, 1))
        self.register_buffer("frequencies", torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff)
        for last in (self.moment[-1], self.exchange[-1]):  # start neutral: no moments, no exchange energy
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)

    def config(self) -> dict:
        """Constructor arguments, for saving the head beside its weights."""
        return dict(self.settings)

    def moments(self, features: NodeFeatures) -> torch.Tensor:
        """(N, 3) μB (vector) or (N,) μB (collinear), averaged over inversion when
        ``features.inverted`` is given."""
        moments = self._raw_moments(features)
        if features.inverted is not None:
            moments = 0.5 * (moments + self._raw_moments(features.inverted))
        return moments

    def _raw_moments(self, features: NodeFeatures) -> torch.Tensor:
        gates = self.moment(features.invariant)
        if self.kind == "collinear":
            return gates.squeeze(-1)
        if self.vector_key not in features.equivariant:
            raise ValueError(f"the backbone's node features have no {self.vector_key} block for a vector spin head")
        vectors = features.equivariant[self.vector_key]  # (N, C, 3)
        return torch.einsum("nc,ncx->nx", gates.to(vectors.dtype), vectors)

    def coupling(self, edges: Edges) -> torch.Tensor:
        """(E,) J(r_ij, Z_i, Z_j) in eV/μB², zero with zero slope at the cutoff."""
        length = edges.vectors.norm(dim=-1).clamp(min=1e-9)
        scaled = (length / self.cutoff).clamp(max=1.0)
        envelope = (1 - scaled ** 2) ** 2
        basis = torch.sin(self.frequencies.to(length.dtype) * length[:, None]) / length[:, None]
        pair = self.species(edges.numbers[edges.index[0]]) + self.species(edges.numbers[edges.index[1]])
        inputs = torch.cat([basis.to(pair.dtype), pair], dim=-1)
        return self.exchange(inputs).squeeze(-1).to(length.dtype) * envelope

    def forward(self, features: NodeFeatures, edges: Edges, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """((B,) exchange energy in eV, per-atom moments) for one batch."""
        moments = self.moments(features)
        m_i, m_j = moments[edges.index[0]], moments[edges.index[1]]
        alignment = (m_i * m_j).sum(-1) if self.kind == "vector" else m_i * m_j
        pair_energy = 0.5 * self.coupling(edges) * alignment.to(edges.vectors.dtype)
        per_atom = torch.zeros(features.batch.shape[0], dtype=pair_energy.dtype, device=pair_energy.device)
        per_atom.index_add_(0, edges.index[0], pair_energy)
        energy = torch.zeros(n_graphs, dtype=per_atom.dtype, device=per_atom.device)
        return energy.index_add_(0, features.batch, per_atom), moments
