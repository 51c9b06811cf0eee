"""matgl backbone (matgl ≥ 4, PyG backend): a local matgl potential directory.

A matgl model directory holds ``model.json`` (class names and constructor
arguments), ``model.pt`` and ``state.pt``. Before matgl reads it, every class the
JSON names must live inside the ``matgl`` package, so a hostile directory cannot
make matgl import other code; matgl itself reads the ``.pt`` files with
PyTorch's weights-only unpickler. Node features for ``embed`` are the per-atom
inputs of the model's final (energy) layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms, units
from ase.data import atomic_numbers

from ase_moma.backbone import Backbone, BackboneOutput, NodeFeatures, PathWeight
from ase_moma.capabilities import Capabilities
from ase_moma.checkpoints import require_file


class MatGLBackbone(Backbone):
    """matgl potentials (M3GNet, TensorNet, …) from a local model directory."""

    name = "matgl"
    requires = ("matgl",)
    capabilities = Capabilities(path_weights=True)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device,
             dtype: torch.dtype) -> "MatGLBackbone":
        if source is None:
            raise ValueError("matgl has no embedded weights here: pass a local model directory")
        directory = Path(source).expanduser()
        header_path = require_file(directory / "model.json", "matgl model.json")
        header = json.loads(header_path.read_text())
        _check_modules(header, header_path)
        import matgl
        from matgl.apps.pes import Potential

        potential = matgl.load_model(directory)
        if not isinstance(potential, Potential):
            raise ValueError(f"{directory} holds a {type(potential).__name__}, not a matgl Potential")
        potential.to(device=device, dtype=dtype).eval()
        potential.requires_grad_(False)
        return cls(potential, device=device, dtype=dtype, source=str(directory),
                   cutoff=float(potential.model.cutoff),
                   covered_numbers=[atomic_numbers[e] for e in potential.model.element_types],
                   requested_source=source)

    @property
    def element_types(self) -> tuple[str, ...]:
        """The model's element symbols, in the order of its node types."""
        return tuple(self.model.model.element_types)

    def build_graph(self, atoms: Atoms) -> tuple[Any, torch.Tensor, torch.Tensor]:
        from matgl.ext.ase import Atoms2Graph

        bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        graph, _, state = Atoms2Graph(self.element_types, self.cutoff).get_graph(bare)
        # matgl builds coordinates in float32; rebuild them in the model's dtype from the
        # float64 input (as matgl does: fractional if fully periodic, else Cartesian).
        periodic = bool(atoms.pbc.all())
        coords = atoms.get_scaled_positions(wrap=False) if periodic else atoms.positions
        graph.frac_coords = torch.as_tensor(coords, dtype=self.dtype)
        lattice = torch.as_tensor(atoms.cell.array if periodic else np.identity(3), dtype=self.dtype)
        return graph, lattice, torch.as_tensor(np.asarray(state), dtype=self.dtype)

    def atomic_numbers(self, graph: tuple[Any, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        table = torch.as_tensor([atomic_numbers[e] for e in self.element_types])
        return table[graph[0].node_type.long().cpu()]

    def collate(self, graphs: Sequence[tuple[Any, torch.Tensor, torch.Tensor]]) -> tuple:
        from torch_geometric.data import Batch

        batch = Batch.from_data_list([g for g, _, _ in graphs]).to(self.device)
        lattice = torch.cat([lat.reshape(1, 3, 3) for _, lat, _ in graphs]).to(self.device)
        state = torch.stack([s for _, _, s in graphs]).to(self.device)
        return batch, lattice, state

    def forward(self, batch: tuple, *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        graph, lattice, state = batch
        grad_enabled, training = torch.is_grad_enabled(), self.model.training
        # The Potential always differentiates its energy, and keeps that graph (for a loss on forces, or
        # on the energy itself) only in training mode: set its own flag, not its layers', when grads are on.
        self.model.training = training or grad_enabled
        try:
            with torch.enable_grad():
                out = self.model(graph, lattice, state)
        finally:
            self.model.training = training
        if not grad_enabled:
            out = tuple(t.detach() if torch.is_tensor(t) else t for t in out)
        n_graphs = lattice.shape[0]
        return BackboneOutput(
            energy=out[0].reshape(-1),
            n_atoms=torch.bincount(graph.batch, minlength=n_graphs),
            forces=out[1] if forces else None,
            stress=out[2].reshape(n_graphs, 3, 3) * units.GPa if stress else None,
        )

    def node_features(self, batch: tuple) -> NodeFeatures:
        graph, lattice, state = batch
        captured: list[torch.Tensor] = []
        hook = self.model.model.final_layer.register_forward_hook(
            lambda _m, inputs, _o: captured.append(inputs[0]))
        try:
            with torch.enable_grad():  # the Potential always differentiates its energy
                self.model(graph, lattice, state)
        finally:
            hook.remove()
        features = captured[0].detach() if not torch.is_grad_enabled() else captured[0]
        if not (torch.is_tensor(features) and features.shape[0] == graph.num_nodes):
            raise NotImplementedError(
                f"{type(self.model.model).__name__} has no per-atom input to its final layer")
        return NodeFeatures(invariant=features, batch=graph.batch)

    def path_weights(self) -> list[PathWeight]:
        return [PathWeight(name, ".".join(name.split(".")[:3]), "linear")
                for name, param in self.model.named_parameters()
                if name.startswith("model.layers") and param.ndim == 2]


def _check_modules(node: Any, path: Path) -> None:
    """ValueError if any ``@module`` in a matgl model.json lies outside the matgl package."""
    if isinstance(node, dict):
        module = node.get("@module")
        if module is not None and not (module == "matgl" or str(module).startswith("matgl.")):
            raise ValueError(f"{path} names module {module!r} outside matgl; refusing to load it")
        for value in node.values():
            _check_modules(value, path)
    elif isinstance(node, list):
        for value in node:
            _check_modules(value, path)
