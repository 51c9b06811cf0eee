"""JMP backbone: GemNet-OC (written in ase-moma, plugins/gemnet_oc) from a user's JMP checkpoint.

JMP-S and JMP-L weights cannot be fetched here (and their licence is non-commercial):
convert yours once with :func:`~ase_moma.plugins.gemnet_oc.checkpoint.convert_checkpoint`
(``ase-moma jmp-convert CKPT OUT --trust-pickle``) and load the folder it writes. A
Lightning ``.ckpt`` is also accepted directly with ``trust_pickle=True``.

What sparse fine-tuning may move: GemNet-OC has no e3nn paths; its counterpart is
where geometry meets features: the bilinear layers of the triplet, quadruplet and
atom-atom interactions (a basis ⊗ embedding contraction, the role an e3nn tensor
product plays), the learnt projections of the radial/angular bases (the radial MLP's
role) and the element embedding (one row per element). The dense layers that only
mix feature channels stay frozen, as SevenNet's self-interactions' do not.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from ase import Atoms
from ase.data import chemical_symbols

from ase_moma.backbone import AdapterSite, Backbone, BackboneOutput, Edges, EnergyTerm, NodeFeatures, PathWeight
from ase_moma.capabilities import Capabilities
from ase_moma.plugins.gemnet_oc.checkpoint import convert_checkpoint, load_gemnet_oc
from ase_moma.plugins.gemnet_oc.graph import GemNetGraph, build_graph, collate

_HEAVIEST = len(chemical_symbols) - 1  # JMP's embedding has 120 rows; elements end at oganesson
_BILINEAR = (".mlp_cbf.bilinear.", ".mlp_sbf.bilinear.", "atom_interaction.bilinear.")
_BASIS_PROJECTIONS = ("mlp_rbf_", "mlp_cbf_", "mlp_sbf_", ".mlp_rbf.", ".mlp_cbf.linear.", ".dense_rbf.")


class JMPBackbone(Backbone):
    """GemNet-OC with JMP's graph settings, loaded from a converted folder or a trusted ``.ckpt``."""

    name = "jmp"
    capabilities = Capabilities(adapters=True, energy_terms=True, path_weights=True, readout=True,
                                reference_energies=True)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device, dtype: torch.dtype,
             trust_pickle: bool = False) -> "JMPBackbone":
        if source is None:
            raise ValueError(
                "JMP has no embedded weights (JMP-S/L are released under a non-commercial licence and "
                "cannot be fetched here): pass a folder written by `ase-moma jmp-convert CKPT OUT`")
        path = Path(source).expanduser()
        if path.is_dir():
            model = load_gemnet_oc(path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                model = load_gemnet_oc(convert_checkpoint(path, Path(tmp) / "model", trust_pickle=trust_pickle))
        model.to(device=device, dtype=dtype).eval()
        model.requires_grad_(False)
        return cls(model, device=device, dtype=dtype, source=str(path), cutoff=model.config.cutoff_aint,
                   covered_numbers=range(1, min(model.config.num_elements, _HEAVIEST) + 1), requested_source=source)

    def build_graph(self, atoms: Atoms) -> GemNetGraph:
        return build_graph(atoms, self.model.config)

    def atomic_numbers(self, graph: GemNetGraph) -> torch.Tensor:
        return torch.as_tensor(graph.numbers, dtype=torch.long)

    def collate(self, graphs: Sequence[GemNetGraph]) -> dict[str, torch.Tensor]:
        return collate(graphs, self.device, self.dtype)

    def forward(self, batch: dict[str, torch.Tensor], *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        out = self.model(batch, forces=forces, stress=stress)
        return BackboneOutput(energy=out["energy"], n_atoms=batch["n_atoms"], forces=out.get("forces"),
                              stress=out.get("stress"))

    def forward_with(self, batch: dict[str, torch.Tensor], term: EnergyTerm, *, forces: bool = True,
                     stress: bool = True) -> BackboneOutput:
        def extra(h: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            edges = Edges(index=torch.stack([batch["main_tgt"], batch["main_src"]]), vectors=vectors,
                          numbers=batch["numbers"])
            return term(NodeFeatures(invariant=h, batch=batch["batch"]), edges, len(batch["n_atoms"]))

        out = self.model(batch, forces=forces, stress=stress, extra=extra)
        return BackboneOutput(energy=out["energy"], n_atoms=batch["n_atoms"], forces=out.get("forces"),
                              stress=out.get("stress"), magmoms=out["per_atom"])

    def energy(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.energy_and_features(batch)[0]

    def node_features(self, batch: dict[str, torch.Tensor]) -> NodeFeatures:
        return NodeFeatures(invariant=self.model.energy_and_features(batch)[1], batch=batch["batch"])

    def adapter_sites(self) -> list[AdapterSite]:
        width = self.model.config.emb_size_atom
        return [AdapterSite(f"int_blocks.{i}", f"{width}x0e") for i in range(self.model.config.num_blocks)]

    def hook_node_features(self, site: str, transform: Any) -> torch.utils.hooks.RemovableHandle:
        def rewrite(_module: torch.nn.Module, _inputs: Any, output: tuple[torch.Tensor, torch.Tensor]) -> Any:
            h, m = output
            return transform(h), m

        return self.model.get_submodule(site).register_forward_hook(rewrite)

    def path_weights(self) -> list[PathWeight]:
        weights = []
        for name, param in self.model.named_parameters():
            layer = name.split(".")[0] if not name.startswith("int_blocks.") else ".".join(name.split(".")[:2])
            if any(part in name for part in _BILINEAR):
                weights.append(PathWeight(name, layer, "tensor_product"))
            elif any(part in name for part in _BASIS_PROJECTIONS):
                weights.append(PathWeight(name, layer, "radial_mlp"))
            elif name == "atom_emb.embeddings.weight":
                width = param.shape[1]
                weights.append(PathWeight(name, layer, "linear", element_slices={
                    z: ((z - 1) * width, z * width) for z in range(1, min(param.shape[0], _HEAVIEST) + 1)}))
        return weights

    def readout_parameters(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()
                if name.startswith(("out_blocks.", "out_mlp_E.", "out_energy."))]

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        energies = self.model.reference_energies
        with torch.no_grad():
            for z, value in shifts.items():
                if not 1 <= int(z) <= len(energies):
                    raise ValueError(f"element {z} is not covered by this GemNet-OC model")
                energies[int(z) - 1] += value
        return "reference_energies"
