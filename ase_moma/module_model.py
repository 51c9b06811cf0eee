"""A verified module folder as a model: the pretrained backbone with the module's change applied.

Used by the hub, by compositions (a fine-tuned composition is a module folder)
and by the ``module`` saved-model kind, so a module folder means the same thing
wherever it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone
from ase_moma.delta import apply_delta, read_delta
from ase_moma.heads import EnergyReference, PropertyHead
from ase_moma.module_files import DELTA, HEAD, WEIGHTS, load_state, load_tensors
from ase_moma.module_format import FUSION
from ase_moma.property_model import PropertyModel


def apply_module(folder: Path, meta: dict[str, Any], backbone: Backbone) -> AdapterSet | None:
    """Put the module's change into ``backbone`` (pretrained, fingerprint checked by the caller).

    ``full``: its weights replace the backbone's in place; ``delta``: its sparse
    change is added to them; ``adapter``: its adapters are built and returned
    (not yet attached).
    """
    if meta["kind"] == "delta":
        apply_delta(backbone.model, read_delta(load_tensors(folder / DELTA), folder / DELTA), folder / DELTA)
        return None
    tensors = load_tensors(folder / WEIGHTS)
    if meta["kind"] == "full":
        load_state(backbone.model, tensors, folder / WEIGHTS)
        return None
    backbone.require("adapter modules", "adapters")
    adapters = AdapterSet.for_backbone(backbone)
    load_state(adapters.adapters, tensors, folder / WEIGHTS)
    return adapters


def module_from_folder(folder: Path, meta: dict[str, Any], backbone: Backbone, *,
                       fused: bool = True) -> PropertyModel:
    """The property model of a verified module folder (``meta`` its module.json) on ``backbone``.

    A ``delta`` module (a fine-tuned potential) reads out energy per atom with
    no extra reference; ``full`` and ``adapter`` modules carry their own
    read-out (a property head, or per-element reference energies). A module
    that kept a fusion head (``fusion.safetensors``) is a
    :class:`~ase_moma.modalities.fused_model.FusedPropertyModel` over that
    graph model, unless ``fused`` is False (the graph model alone).
    """
    adapters = apply_module(folder, meta, backbone)
    if meta["kind"] == "delta":
        head: PropertyHead | EnergyReference = EnergyReference().to(backbone.device)
        readout = "energy_per_atom"
    else:
        readout = meta["readout"]
        if readout == "head":
            head = PropertyHead(**meta["head"]).to(device=backbone.device, dtype=backbone.dtype)
        else:
            head = EnergyReference(**meta["head"]).to(device=backbone.device)
        load_state(head, load_tensors(folder / HEAD), folder / HEAD)
    model = PropertyModel(backbone, readout, head=head, adapters=adapters, target=meta.get("target", ""),
                          unit=meta.get("unit", "")).eval()
    if fused and FUSION in meta.get("files", {}):
        from ase_moma.modalities.fused_model import load_fused

        return load_fused(folder, meta, model)
    return model
