"""MACE backbone (mace-torch ≥ 0.3.14).

Sources:
- a directory written by :func:`save_mace` (``model.json`` + ``model.safetensors``):
  the safe format, read without unpickling anything;
- a ``.model`` file as mace-torch writes it (a pickled ``torch.nn.Module``):
  unpickling runs code from the file, so it loads only with ``trust_pickle=True``;
- ``mace_mp:NAME`` (e.g. ``mace_mp:medium``): mace-torch downloads the official
  MACE-MP checkpoint, which needs a network.
No MACE weights ship inside a wheel, so there is no embedded default.

mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the whole process when it is
imported (making a plain ``torch.load`` unpickle anything); this plugin imports
it through :func:`_import_mace`, which puts the environment back.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms

from ase_moma.atomic_io import atomic_directory
from ase_moma.backbone import (Backbone, BackboneOutput, Edges, EnergyTerm, NodeFeatures, PathWeight,
                               parameter_path_weights)
from ase_moma.capabilities import Capabilities
from ase_moma.checkpoints import UnsafeCheckpointError, require_file
from ase_moma.e3nn_tools import e3nn_path_weight, prepare_e3nn, without_torchscript
from ase_moma.process_state import kept_process_state

FORMAT = "ase-moma/mace-1"
_NAMED_PREFIX = "mace_mp:"
_ACTIVATIONS = {f.__name__: f for f in (torch.nn.functional.silu, torch.nn.functional.relu,
                                        torch.nn.functional.gelu, torch.nn.functional.softplus,
                                        torch.tanh, torch.sigmoid, torch.abs)}


class MACEBackbone(Backbone):
    """MACE (higher-order equivariant message passing) from a local model or MACE-MP download."""

    name = "mace"
    requires = ("mace",)
    capabilities = Capabilities(energy_terms=True, path_weights=True, readout=True, reference_energies=True)

    @classmethod
    def load(cls, source: str | None = None, *, device: torch.device, dtype: torch.dtype,
             trust_pickle: bool = False) -> "MACEBackbone":
        prepare_e3nn()
        _import_mace()
        if source is None:
            raise ValueError(
                "MACE has no embedded weights: pass a directory saved by save_mace, a .model file "
                "(with trust_pickle=True), or 'mace_mp:NAME' (needs a network)"
            )
        with without_torchscript():
            model = _read_model(str(source), trust_pickle)
        model.to(device=device, dtype=dtype).eval()
        model.requires_grad_(False)
        return cls(model, device=device, dtype=dtype, source=str(source), cutoff=float(model.r_max),
                   covered_numbers=[int(z) for z in model.atomic_numbers], requested_source=source)

    def build_graph(self, atoms: Atoms) -> Any:
        from mace.data import AtomicData, config_from_atoms
        from mace.tools import torch_tools
        from mace.tools.utils import AtomicNumberTable

        bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        with torch_tools.default_dtype(self.dtype):
            return AtomicData.from_config(
                config_from_atoms(bare),
                z_table=AtomicNumberTable([int(z) for z in self.model.atomic_numbers]),
                cutoff=self.cutoff,
                heads=list(getattr(self.model, "heads", ["Default"])),
            )

    def atomic_numbers(self, graph: Any) -> torch.Tensor:
        return self._numbers(graph.node_attrs).cpu()

    def _numbers(self, node_attrs: torch.Tensor) -> torch.Tensor:
        """(N,) atomic numbers from MACE's one-hot node attributes, on their device."""
        table = torch.as_tensor([int(z) for z in self.model.atomic_numbers], device=node_attrs.device)
        return table[node_attrs.argmax(dim=1)]

    def collate(self, graphs: Sequence[Any]) -> dict[str, torch.Tensor]:
        from mace.tools.torch_geometric import Batch  # mace vendors its own torch_geometric

        return Batch.from_data_list(list(graphs)).to(self.device).to_dict()

    def forward(self, batch: dict[str, torch.Tensor], *, forces: bool = True,
                stress: bool = True) -> BackboneOutput:
        out = self.model(dict(batch), training=self.model.training, compute_force=forces,
                         compute_stress=stress)
        return BackboneOutput(
            energy=out["energy"],
            n_atoms=torch.diff(batch["ptr"]),
            forces=out["forces"] if forces else None,
            stress=out["stress"] if stress else None,
        )

    def forward_with(self, batch: dict[str, torch.Tensor], term: EnergyTerm, *, forces: bool = True,
                     stress: bool = True) -> BackboneOutput:
        from mace.modules.utils import get_outputs

        data = dict(batch)
        positions = data["positions"]  # forces differentiate this leaf; for stress the model displaces a copy
        out = self.model(data, training=True, compute_force=False, compute_displacement=stress)
        sender, receiver = data["edge_index"]  # MACE's edge vector: receiver − sender + shift
        edges = Edges(index=data["edge_index"], numbers=self._numbers(data["node_attrs"]),
                      vectors=data["positions"][receiver] - data["positions"][sender] + data["shifts"])
        extra, magmoms = term(self._last_block(out["node_feats"], data["batch"]), edges, int(data["ptr"].numel() - 1))
        extra = extra.to(out["energy"].dtype)
        force, _, stress_tensor, _, _ = get_outputs(
            energy=out["interaction_energy"] + extra, positions=positions, cell=data["cell"],
            displacement=out["displacement"], training=self.model.training or torch.is_grad_enabled(),
            compute_force=forces, compute_virials=False, compute_stress=stress)
        return BackboneOutput(energy=out["energy"] + extra, n_atoms=torch.diff(data["ptr"]),
                              forces=force if forces else None, stress=stress_tensor if stress else None,
                              magmoms=magmoms)

    def node_features(self, batch: dict[str, torch.Tensor]) -> NodeFeatures:
        out = self.model(dict(batch), training=self.model.training, compute_force=False)
        return self._last_block(out["node_feats"], batch["batch"])

    def _last_block(self, node_feats: torch.Tensor, batch: torch.Tensor) -> NodeFeatures:
        """The invariant (l=0) channels of the last product block's output."""
        last = self.model.products[-1].linear.irreps_out
        n_scalar = sum(mul for mul, ir in last if ir.l == 0)
        return NodeFeatures(invariant=node_feats[:, -last.dim:][:, :n_scalar], batch=batch)

    def path_weights(self) -> list[PathWeight]:
        weights = []
        for name, module in self.model.named_modules():
            if not name.startswith(("interactions", "products")):
                continue
            layer = ".".join(name.split(".")[:2])
            tagged = e3nn_path_weight(name, module, layer)
            if tagged is not None:
                weights.append(tagged)
            elif name.endswith("conv_tp_weights"):
                weights.extend(parameter_path_weights(name, module, layer, "radial_mlp"))
            elif name.endswith("symmetric_contractions"):
                weights.extend(parameter_path_weights(name, module, layer, "tensor_product"))
        return weights

    def readout_parameters(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters() if name.startswith("readouts.")]

    def add_reference_energies(self, shifts: Mapping[int, float]) -> str:
        name = "atomic_energies_fn.atomic_energies"
        energies = dict(self.model.named_buffers())[name]
        slots = {int(z): i for i, z in enumerate(self.model.atomic_numbers)}
        with torch.no_grad():
            for z, value in shifts.items():
                if int(z) not in slots:
                    raise ValueError(f"element {z} is not covered by this MACE model")
                energies[..., slots[int(z)]] += value
        return name


