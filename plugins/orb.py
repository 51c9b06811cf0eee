"""Orb backbone (orb-models ≥ 0.5): a local Orb checkpoint, or a named download.

An Orb ``.ckpt`` is a bare state dict of one of orb-models' named architectures
(``orb-v3-conservative-inf-omat``, ``orb-v2``, …). The architecture is taken from
the ``architecture`` option, else from the file name, which for Orb's released
files contains it. Only conservative architectures are accepted: their forces and
stress are exact derivatives of the energy, which MD and fine-tuning rely on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from ase import Atoms

from ase_moma.backbone import Backbone, BackboneOutput, NodeFeatures, PathWeight, stress_matrix
from ase_moma.capabilities import Capabilities
from ase_moma.checkpoints import load_weights_only, require_file

_N_ELEMENTS = 118


class OrbBackbone(Backbone):
    """Orb (graph network simulator) from a local checkpoint or a named release."""

    name = "orb"
    requires = ("orb_models",)
    capabilities = Capabilities(path_weights=True, parity=False)  # not equivariant by construction

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device, dtype: torch.dtype,
             architecture: str | None = None) -> "OrbBackbone":

        if source is None:
            raise ValueError(
                "Orb has no embedded weights: pass a local .ckpt file or a release name "
                f"(needs a network): {', '.join(_conservative_names())}"
            )
        precision = "float64" if dtype == torch.float64 else "float32-highest"
        with _torch_globals_restored():  # orb-models sets the global default dtype and matmul precision
            model, architecture = _build(source, architecture, precision)
        if not hasattr(model, "grad_forces_name"):
            raise ValueError(f"{architecture} is a direct-force Orb model; ase-moma needs a conservative one")
        model.to(device=device, dtype=dtype).eval()
        model.requires_grad_(False)
        return cls(model, device=device, dtype=dtype, source=str(source), cutoff=model.system_config.radius,
                   covered_numbers=range(1, _N_ELEMENTS + 1), requested_source=source)

    def build_graph(self, atoms: Atoms) -> Any:
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs

        bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        return ase_atoms_to_atom_graphs(bare, self.model.system_config, output_dtype=self.dtype,
                                        device=torch.device("cpu"))

    def atomic_numbers(self, graph: Any) -> torch.Tensor:
        return graph.node_features["atomic_numbers"].long().cpu()

    def collate(self, graphs: Sequence[Any]) -> Any:
        from orb_models.forcefield.base import batch_graphs

        return batch_graphs(list(graphs)).to(self.device)

    def forward(self, batch: Any, *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        out = self.model.predict(batch)
        return BackboneOutput(
            energy=out[self.model.energy_name].reshape(-1),
            n_atoms=batch.n_node,
            forces=out[self.model.grad_forces_name] if forces else None,
            stress=stress_matrix(out[self.model.grad_stress_name]) if stress else None,  # ASE's order
        )

    def node_features(self, batch: Any) -> NodeFeatures:
        vectors, _, _ = batch.compute_differentiable_edge_vectors()
        batch.edge_features["vectors"] = vectors
        features = self.model.model(batch)["node_features"]
        index = torch.repeat_interleave(torch.arange(len(batch.n_node), device=features.device),
                                        batch.n_node)
        return NodeFeatures(invariant=features, batch=index)

    def path_weights(self) -> list[PathWeight]:
        return [PathWeight(name, ".".join(name.split(".")[:3]), "linear")
                for name, param in self.model.named_parameters()
                if name.startswith("model.gnn_stacks") and param.ndim == 2]


def _build(source: str, architecture: str | None, precision: str) -> tuple[torch.nn.Module, str]:
    """The Orb model for a release name or a local checkpoint, and its architecture name."""
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    if source in ORB_PRETRAINED_MODELS:
        return ORB_PRETRAINED_MODELS[source](device="cpu", precision=precision, compile=False), source
    path = require_file(source, "Orb checkpoint")
    architecture = architecture or _architecture_from_name(path)
    if architecture not in ORB_PRETRAINED_MODELS:
        raise ValueError(f"unknown Orb architecture {architecture!r}; known: {', '.join(_conservative_names())}")
    state = load_weights_only(path, "Orb checkpoint")
    if not (isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values())):
        raise ValueError(f"{path} is not an Orb checkpoint: expected a state dict of tensors")
    model = ORB_PRETRAINED_MODELS[architecture](weights_path=str(path), device="cpu",
                                                precision=precision, compile=False)
    return model, architecture


@contextlib.contextmanager
def _torch_globals_restored() -> Iterator[None]:
    dtype, precision = torch.get_default_dtype(), torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_float32_matmul_precision(precision)


def _conservative_names() -> list[str]:
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    return sorted(name for name in ORB_PRETRAINED_MODELS if "conservative" in name)


def _architecture_from_name(path: Path) -> str:
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    matches = [name for name in ORB_PRETRAINED_MODELS if name in path.name]
    if not matches:
        raise ValueError(
            f"cannot tell the Orb architecture from the file name {path.name!r}: pass "
            f"architecture=NAME, one of {', '.join(_conservative_names())}"
        )
    return max(matches, key=len)
