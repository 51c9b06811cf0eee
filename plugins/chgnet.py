"""CHGNet backbone (chgnet ≥ 0.4); CHGNet 0.3.0 ships in the wheel.

Graphs are CHGNet's own crystal graphs, built from the pymatgen structure as
``CHGNetCalculator`` builds them; a batch is a list of graphs, which CHGNet
batches itself. CHGNet predicts per-atom magnetic moment magnitudes (μB). Its composition model's
per-element energies are the reference energies that fine-tuning refits.
CHGNet hard-codes float32 tensors, so it runs in float32 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms, units

from ase_moma.backbone import AdapterSite, Backbone, BackboneOutput, NodeFeatures, PathWeight
from ase_moma.capabilities import Capabilities
from ase_moma.checkpoints import load_weights_only, require_file
from ase_moma.process_state import kept_process_state

_TASKS = "efsm"


class CHGNetBackbone(Backbone):
    """CHGNet (crystal Hamiltonian graph network); CHGNet 0.3.0 is the embedded default."""

    name = "chgnet"
    requires = ("chgnet",)
    has_default = True
    capabilities = Capabilities(magmoms=True, adapters=True, path_weights=True, reference_energies=True)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device,
             dtype: torch.dtype) -> "CHGNetBackbone":
        import chgnet
        from chgnet.model import CHGNet

        if dtype != torch.float32:
            raise ValueError("CHGNet runs in float32 only (chgnet hard-codes float32 graphs)")
        default = source is None
        path = (Path(chgnet.__file__).parent / "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"
                if default else source)
        checkpoint = load_weights_only(require_file(path, "CHGNet checkpoint"), "CHGNet checkpoint")
        state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
        if not (isinstance(state, dict) and {"state_dict", "model_args"} <= state.keys()):
            raise ValueError(
                f"{path} is not a CHGNet checkpoint: it lacks model.state_dict and model.model_args"
            )
        extra = {"mlp_out_bias": False, "version": "0.3.0"} if default else {}
        with kept_process_state():  # chgnet builds its layers in the default dtype; its graphs are float32
            torch.set_default_dtype(torch.float32)
            model = CHGNet.from_dict(state, **extra)
        model.to(device).eval()
        model.requires_grad_(False)
        return cls(model, device=device, dtype=dtype, source=str(path), cutoff=model.graph_converter.atom_graph_cutoff,
                   covered_numbers=range(1, model.atom_embedding.embedding.num_embeddings + 1),
                   requested_source=source)

    def build_graph(self, atoms: Atoms) -> Any:
        from pymatgen.core import Lattice, Structure

        periodic = _periodic(atoms, self.cutoff)
        structure = Structure(Lattice(periodic.cell.array), periodic.numbers, periodic.positions,
                              coords_are_cartesian=True)
        return self.model.graph_converter(structure)

    def atomic_numbers(self, graph: Any) -> torch.Tensor:
        return graph.atomic_number.long().cpu()

    def collate(self, graphs: Sequence[Any]) -> list[Any]:
        return [graph.to(self.device) for graph in graphs]

    def forward(self, batch: list[Any], *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        task = "e" + ("f" if forces else "") + ("s" if stress else "") + "m"
        prediction = self.model(batch, task=task)
        n_atoms = prediction["atoms_per_graph"]
        energy = prediction["e"] * n_atoms if self.model.is_intensive else prediction["e"]
        return BackboneOutput(
            energy=energy,
            n_atoms=n_atoms,
            forces=torch.cat(prediction["f"]) if forces else None,
            stress=torch.stack(prediction["s"]) * units.GPa if stress else None,
            magmoms=torch.cat(prediction["m"]),
        )

    def node_features(self, batch: list[Any]) -> NodeFeatures:
        captured: list[torch.Tensor] = []
        last_conv = self.model.atom_conv_layers[-1]
        hook = last_conv.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.model(batch, task="e")
        finally:
            hook.remove()
        features = captured[0]
        if self.model.readout_norm is not None:
            features = self.model.readout_norm(features)
        counts = torch.tensor([graph.atomic_number.shape[0] for graph in batch], device=features.device)
        index = torch.repeat_interleave(torch.arange(len(batch), device=features.device), counts)
        return NodeFeatures(invariant=features, batch=index)

    def adapter_sites(self) -> list[AdapterSite]:
        width = self.model.atom_embedding.embedding.embedding_dim
        return [AdapterSite(f"atom_conv_layers.{i}", f"{width}x0e")
                for i in range(len(self.model.atom_conv_layers))]

    def hook_node_features(self, site: str, transform: Any) -> torch.utils.hooks.RemovableHandle:
        module = self.model.get_submodule(site)
        return module.register_forward_hook(lambda _module, _inputs, features: transform(features))

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        """CHGNet's composition model (AtomRef) gives element Z the energy ``weight[0, Z - 1]`` per atom (an
        intensive model averages it over the atoms and multiplies back): the references to shift."""
        name = "composition_model.fc.weight"
        weight = self.model.get_parameter(name)
        with torch.no_grad():
            for z, value in shifts.items():
                if not 1 <= int(z) <= weight.shape[1]:
                    raise ValueError(f"element {z} is not covered by this CHGNet model")
                weight[0, int(z) - 1] += value
        return name

    def path_weights(self) -> list[PathWeight]:
        weights = []
        for name, param in self.model.named_parameters():
            layer = ".".join(name.split(".")[:2])
            if name.startswith(("atom_conv_layers", "bond_conv_layers", "angle_layers")) and param.ndim == 2:
                weights.append(PathWeight(name, layer, "linear"))
            elif name.startswith(("bond_weights_ag", "bond_weights_bg")) and param.ndim == 2:
                weights.append(PathWeight(name, layer, "radial_mlp"))
        return weights


def _periodic(atoms: Atoms, cutoff: float) -> Atoms:
    """``atoms`` as a fully periodic structure with the same interactions.

    A molecule is boxed with more than ``cutoff`` Å of vacuum on every side; a
    slab or wire keeps its cell if its vacuum along the non-periodic axes exceeds
    the cutoff. Either way no periodic image is a neighbour, so the result equals
    the non-periodic structure. Too little vacuum is a ValueError.
    """
    if atoms.pbc.all():
        return atoms
    boxed = atoms.copy()
    if not atoms.pbc.any():
        span = np.ptp(atoms.positions, axis=0)
        boxed.cell = np.diag(span + 2 * cutoff + 1.0)
        boxed.center()
    elif atoms.cell.rank == 3:
        frac = atoms.cell.scaled_positions(atoms.positions)
        heights = abs(atoms.cell.volume) / np.linalg.norm(np.cross(np.roll(atoms.cell, -1, 0),
                                                                   np.roll(atoms.cell, -2, 0)), axis=1)
        gaps = (1.0 - np.ptp(frac, axis=0)) * heights
        short = [axis for axis in np.flatnonzero(~atoms.pbc) if gaps[axis] <= cutoff]
        if short:
            raise ValueError(
                f"CHGNet treats every axis as periodic: the vacuum along non-periodic axes {short} "
                f"({gaps[short].round(2).tolist()} Å) must exceed the {cutoff} Å cutoff"
            )
    else:
        raise ValueError("CHGNet needs a three-dimensional cell for a partly periodic structure")
    boxed.pbc = True
    return boxed
