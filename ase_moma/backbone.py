"""The backbone protocol: the one seam every other part of ase-moma uses.

A backbone wraps one pretrained interatomic potential (a ``torch.nn.Module``) and
knows how to turn ``ase.Atoms`` into that model's graph, batch graphs, and read
energies, forces, stresses and node features back out. Units are ASE's: eV, Å,
eV/Å, eV/Å³ (stress with ASE's sign: positive under tension).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.capabilities import Capabilities, require
from ase_moma.structures import check_atoms


@dataclass
class BackboneOutput:
    """Predictions for a batch of ``B`` structures with ``N`` atoms in total.

    energy: (B,) eV. forces: (N, 3) eV/Å or None. stress: (B, 3, 3) eV/Å³ in
    ASE's sign convention, or None. magmoms: (N,) or (N, 3) μB where the model
    predicts moments, else None. n_atoms: (B,) atoms per structure.
    """

    energy: torch.Tensor
    n_atoms: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    magmoms: torch.Tensor | None = None


@dataclass
class NodeFeatures:
    """Node features of a batch.

    invariant: (N, F) rotation-invariant (l=0) features of the last interaction
    block. batch: (N,) index of the structure each atom belongs to.
    """

    invariant: torch.Tensor
    batch: torch.Tensor


@dataclass
class Edges:
    """The directed edges of a batch, each pair present both ways.

    index: (2, E) atom indices (centre, neighbour). vectors: (E, 3) Å, the
    neighbour's position minus the centre's (with its cell shift), the tensor the
    backbone differentiates for forces and stress. numbers: (N,) atomic numbers.
    """

    index: torch.Tensor
    vectors: torch.Tensor
    numbers: torch.Tensor


class EnergyTerm(Protocol):
    """An energy added to a backbone's: ``term(features, edges, n_graphs)`` →
    ((B,) eV, per-atom output such as moments or None), differentiable in the
    edge vectors and the node features."""

    def __call__(self, features: NodeFeatures, edges: Edges,
                 n_graphs: int) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass(frozen=True)
class PathWeight:
    """A parameter that sparse fine-tuning may move.

    name: the parameter's name in ``model.named_parameters()``; layer: the
    interaction block or readout it belongs to; kind: ``"linear"`` (e3nn
    ``o3.Linear``), ``"tensor_product"`` or ``"radial_mlp"``; irrep_slices: for
    e3nn linears, ``l -> [(start, stop), ...]`` slices of the flat weight whose
    paths act on irreps of degree ``l``; blocks: for e3nn modules,
    ``(start, stop, rows, cols)`` of each path's weight matrix in the flat weight;
    element_slices: for weights with one block per element (a species
    embedding), ``Z -> (start, stop)`` of that element's entries.
    """

    name: str
    layer: str
    kind: str
    irrep_slices: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    blocks: tuple[tuple[int, int, int, int], ...] = ()
    element_slices: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class AdapterSite:
    """A place after an interaction block where an adapter may rewrite node features.

    name: the block's module name in the model; irreps: the e3nn irreps string
    of the node features there (``"64x0e"`` for an invariant-only backbone).
    """

    name: str
    irreps: str


class Backbone(abc.ABC):
    """One loaded pretrained potential behind the protocol.

    Subclasses set ``name``, ``requires`` (the import names they need) and
    ``capabilities`` (what the family can do; the optional methods below are
    implemented exactly where a capability says so), and implement the abstract
    methods. Instances hold the model on ``device`` in ``dtype``; graphs are
    built on the CPU and moved by :meth:`collate`.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    has_default: ClassVar[bool] = False
    capabilities: Capabilities = Capabilities()

    def __init__(self, model: torch.nn.Module, *, device: torch.device, dtype: torch.dtype,
                 source: str, cutoff: float, covered_numbers: Sequence[int],
                 requested_source: str | None = None, parity: bool | None = None) -> None:
        """source: where the weights were read; requested_source: the source as the
        user named it (None: the embedded default), recorded in hubs and provenance.
        parity: this checkpoint's parity equivariance where it differs from the class's."""
        self.model = model
        self.device = device
        self.dtype = dtype
        self.source = source
        self.requested_source = requested_source
        self.cutoff = float(cutoff)
        self.covered_numbers = frozenset(int(z) for z in covered_numbers)
        if parity is not None and parity != type(self).capabilities.parity:
            self.capabilities = dataclasses.replace(type(self).capabilities, parity=parity)
        self._fingerprint = state_fingerprint(model)

    def require(self, purpose: str, *needed: str) -> None:
        """MissingCapability naming this backbone and ``purpose`` unless it has every ``needed`` capability."""
        require(self.capabilities, self.name, purpose, *needed)

    def mark_saved(self, folder: str, *extra: torch.nn.Module) -> None:
        """These weights were loaded from a saved model's ``folder``: fingerprint them as they are now
        (with ``extra`` modules, e.g. attached adapters) and record the folder as their source."""
        self.refingerprint(*extra)
        self.requested_source = folder

    @classmethod
    @abc.abstractmethod
    def load(cls, source: str | None = None, *, device: torch.device,
             dtype: torch.dtype) -> "Backbone":
        """Load the embedded default (``source=None``) or a local checkpoint."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backbone cannot be used here (a missing package), or None when it can."""
        import importlib.util

        for module in cls.requires:
            if importlib.util.find_spec(module) is None:
                return f"package '{module}' is not installed"
        return None

    @abc.abstractmethod
    def build_graph(self, atoms: Atoms) -> Any:
        """One neighbour-list pass for ``atoms`` (already checked); a CPU object."""

    @abc.abstractmethod
    def collate(self, graphs: Sequence[Any]) -> Any:
        """Batch graphs from :meth:`build_graph` and move them to the device."""

    @abc.abstractmethod
    def atomic_numbers(self, graph: Any) -> torch.Tensor:
        """(n,) int64 atomic numbers of one graph from :meth:`build_graph`, on the CPU."""

    @abc.abstractmethod
    def forward(self, batch: Any, *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        """Energy and, by autograd, forces and stress for a collated batch."""

    def forward_with(self, batch: Any, term: EnergyTerm, *, forces: bool = True,
                     stress: bool = True) -> BackboneOutput:
        """:meth:`forward` with ``term``'s energy added before differentiating.

        term reads this pass's node features and edges; forces and stress are
        derivatives of the total, and the term's per-atom output is returned as
        ``magmoms``. Implemented where ``capabilities.energy_terms``.
        """
        self.require("an extra energy term", "energy_terms")
        raise NotImplementedError(f"{type(self).__name__} declares energy_terms but does not implement forward_with")

    def energy(self, batch: Any) -> torch.Tensor:
        """(B,) total energies in eV, differentiable with respect to the model's parameters.

        No forces or stress: this is the energy read-out that property modules
        fine-tune on energy targets.
        """
        return self.forward(batch, forces=False, stress=False).energy

    @abc.abstractmethod
    def node_features(self, batch: Any) -> NodeFeatures:
        """Node features of the last interaction block for a collated batch."""

    def path_weights(self) -> list[PathWeight]:
        """The parameters sparse fine-tuning may move, tagged (see PathWeight).

        Implemented where ``capabilities.path_weights``.
        """
        self.require("sparse or low-rank fine-tuning", "path_weights")
        raise NotImplementedError(f"{type(self).__name__} declares path_weights but does not implement them")

    def readout_parameters(self) -> list[str]:
        """Names of the read-out parameters (the layers after the last interaction block).

        What the ``readout`` fine-tuning baseline trains; implemented where
        ``capabilities.readout``.
        """
        self.require("read-out fine-tuning", "readout")
        raise NotImplementedError(f"{type(self).__name__} declares readout but does not name its parameters")

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        """Add ``shifts[Z]`` (eV per atom of element Z) to the model's per-element reference energies.

        In place; every structure's energy moves by Σ_i shifts[Z_i] and forces
        and stress do not change. Returns the name of the state-dict tensor that
        holds the references. Implemented where ``capabilities.reference_energies``.
        """
        self.require("refitting reference energies", "reference_energies")
        raise NotImplementedError(f"{type(self).__name__} declares reference_energies but cannot shift them")

    def adapter_sites(self) -> list[AdapterSite]:
        """Where adapters go: after each interaction block, in order (where ``capabilities.adapters``)."""
        self.require("adapter modules", "adapters")
        raise NotImplementedError(f"{type(self).__name__} declares adapters but names no sites")

    def hook_node_features(self, site: str, transform: Any) -> torch.utils.hooks.RemovableHandle:
        """Rewrite the node features leaving ``site`` with ``transform`` (N, F) -> (N, F)."""
        self.require("adapter modules", "adapters")
        raise NotImplementedError(f"{type(self).__name__} declares adapters but cannot hook node features")

    def fingerprint(self) -> str:
        """sha256 of the weights as loaded (before any tuning); see :meth:`refingerprint`."""
        return self._fingerprint

    def refingerprint(self, *extra: torch.nn.Module) -> None:
        """Fingerprint the weights as they are now, with ``extra`` modules (e.g. attached adapters).

        For a backbone whose pretrained weights were replaced by tuned or merged
        ones on loading: it then identifies those weights, not the pretrained ones.
        """
        parts = torch.nn.ModuleList([self.model, *extra])
        self._fingerprint = state_fingerprint(parts if extra else self.model)

    def graph(self, atoms: Atoms) -> Any:
        """Check ``atoms`` (clear errors for bad input), then build its graph."""
        check_atoms(atoms, self.covered_numbers, self.name)
        return self.build_graph(atoms)

    def embed(self, structures: Sequence[Atoms], batch_size: int = 32) -> torch.Tensor:
        """(B, F) mean-pooled invariant features of the last interaction block."""
        return self.embed_graphs([self.graph(a) for a in structures], batch_size)

    @torch.no_grad()
    def embed_graphs(self, graphs: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """:meth:`embed` for graphs already built by :meth:`graph`; (B, F) on the CPU."""
        rows = []
        for start in range(0, len(graphs), batch_size):
            chunk = graphs[start:start + batch_size]
            feats = self.node_features(self.collate(chunk))
            rows.append(mean_pool(feats.invariant, feats.batch, len(chunk)))
        if not rows:
            raise ValueError("embed needs at least one structure")
        return torch.cat(rows).cpu()


def parameter_path_weights(name: str, module: torch.nn.Module, layer: str, kind: str) -> list[PathWeight]:
    """Every parameter of submodule ``name`` as a path weight of ``kind`` in ``layer``."""
    return [PathWeight(f"{name}.{param}", layer, kind) for param, _ in module.named_parameters()]


def stress_matrix(voigt: torch.Tensor, order: Sequence[int] = range(6)) -> torch.Tensor:
    """(B, 3, 3) stress from (B, 6) Voigt components, differentiably.

    order: the positions in ``voigt``'s last axis of ASE's xx, yy, zz, yz, xz, xy
    (the identity for ASE's own order); the layout is ASE's (``ase.stress``).
    """
    from ase.stress import voigt_6_to_full_3x3_stress

    index = torch.as_tensor(voigt_6_to_full_3x3_stress(np.asarray(list(order))), device=voigt.device)
    return voigt.reshape(-1, 6)[:, index]


def mean_pool(values: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """(n_graphs, F) mean of ``values`` (N, F) over the atoms of each graph."""
    sums = torch.zeros(n_graphs, values.shape[1], dtype=values.dtype, device=values.device)
    sums.index_add_(0, batch, values)
    counts = torch.bincount(batch, minlength=n_graphs).clamp(min=1).to(values.dtype)
    return sums / counts[:, None]


def state_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the names, shapes and float64 values of a model's state dict.

    Values are hashed in float64 so a model loaded in float32 or float64 from the
    same checkpoint has the same fingerprint.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        array = tensor.detach().cpu()
        if array.is_floating_point():
            array = array.to(torch.float32).to(torch.float64)
        digest.update(np.ascontiguousarray(array.numpy()).tobytes())
    return digest.hexdigest()
