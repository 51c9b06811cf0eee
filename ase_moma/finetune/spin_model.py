"""A backbone with a spin head attached: energies include the exchange term, outputs carry moments."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from ase import Atoms

from ase_moma.backbone import Backbone, BackboneOutput, NodeFeatures, PathWeight
from ase_moma.finetune.spin import SpinHead


class SpinBackbone(Backbone):
    """``base`` plus ``head``, behind the backbone protocol (so MomaCalculator serves it).

    forward: the base's pass with the head's exchange energy added before
    differentiating (:meth:`Backbone.forward_with`); ``magmoms`` is filled.
    Graphs, node features and path weights are the base's.
    """

    predicts_magmoms = True

    def __init__(self, base: Backbone, head: SpinHead) -> None:
        self.base = base
        self.head = head.to(device=base.device, dtype=base.dtype)
        super().__init__(base.model, device=base.device, dtype=base.dtype, source=base.source,
                         cutoff=base.cutoff, covered_numbers=base.covered_numbers)
        self.name = base.name
        self.requires = base.requires
        self.requested_source = base.requested_source
        self.refingerprint(self.head)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device, dtype: torch.dtype) -> "SpinBackbone":
        raise TypeError("a SpinBackbone is built from a loaded backbone and a SpinHead, or loaded from a "
                        "fine-tuned folder with load_backbone(DIR)")

    @classmethod
    def for_backbone(cls, base: Backbone, kind: str, **options: Any) -> "SpinBackbone":
        """A fresh ``kind`` head sized from ``base``'s node features (options: SpinHead's)."""
        element = min(base.covered_numbers)
        pair = Atoms(numbers=[element, element], positions=[[0, 0, 0], [0, 0, 2.0]], cell=[8, 8, 8], pbc=True)
        probe = base.node_features(base.collate([base.graph(pair)]))
        vectors = probe.equivariant.get(options.get("vector_key", "1e"))
        head = SpinHead(kind, width=probe.invariant.shape[1], cutoff=base.cutoff,
                        channels=0 if vectors is None else vectors.shape[1], **options)
        return cls(base, head)

    def build_graph(self, atoms: Atoms) -> Any:
        return self.base.build_graph(atoms)

    def collate(self, graphs: Any) -> Any:
        return self.base.collate(graphs)

    def forward(self, batch: Any, *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        return self.base.forward_with(batch, self.head, forces=forces, stress=stress)

    def energy(self, batch: Any) -> torch.Tensor:
        return self.forward(batch, forces=False, stress=False).energy

    def node_features(self, batch: Any) -> NodeFeatures:
        return self.base.node_features(batch)

    def path_weights(self) -> list[PathWeight]:
        return self.base.path_weights()

    def readout_parameters(self) -> list[str]:
        return self.base.readout_parameters()

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        return self.base.add_reference_energies(shifts)

    def parameter_fraction(self) -> float:
        """The head's parameters as a fraction of the backbone's."""
        return sum(p.numel() for p in self.head.parameters()) / sum(p.numel() for p in self.model.parameters())
