"""SevenNet backbone (sevenn 0.10.x); SevenNet-0 (11 Jul 2024) ships in the wheel.

Graphs are built exactly as ``sevenn``'s own calculator builds them, so with one
structure the numbers match ``SevenNetCalculator`` bit for bit; several structures
are batched with torch-geometric and run through the model in batch mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
from ase import Atoms

from ase_moma.backbone import (AdapterSite, Backbone, BackboneOutput, Edges, EnergyTerm, NodeFeatures,
                               PathWeight, parameter_path_weights, stress_matrix)
from ase_moma.capabilities import Capabilities
from ase_moma.checkpoints import load_weights_only, require_file
from ase_moma.e3nn_tools import e3nn_path_weight, prepare_e3nn, without_torchscript

_LAST_BLOCK_END = "reduce_input_to_hidden"
_SPECIES_EMBEDDING = "onehot_to_feature_x.linear"  # e3nn Linear from one-hot species (N×0e) to features
_SEVENN_VOIGT = (0, 1, 2, 4, 5, 3)  # where ASE's xx yy zz yz xz xy sit in sevenn's xx yy zz xy yz zx


class SevenNetBackbone(Backbone):
    """SevenNet (NequIP-style e3nn model); SevenNet-0 is the embedded default."""

    name = "sevennet"
    requires = ("sevenn",)
    has_default = True
    # parity: SevenNet-0's; a checkpoint trained with is_parity declares its own on loading
    capabilities = Capabilities(adapters=True, energy_terms=True, path_weights=True, readout=True,
                                reference_energies=True, parity=False)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device,
             dtype: torch.dtype) -> "SevenNetBackbone":
        prepare_e3nn()
        import sevenn._const
        import sevenn._keys as KEY
        from sevenn.util import model_from_checkpoint

        path = sevenn._const.SEVENNET_0_11Jul2024 if source is None else source
        checkpoint = load_weights_only(require_file(path, "SevenNet checkpoint"), "SevenNet checkpoint")
        if not (isinstance(checkpoint, dict) and {"model_state_dict", "config"} <= checkpoint.keys()):
            raise ValueError(
                f"{path} is not a SevenNet checkpoint: it lacks 'model_state_dict' and 'config'"
            )
        with without_torchscript():
            model, config = model_from_checkpoint(checkpoint)
        model.set_is_batch_data(False)
        if dtype != torch.float32:
            _cast_onehot_output(model, dtype)
        model.to(device=device, dtype=dtype).eval()
        model.requires_grad_(False)
        return cls(model, device=device, dtype=dtype, source=str(path), cutoff=config[KEY.CUTOFF],
                   covered_numbers=config[KEY.TYPE_MAP].keys(), requested_source=source,
                   parity=bool(config.get(KEY.IS_PARITY, True)))

    def build_graph(self, atoms: Atoms) -> Any:
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from sevenn.util import dtype_correct

        fields = unlabeled_atoms_to_graph(atoms, self.cutoff)  # float64 numpy arrays
        return AtomGraphData(**{  # as AtomGraphData.from_numpy_dict, but in the model's dtype
            key: torch.tensor(value, dtype=self.dtype) if key == KEY.CELL_SHIFT
            else dtype_correct(value, float_dtype=self.dtype)
            for key, value in fields.items()
        })

    def atomic_numbers(self, graph: Any) -> torch.Tensor:
        import sevenn._keys as KEY

        return torch.as_tensor(graph[KEY.ATOMIC_NUMBERS]).long().cpu()

    def collate(self, graphs: Sequence[Any]) -> Any:
        from torch_geometric.data import Batch

        if len(graphs) == 1:
            return graphs[0].clone().to(self.device)
        return Batch.from_data_list(list(graphs)).to(self.device)

    def forward(self, batch: Any, *, forces: bool = True, stress: bool = True) -> BackboneOutput:
        import sevenn._keys as KEY

        self.model.set_is_batch_data(KEY.BATCH in batch)
        return _output(self.model(batch), forces, stress)

    def forward_with(self, batch: Any, term: EnergyTerm, *, forces: bool = True,
                     stress: bool = True) -> BackboneOutput:
        import sevenn._keys as KEY

        batch[self.model.key_grad].requires_grad_(True)  # the edge vectors, as the model's own forward does
        data, features = self._run(batch, stop="force_output")
        edges = Edges(index=data[KEY.EDGE_IDX], vectors=data[KEY.EDGE_VEC], numbers=data[KEY.ATOMIC_NUMBERS])
        total = data[KEY.PRED_TOTAL_ENERGY]
        extra, magmoms = term(features, edges, int(data[KEY.NUM_ATOMS].numel()))
        data[KEY.PRED_TOTAL_ENERGY] = total + extra.to(total.dtype).reshape(total.shape)
        if forces or stress:
            data = self.model._modules["force_output"](data)
        output = _output(data, forces, stress)
        output.magmoms = magmoms
        return output

    def energy(self, batch: Any) -> torch.Tensor:
        import sevenn._keys as KEY

        return self._run(batch, stop="force_output")[0][KEY.PRED_TOTAL_ENERGY].reshape(-1)

    def node_features(self, batch: Any) -> NodeFeatures:
        return self._run(batch, stop=_LAST_BLOCK_END)[1]

    def _run(self, batch: Any, stop: str) -> tuple[Any, NodeFeatures]:
        """Run the model's modules before ``stop`` on ``batch``.

        Returns the data and the invariant (l=0) node features of the last interaction block.
        """
        import sevenn._keys as KEY
        from e3nn import o3

        self.model.set_is_batch_data(KEY.BATCH in batch)
        data = batch
        if self.model.eval_type_map:
            data[KEY.NODE_FEATURE] = self.model._atomic_numbers_to_onehot(data[KEY.ATOMIC_NUMBERS])
        invariant = None
        for key, module in self.model._modules.items():
            if key == _LAST_BLOCK_END:
                scalars = o3.Irreps(module.linear.irreps_in)
                invariant = data[KEY.NODE_FEATURE][:, :sum(mul for mul, ir in scalars if ir.l == 0)]
            if key == stop:
                break
            data = module(data)
        n_atoms = invariant.shape[0]
        index = data[KEY.BATCH] if KEY.BATCH in data else torch.zeros(
            n_atoms, dtype=torch.long, device=invariant.device)
        return data, NodeFeatures(invariant=invariant, batch=index)

    def adapter_sites(self) -> list[AdapterSite]:
        from e3nn import o3

        return [AdapterSite(key, str(o3.Irreps(module.gate.irreps_out).simplify()))
                for key, module in self.model._modules.items() if key.endswith("_equivariant_gate")]

    def hook_node_features(self, site: str, transform: Any) -> torch.utils.hooks.RemovableHandle:
        import sevenn._keys as KEY

        def rewrite(_module: torch.nn.Module, _inputs: Any, data: Any) -> Any:
            data[KEY.NODE_FEATURE] = transform(data[KEY.NODE_FEATURE])
            return data

        return self.model._modules[site].register_forward_hook(rewrite)

    def path_weights(self) -> list[PathWeight]:
        weights = []
        for name, module in self.model.named_modules():
            layer = name.split(".")[0]
            tagged = e3nn_path_weight(name, module, layer)
            if tagged is not None and name == _SPECIES_EMBEDDING:  # one row of weights per element
                width = module.irreps_out.dim
                tagged = dataclasses.replace(tagged, element_slices={
                    int(z): (index * width, (index + 1) * width) for z, index in self.model.type_map.items()})
            if tagged is not None:
                weights.append(tagged)
            elif name.endswith("weight_nn"):
                weights.extend(parameter_path_weights(name, module, layer, "radial_mlp"))
        return weights

    def readout_parameters(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()
                if name.startswith(("reduce_input_to_hidden.", "reduce_hidden_to_energy."))]

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        name = "rescale_atomic_energy.shift"
        shift = dict(self.model.named_parameters())[name]
        with torch.no_grad():
            for z, value in shifts.items():
                if int(z) not in self.model.type_map:
                    raise ValueError(f"element {z} is not covered by this SevenNet model")
                shift[self.model.type_map[int(z)]] += value
        return name


def _output(out: Any, forces: bool, stress: bool) -> BackboneOutput:
    """A BackboneOutput from sevenn's output dict (its stress is −σ in Voigt order xx yy zz xy yz zx)."""
    import sevenn._keys as KEY

    full = stress_matrix(-out[KEY.PRED_STRESS], _SEVENN_VOIGT) if stress else None
    return BackboneOutput(
        energy=out[KEY.PRED_TOTAL_ENERGY].reshape(-1),
        n_atoms=out[KEY.NUM_ATOMS].reshape(-1),
        forces=out[KEY.PRED_FORCE] if forces else None,
        stress=full,
    )


def _cast_onehot_output(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Make the one-hot species embedding emit ``dtype`` (sevenn hard-codes float32 there)."""
    onehot = model._modules["onehot_idx_to_onehot"]
    keys = [k for k in (onehot.key_x, onehot.key_additional_output) if k is not None]

    def cast(_module: torch.nn.Module, _inputs: Any, data: Any) -> Any:
        for key in keys:
            data[key] = data[key].to(dtype)
        return data

    onehot.register_forward_hook(cast)
