"""A backbone read out for one per-structure property: the model inside a hub module."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone
from ase_moma.heads import PropertyHead

READOUTS = ("head", "energy_per_atom")


class PropertyModel(torch.nn.Module):
    """Backbone (+ adapters) + read-out for one target.

    readout: ``"head"`` (mean pooling + MLP on node features) or
    ``"energy_per_atom"`` (the backbone's own energy head divided by the atom
    count, in eV/atom; no extra parameters). The backbone's torch model is a
    submodule, so ``parameters()`` covers backbone, adapters and head.
    """

    def __init__(self, backbone: Backbone, readout: str, head: PropertyHead | None = None,
                 adapters: AdapterSet | None = None) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        if (readout == "head") != (head is not None):
            raise ValueError("a 'head' readout needs a PropertyHead, and only it takes one")
        self.backbone = backbone
        self.model = backbone.model
        self.readout = readout
        self.head = head
        self.adapters = adapters
        if adapters is not None:
            adapters.attach(backbone)

    def forward(self, graphs: Sequence[Any]) -> torch.Tensor:
        """(B,) predictions in the target's unit for graphs from ``backbone.graph``."""
        batch = self.backbone.collate(graphs)
        if self.readout == "energy_per_atom":
            counts = torch.tensor([_n_atoms(g) for g in graphs], device=self.backbone.device,
                                  dtype=self.backbone.dtype)
            return self.backbone.energy(batch) / counts
        return self.head(self.backbone.node_features(batch), len(graphs))

    def normalised(self, graphs: Sequence[Any], mean: float, std: float) -> torch.Tensor:
        """(B,) (prediction − mean) / std, the quantity the training loss compares."""
        if self.readout == "head":
            return self.head.normalised(self.backbone.node_features(self.backbone.collate(graphs)),
                                        len(graphs))
        return (self.forward(graphs) - mean) / std

    @torch.no_grad()
    def predict(self, structures: Sequence[Atoms], batch_size: int = 32) -> np.ndarray:
        """(M,) float64 predictions for ``structures`` (checked as the backbone checks them)."""
        graphs = [self.backbone.graph(atoms) for atoms in structures]
        return self.predict_graphs(graphs, batch_size)

    @torch.no_grad()
    def predict_graphs(self, graphs: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """(M,) float64 predictions for prebuilt graphs."""
        values = [self.forward(graphs[start:start + batch_size]).cpu().double()
                  for start in range(0, len(graphs), batch_size)]
        return torch.cat(values).numpy() if values else np.empty(0)


def _n_atoms(graph: Any) -> int:
    """Atom count of one backbone graph (torch-geometric data or CHGNet graph)."""
    for name in ("num_nodes", "atomic_number"):
        value = getattr(graph, name, None)
        if value is not None:
            return int(value) if name == "num_nodes" else len(value)
    raise TypeError(f"cannot count the atoms of a {type(graph).__name__} graph")
