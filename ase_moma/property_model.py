"""A backbone read out for one per-structure property: the model inside a hub module."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone, mean_pool
from ase_moma.heads import EnergyReference, PropertyHead

READOUTS = ("head", "energy_per_atom")


class PropertyModel(torch.nn.Module):
    """Backbone (+ adapters) + read-out for one target.

    readout: ``"head"`` (a PropertyHead: mean pooling + MLP on node features)
    or ``"energy_per_atom"`` (the backbone's own energy head plus per-element
    reference energies, an EnergyReference, divided by the atom count; eV/atom).
    The backbone's torch model is a submodule, so ``parameters()`` covers
    backbone, adapters and head. target, unit: the ``atoms.info`` key the model
    predicts and its unit, as recorded with a trained model.
    """

    def __init__(self, backbone: Backbone, readout: str, head: PropertyHead | EnergyReference,
                 adapters: AdapterSet | None = None, target: str = "", unit: str = "") -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        expected = PropertyHead if readout == "head" else EnergyReference
        if not isinstance(head, expected):
            raise TypeError(f"a {readout!r} readout needs a {expected.__name__}, got {type(head).__name__}")
        self.backbone = backbone
        self.model = backbone.model
        self.readout = readout
        self.head = head
        self.adapters = adapters
        self.target = target
        self.unit = unit
        if adapters is not None:
            adapters.attach(backbone)

    def forward(self, graphs: Sequence[Any]) -> torch.Tensor:
        """(B,) predictions in the target's unit for graphs from ``backbone.graph``."""
        batch = self.backbone.collate(graphs)
        if self.readout == "energy_per_atom":
            numbers = [self.backbone.atomic_numbers(g) for g in graphs]
            counts = torch.tensor([len(z) for z in numbers], device=self.backbone.device)
            index = torch.repeat_interleave(torch.arange(len(graphs), device=counts.device), counts)
            shift = self.head(torch.cat(numbers).long().to(counts.device), index, len(graphs))
            return (self.backbone.energy(batch).double() + shift) / counts
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

    @torch.no_grad()
    def predict_and_embed_graphs(self, graphs: Sequence[Any], batch_size: int = 32) -> tuple[np.ndarray, torch.Tensor]:
        """((M,) float64 predictions, (M, F) mean-pooled features on the CPU) for prebuilt graphs, equal to
        :meth:`predict_graphs` and ``backbone.embed_graphs``. A ``head`` read-out reads the features the
        prediction is made from, so one backbone pass gives both; ``energy_per_atom`` needs the energy's pass."""
        if self.readout != "head" or not graphs:
            return self.predict_graphs(graphs, batch_size), self.backbone.embed_graphs(graphs, batch_size)
        values, rows = [], []
        for start in range(0, len(graphs), batch_size):
            chunk = graphs[start:start + batch_size]
            features = self.backbone.node_features(self.backbone.collate(chunk))
            values.append(self.head(features, len(chunk)).cpu().double())
            rows.append(mean_pool(features.invariant, features.batch, len(chunk)))
        return torch.cat(values).numpy(), torch.cat(rows).cpu()

