"""A hub module folder as a saved model of its own, loadable without its hub.

``load_backbone(MODULE_DIR)`` gives the module's backbone (its pretrained base,
fingerprint checked, with the module's weights, delta or adapters in place);
``load_calculator(MODULE_DIR)`` serves its target for property modules, and
energy, forces and stress for a ``delta`` module (a fine-tuned potential).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ase_moma.backbone import Backbone
from ase_moma.module_files import MODULE_JSON, check_module_folder
from ase_moma.module_model import apply_module, module_from_folder
from ase_moma.property_model import PropertyModel
from ase_moma.provenance import load_recorded_backbone
from ase_moma.saved_models import SavedModelKind


def load_module_folder(folder: str | Path, device: str | torch.device = "auto",
                       dtype: str | torch.dtype = "float32") -> PropertyModel:
    """The verified module in ``folder`` as a PropertyModel on its recorded base backbone."""
    folder = Path(folder)
    meta = check_module_folder(folder)
    base = load_recorded_backbone(meta["backbone"], f"module {folder}", device, dtype)
    return module_from_folder(folder, meta, base)


def load_module_backbone(folder: str | Path, device: str | torch.device = "auto",
                         dtype: str | torch.dtype = "float32") -> Backbone:
    """The verified module in ``folder`` as a backbone: its base with the module's weights, delta or
    adapters in place; its fingerprint identifies the result."""
    folder = Path(folder)
    meta = check_module_folder(folder)
    backbone = load_recorded_backbone(meta["backbone"], f"module {folder}", device, dtype)
    adapters = apply_module(folder, meta, backbone)
    if adapters is not None:
        adapters.attach(backbone)
    backbone.mark_saved(str(folder.resolve()), *([adapters] if adapters is not None else []))
    return backbone


class ModuleFolder(SavedModelKind):
    """A hub module folder (module.json + safetensors)."""

    name, marker, loader = "module", MODULE_JSON, staticmethod(load_module_backbone)
    description = "a hub module folder (module.json); a delta module is a potential, others serve their target"

    @classmethod
    def property_model(cls, path: Path, device: str | torch.device = "auto",
                       dtype: str | torch.dtype = "float32") -> PropertyModel | None:
        return None if check_module_folder(path)["kind"] == "delta" else load_module_folder(path, device, dtype)
