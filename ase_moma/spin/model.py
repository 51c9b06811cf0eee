"""A backbone with a spin head attached: the spin configuration travels with each graph, energies
include the exchange term, outputs carry moments."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.backbone import Backbone, BackboneOutput, NodeFeatures, PathWeight
from ase_moma.spin.head import SpinHead

DEFAULT_ORDER = ("no initial magnetic moments are set: assuming ferromagnetic order (every spin up, along z), "
                 "as VASP does; set atoms.set_initial_magnetic_moments to choose the spin configuration "
                 "(all zero: non-magnetic)")


@dataclasses.dataclass
class SpinGraph:
    """A base backbone graph with its spin configuration: (n, 3) unit directions (zero for an atom
    given no moment) and whether the input was collinear (signs, reported as (n,) moments)."""

    graph: Any
    spins: torch.Tensor
    collinear: bool


def spin_directions(atoms: Atoms) -> tuple[np.ndarray, bool]:
    """((n, 3) unit spin directions, collinear) from ``atoms``' initial magnetic moments.

    (n,) moments give ±z (zero stays zero: that atom carries no moment); (n, 3)
    moments give their directions. Moments set, all zero: the non-magnetic
    state (a spin-polarised DFT run started there stays there). None set:
    every spin points up (a warning says so), the ferromagnetic default of DFT
    codes.
    """
    initial = np.asarray(atoms.get_initial_magnetic_moments(), dtype=np.float64)
    collinear = initial.ndim == 1
    vectors = np.stack([np.zeros_like(initial), np.zeros_like(initial), initial], axis=1) if collinear else initial
    if not atoms.has("initial_magmoms"):
        warnings.warn(DEFAULT_ORDER, stacklevel=3)
        vectors = np.tile([0.0, 0.0, 1.0], (len(atoms), 1))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-8), collinear


class SpinBackbone(Backbone):
    """``base`` plus ``head``, behind the backbone protocol (so MomaCalculator serves it).

    Graphs carry the spin configuration read from the structure's initial
    magnetic moments; forward runs the base's pass with the head's exchange
    energy added before differentiating (:meth:`Backbone.forward_with`) and
    fills ``magmoms``: (N,) signed moments for collinear input, (N, 3) vectors
    for non-collinear input. Node features and path weights are the base's.
    """

    def __init__(self, base: Backbone, head: SpinHead) -> None:
        base.require("a spin head", "energy_terms")
        self.base = base
        self.head = head.to(device=base.device, dtype=base.dtype)
        super().__init__(base.model, device=base.device, dtype=base.dtype, source=base.source,
                         cutoff=base.cutoff, covered_numbers=base.covered_numbers,
                         requested_source=base.requested_source)
        self.name = base.name
        self.requires = base.requires
        self.capabilities = dataclasses.replace(base.capabilities, magmoms=True)
        self.refingerprint(self.head)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device, dtype: torch.dtype) -> "SpinBackbone":
        raise TypeError("a SpinBackbone is built from a loaded backbone and a SpinHead, or loaded from a "
                        "fine-tuned folder with load_backbone(DIR)")

    @classmethod
    def for_backbone(cls, base: Backbone, kind: str, **options: Any) -> "SpinBackbone":
        """A fresh ``kind`` head sized from ``base``'s invariant node features (options: SpinHead's)."""
        base.require("a spin head", "energy_terms")
        element = min(base.covered_numbers)
        pair = Atoms(numbers=[element, element], positions=[[0, 0, 0], [0, 0, 2.0]], cell=[8, 8, 8], pbc=True)
        with torch.no_grad():
            width = base.node_features(base.collate([base.graph(pair)])).invariant.shape[1]
        return cls(base, SpinHead(kind, width=width, cutoff=base.cutoff, **options))

    def build_graph(self, atoms: Atoms) -> SpinGraph:
        directions, collinear = spin_directions(atoms)
        return SpinGraph(self.base.build_graph(atoms), torch.as_tensor(directions, dtype=self.dtype), collinear)

    def atomic_numbers(self, graph: SpinGraph) -> torch.Tensor:
        return self.base.atomic_numbers(graph.graph)

    def collate(self, graphs: Sequence[SpinGraph]) -> tuple[Any, torch.Tensor, bool]:
        return (self.base.collate([g.graph for g in graphs]), torch.cat([g.spins for g in graphs]).to(self.device),
                all(g.collinear for g in graphs))

    def forward(self, batch: tuple[Any, torch.Tensor, bool], *, forces: bool = True,
                stress: bool = True) -> BackboneOutput:
        inner, spins, collinear = batch
        output = self.base.forward_with(inner, lambda features, edges, n: self.head(features, edges, n, spins),
                                        forces=forces, stress=stress)
        if collinear:
            output.magmoms = output.magmoms[:, 2]  # signed along z
        return output

    def features_and_order(self, batch: tuple[Any, torch.Tensor, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """For a collated batch, detached: (N, F) the base's invariant node features and (N, K) the order
        features of the batch's spins (:meth:`SpinHead.order_features`)."""
        inner, spins, _ = batch
        captured: dict[str, torch.Tensor] = {}

        def capture(features: NodeFeatures, edges: Any, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
            captured["features"] = features.invariant.detach()
            captured["order"] = self.head.order_features(edges, spins).detach()
            zero = features.invariant.new_zeros(())
            return zero.expand(n_graphs), zero.expand(len(spins), 3)

        self.base.forward_with(inner, capture, forces=False, stress=False)
        return captured["features"], captured["order"]

    def energy(self, batch: tuple[Any, torch.Tensor, bool]) -> torch.Tensor:
        return self.forward(batch, forces=False, stress=False).energy

    def node_features(self, batch: tuple[Any, torch.Tensor, bool]) -> NodeFeatures:
        return self.base.node_features(batch[0])

    def path_weights(self) -> list[PathWeight]:
        return self.base.path_weights()

    def readout_parameters(self) -> list[str]:
        return self.base.readout_parameters()

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        return self.base.add_reference_energies(shifts)

    def parameter_fraction(self) -> float:
        """The head's parameters as a fraction of the backbone's."""
        return sum(p.numel() for p in self.head.parameters()) / sum(p.numel() for p in self.model.parameters())
