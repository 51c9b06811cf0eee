"""GemNet-OC weights on disk: ase-moma's safe folder format, and the converter from JMP/fairchem files.

A saved model is a folder with ``model.json`` (format tag and :class:`GemNetOCConfig`)
and ``model.safetensors`` (the state dict); it is read without unpickling anything.
:func:`convert_checkpoint` turns a JMP Lightning ``.ckpt`` or a fairchem GemNet-OC
state dict into that folder once; it unpickles the file, so it runs only with
``trust_pickle=True``, unless the file is a bare state dict that PyTorch's
weights-only reader accepts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ase_moma.atomic_io import atomic_directory
from ase_moma.checkpoints import UnsafeCheckpointError, load_weights_only, require_file
from ase_moma.plugins.gemnet_oc.config import GemNetOCConfig
from ase_moma.plugins.gemnet_oc.model import GemNetOC

FORMAT = "ase-moma-gemnet-oc/1"
# Prefixes a JMP or fairchem state dict puts before the backbone's own names (JMP keeps the
# shared bases and the edge embedding in a ``bases`` submodule).
_PREFIXES = ("module.", "model.", "backbone.", "bases.")
# Names that differ in layout: JMP's element embedding sits outside its backbone and its final MLP
# is wrapped once more; the reference registers each output block's layers a second time.
_RENAMES = ((re.compile(r"^embedding\.(atom_embedding\.)?weight$"), "atom_emb.embeddings.weight"),
            (re.compile(r"^out_mlp_E\.out_mlp\."), "out_mlp_E."),
            (re.compile(r"\.seq_energy_pre\."), ".layers."))
# What a checkpoint may lack: JMP's energy heads are per-dataset MLPs outside the backbone, so a
# JMP checkpoint brings none; the energy layer then starts at zero, to be fitted by fine-tuning.
_MAY_START_AT_ZERO = ("out_energy.linear.weight",)


def save_gemnet_oc(model: GemNetOC, path: str | Path, *, overwrite: bool = False,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` as ``model.json`` + ``model.safetensors`` into the folder ``path``, atomically."""
    from safetensors.torch import save_file

    header = {"format": FORMAT, "config": model.config.to_dict(), **dict(extra or {})}
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        (tmp / "model.json").write_text(json.dumps(header, indent=1))
        save_file(state, str(tmp / "model.safetensors"))
    return Path(path)


def load_gemnet_oc(path: str | Path) -> GemNetOC:
    """The model saved in folder ``path`` (float32 or as stored; cast it after loading)."""
    from safetensors.torch import load_file

    folder = Path(path).expanduser()
    header_path = require_file(folder / "model.json", "GemNet-OC model.json")
    header = json.loads(header_path.read_text())
    if header.get("format") != FORMAT:
        raise ValueError(f"{header_path} is not an ase-moma GemNet-OC model (format {header.get('format')!r})")
    model = GemNetOC(GemNetOCConfig.from_dict(header["config"]))
    state = load_file(str(require_file(folder / "model.safetensors", "GemNet-OC model.safetensors")))
    _load_strict(model, state, str(folder))
    return model


def convert_checkpoint(source: str | Path, output: str | Path, *, trust_pickle: bool = False,
                       overwrite: bool = False, **graph_settings: Any) -> Path:
    """Convert a JMP ``.ckpt`` or fairchem GemNet-OC checkpoint into a safe model folder.

    Sizes are read from the weights' shapes; ``graph_settings`` (cut-offs, neighbour
    caps) default to JMP's. The direct-force head (forces here are the energy's gradient)
    and any task heads are left out and listed under ``dropped`` in model.json; a
    checkpoint without GemNet-OC's energy layer (JMP's) gets one at zero, listed under
    ``started_at_zero``: such a model predicts nothing useful until fine-tuned. Returns the folder.
    """
    path = require_file(source, "GemNet-OC checkpoint")
    try:
        checkpoint = load_weights_only(path, "GemNet-OC checkpoint")
    except UnsafeCheckpointError:
        if not trust_pickle:
            raise UnsafeCheckpointError(
                f"{path} holds pickled Python objects (a Lightning checkpoint does): loading it runs code "
                "stored in the file. If you trust where it came from, convert it with trust_pickle=True "
                "(CLI: --trust-pickle); the converted folder is safe to share") from None
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    original = _state_dict(checkpoint, path)
    state = {_backbone_name(key): value for key, value in original.items()}
    model = GemNetOC(GemNetOCConfig.jmp_s(**infer_sizes(state), **graph_settings))
    known = set(model.state_dict())
    kept = {name: value for name, value in state.items() if name in known}
    dropped = sorted(key for key in original if _backbone_name(key) not in known)
    started_at_zero = [name for name in _MAY_START_AT_ZERO if name not in kept]
    for name in [*started_at_zero, "reference_energies"]:  # ase-moma's own per-element references: zero
        kept.setdefault(name, torch.zeros_like(model.state_dict()[name]))
    _load_strict(model, kept, str(path))
    return save_gemnet_oc(model, output, overwrite=overwrite, extra={
        "converted_from": path.name, "dropped": dropped, "started_at_zero": started_at_zero})