def save_mace(model: torch.nn.Module, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` in the safe format: ``model.json`` (constructor) + ``model.safetensors``."""
    _import_mace()
    from mace.tools.scripts_utils import extract_config_mace_model
    from safetensors.torch import save_file

    config = extract_config_mace_model(model)
    if "error" in config:
        raise ValueError(f"cannot save {type(model).__name__}: {config['error']}")
    header = {"format": FORMAT, "class": type(model).__name__, "config": _encode(config)}
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        (tmp / "model.json").write_text(json.dumps(header, indent=1))
        save_file(state, str(tmp / "model.safetensors"))
    return Path(path)


def _import_mace() -> None:
    """Import mace's modules that set process-wide state on import, with the process state kept."""
    with kept_process_state():
        import mace.calculators  # noqa: F401  (runs mace/__init__ and calculators/mace.py, both set the variable)


def _read_model(source: str, trust_pickle: bool) -> torch.nn.Module:
    if source.startswith(_NAMED_PREFIX):
        from mace.calculators.foundations_models import download_mace_mp_checkpoint

        try:
            local = download_mace_mp_checkpoint(source[len(_NAMED_PREFIX):])
        except Exception as error:
            raise RuntimeError(f"could not download {source} (it needs a network): {error}") from None
        return torch.load(local, map_location="cpu", weights_only=False)  # official release file
    path = Path(source).expanduser()
    if path.is_dir() or path.suffix == ".json":
        return _read_safe(path if path.is_dir() else path.parent)
    require_file(path, "MACE model")
    if not trust_pickle:
        raise UnsafeCheckpointError(
            f"{path} is a pickled MACE model: loading it runs code stored in the file. If you "
            "trust where it came from, load it with trust_pickle=True (CLI: --trust-pickle), "
            "then save_mace() it once into the safe safetensors + JSON format"
        )
    model = torch.load(path, map_location="cpu", weights_only=False)
    if not (isinstance(model, torch.nn.Module) and hasattr(model, "atomic_numbers")
            and hasattr(model, "r_max")):
        raise ValueError(f"{path} is not a MACE model (got {type(model).__name__})")
    return model


def _read_safe(directory: Path) -> torch.nn.Module:
    import mace.modules.models as mace_models
    from safetensors.torch import load_file

    header_path = require_file(directory / "model.json", "MACE model.json")
    header = json.loads(header_path.read_text())
    if header.get("format") != FORMAT:
        raise ValueError(f"{header_path} is not an ase-moma MACE model (format {header.get('format')!r})")
    weights_path = require_file(directory / "model.safetensors", "MACE model.safetensors")
    model_class = getattr(mace_models, str(header.get("class")), None)
    if not (isinstance(model_class, type) and issubclass(model_class, torch.nn.Module)):
        raise ValueError(f"{header_path} names unknown MACE model class {header.get('class')!r}")
    model = model_class(**_decode(header["config"]))
    model.load_state_dict(load_file(str(weights_path)), strict=True)
    return model


def _encode(value: Any) -> Any:
    """JSON form of a MACE constructor config (irreps, classes, functions, arrays tagged)."""
    from e3nn import o3

    if isinstance(value, o3.Irreps):
        return {"@irreps": str(value)}
    if isinstance(value, type):
        return {"@class": value.__name__}
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return {"@function": value.__name__}
    if isinstance(value, (np.ndarray, torch.Tensor)):
        array = np.asarray(value.detach().cpu() if torch.is_tensor(value) else value)
        return {"@array": array.tolist(), "dtype": str(array.dtype)}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"cannot store {type(value).__name__} in a MACE config")


def _decode(value: Any) -> Any:
    """Inverse of :func:`_encode`; classes only from mace.modules.blocks, functions from a fixed list."""
    import mace.modules.blocks as blocks
    from e3nn import o3

    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "@irreps" in value:
        return o3.Irreps(value["@irreps"])
    if "@class" in value:
        found = getattr(blocks, value["@class"], None)
        if not (isinstance(found, type) and issubclass(found, torch.nn.Module)):
            raise ValueError(f"unknown MACE block class {value['@class']!r}")
        return found
    if "@function" in value:
        if value["@function"] not in _ACTIVATIONS:
            raise ValueError(f"unknown activation function {value['@function']!r}")
        return _ACTIVATIONS[value["@function"]]
    if "@array" in value:
        return np.asarray(value["@array"], dtype=np.dtype(value["dtype"]))
    return {k: _decode(v) for k, v in value.items()}
