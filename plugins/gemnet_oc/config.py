"""GemNet-OC hyper-parameters, with the JMP-S and JMP-L presets.

JMP (Shoghi et al., "From molecules to materials: pre-training large generalizable
models for atomic property prediction", ICLR 2024) pre-trains GemNet-OC (Gasteiger
et al., "GemNet-OC: developing graph neural networks for large and diverse molecular
simulation datasets", TMLR 2022) on several DFT datasets at once. The presets below
are the published JMP-S and JMP-L sizes; the graph settings are JMP's fine-tuning
ones: every cut-off 12 Å, at most 30 neighbours for embedded edges, 8 for quadruplet
interactions, 20 for atom-edge interactions and 1000 for atom-atom interactions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class GemNetOCConfig:
    """Sizes and graph settings of one GemNet-OC.

    Cut-offs in Å; ``max_neighbors*`` per target atom, with ties within
    ``degeneracy_tolerance`` of the last kept distance kept as well (so a
    symmetric crystal never has one of several equal neighbours dropped at random).

    pair_rule: which capped pairs become the (two-way) embedded edges. ``"either"``
    (default): a pair whose either atom keeps the other, so the graph, and the energy,
    do not depend on the order atoms are listed in. ``"reference"``: the pair whose
    lower-indexed atom is among the higher-indexed atom's kept neighbours, as the
    reference implementation (and so JMP's training) builds it; it reproduces that
    implementation exactly, and depends on atom order where the caps cut.
    """

    num_spherical: int = 7
    num_radial: int = 128
    num_blocks: int = 4
    emb_size_atom: int = 256
    emb_size_edge: int = 512
    emb_size_trip_in: int = 64
    emb_size_trip_out: int = 64
    emb_size_quad_in: int = 32
    emb_size_quad_out: int = 32
    emb_size_aint_in: int = 64
    emb_size_aint_out: int = 64
    emb_size_rbf: int = 16
    emb_size_cbf: int = 16
    emb_size_sbf: int = 32
    num_before_skip: int = 2
    num_after_skip: int = 2
    num_concat: int = 1
    num_atom: int = 3
    num_output_afteratom: int = 3
    num_atom_emb_layers: int = 2
    num_global_out_layers: int = 2
    num_elements: int = 120
    envelope_exponent: int = 5
    cutoff: float = 12.0
    cutoff_qint: float = 12.0
    cutoff_aeaint: float = 12.0
    cutoff_aint: float = 12.0
    max_neighbors: int = 30
    max_neighbors_qint: int = 8
    max_neighbors_aeaint: int = 20
    max_neighbors_aint: int = 1000
    degeneracy_tolerance: float = 0.01
    pair_rule: str = "either"

    def __post_init__(self) -> None:
        largest = self.cutoff_aint
        if not max(self.cutoff, self.cutoff_qint, self.cutoff_aeaint) <= largest:
            raise ValueError("cutoff_aint must be the largest cut-off (the atom-atom graph holds all others)")
        if not max(self.max_neighbors, self.max_neighbors_qint, self.max_neighbors_aeaint) <= self.max_neighbors_aint:
            raise ValueError("max_neighbors_aint must be the largest neighbour count")
        if self.pair_rule not in ("either", "reference"):
            raise ValueError(f"pair_rule must be 'either' or 'reference', not {self.pair_rule!r}")
        if self.num_blocks < 1:
            raise ValueError("GemNet-OC needs at least one interaction block")

    @classmethod
    def jmp_s(cls, **changes: Any) -> "GemNetOCConfig":
        """JMP-S (about 30 M parameters with the pre-training heads)."""
        return dataclasses.replace(cls(), **changes)

    @classmethod
    def jmp_l(cls, **changes: Any) -> "GemNetOCConfig":
        """JMP-L (about 235 M parameters with the pre-training heads)."""
        large = cls(num_blocks=6, emb_size_edge=1024, emb_size_trip_out=128, emb_size_quad_in=64,
                    emb_size_rbf=32, emb_size_sbf=64, num_concat=4)
        return dataclasses.replace(large, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GemNetOCConfig":
        """The config in ``values``; an unknown key is an error that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GemNet-OC settings: {', '.join(unknown)}")
        return cls(**dict(values))