def _backbone_name(key: str) -> str:
    """``key`` under this model's names: without the wrappers' prefixes (``backbone.int_blocks.0…`` →
    ``int_blocks.0…``), then renamed where the layouts differ (see ``_RENAMES``)."""
    while key.startswith(_PREFIXES):
        key = key.split(".", 1)[1]
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def infer_sizes(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The size settings of :class:`GemNetOCConfig` that the weights' shapes determine."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in state:
            raise ValueError(f"not a GemNet-OC checkpoint: it has no {name!r}")
        return tuple(state[name].shape)

    def count(pattern: str) -> int:
        found = {m.group(1) for key in state if (m := re.match(pattern, key))}
        return len(found)

    num_elements, atom = shape("atom_emb.embeddings.weight")
    num_radial, num_spherical, cbf = shape("mlp_cbf_tint.weight")
    edge = shape("edge_emb.dense.linear.weight")[0]
    block = "int_blocks.0."
    sizes = {
        "num_elements": num_elements, "emb_size_atom": atom, "emb_size_edge": edge,
        "num_radial": num_radial, "num_spherical": num_spherical, "emb_size_cbf": cbf,
        "emb_size_rbf": shape("mlp_rbf_tint.linear.weight")[0],
        "emb_size_sbf": shape("mlp_sbf_qint.weight")[2],
        "num_blocks": count(r"int_blocks\.(\d+)\."),
        "emb_size_trip_in": shape(block + "trip_interaction.down_projection.linear.weight")[0],
        "emb_size_trip_out": shape(block + "trip_interaction.up_projection_ca.linear.weight")[1],
        "emb_size_quad_in": shape(block + "quad_interaction.down_projection.linear.weight")[0],
        "emb_size_quad_out": shape(block + "quad_interaction.up_projection_ca.linear.weight")[1],
        "emb_size_aint_in": shape(block + "atom_interaction.down_projection.linear.weight")[0],
        "emb_size_aint_out": shape(block + "atom_interaction.up_projection.linear.weight")[1],
        "num_before_skip": count(r"int_blocks\.0\.layers_before_skip\.(\d+)\."),
        "num_after_skip": count(r"int_blocks\.0\.layers_after_skip\.(\d+)\."),
        "num_concat": count(r"int_blocks\.0\.residual_m\.(\d+)\."),
        "num_atom_emb_layers": count(r"int_blocks\.0\.atom_emb_layers\.(\d+)\."),
        "num_atom": count(r"int_blocks\.0\.atom_update\.layers\.(\d+)\.dense_mlp\."),
        "num_output_afteratom": count(r"out_blocks\.0\.seq_energy2\.(\d+)\."),
        "num_global_out_layers": count(r"out_mlp_E\.(\d+)\.dense_mlp\."),
    }
    return sizes


def _state_dict(checkpoint: Any, path: Path) -> Mapping[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not (isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values())):
        raise ValueError(f"{path} is not a GemNet-OC checkpoint: expected a state dict of tensors "
                         "(or a Lightning checkpoint holding one under 'state_dict')")
    return state


def _load_strict(model: GemNetOC, state: Mapping[str, torch.Tensor], where: str) -> None:
    result = model.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{where} does not fit a GemNet-OC of the sizes its weights imply: missing "
                         f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
