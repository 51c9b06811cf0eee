"""Loading a composed model (a compose OUT/ folder) as a backbone or as a property model.

A composed folder is portable: it holds the merged weights (and, once
fine-tuned, the fine-tuned module in ``OUT/model/``), and needs only the
pretrained backbone its recipe names, whose fingerprint is checked.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ase_moma.adapters import AdapterSet
from ase_moma.backbone import Backbone
from ase_moma.compose.recipe import MERGED, RECIPE, read_recipe
from ase_moma.module_files import check_module_folder, load_state, load_tensors, verify_files
from ase_moma.module_model import module_from_folder
from ase_moma.property_model import PropertyModel
from ase_moma.provenance import load_recorded_backbone
from ase_moma.saved_models import SavedModelKind

FINETUNED = "model"


def is_finetuned(out: str | Path) -> bool:
    """Whether the composed model in ``out`` has been fine-tuned (``OUT/model/`` exists)."""
    return (Path(out) / FINETUNED).is_dir()


def base_backbone(out: str | Path, device: str | torch.device = "auto",
                  dtype: str | torch.dtype = "float32") -> Backbone:
    """The pretrained backbone the composition in ``out`` started from (fingerprint checked)."""
    return load_recorded_backbone(read_recipe(out)["backbone"], f"the composition in {out}", device, dtype)


def apply_merged(out: str | Path, backbone: Backbone) -> AdapterSet | None:
    """Put the merged weights of ``out`` into ``backbone`` (pretrained): load them over its
    weights (``full``) or attach merged adapters, which are returned (``adapter``).
    A ``no_hub`` composition leaves the backbone as it is."""
    recipe = read_recipe(out)
    if recipe["merged"] is None:
        return None
    path = Path(out) / MERGED
    verify_files(Path(out), {MERGED: recipe["merged"]["sha256"]}, str(Path(out) / RECIPE))
    tensors = load_tensors(path)
    if recipe["kind"] == "full":
        load_state(backbone.model, tensors, path)
        return None
    adapters = AdapterSet.for_backbone(backbone)
    load_state(adapters.adapters, tensors, path)
    adapters.attach(backbone)
    return adapters


def load_composed_model(out: str | Path, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "float32") -> PropertyModel:
    """The fine-tuned property model in ``out`` (merged backbone + property head)."""
    if not is_finetuned(out):
        read_recipe(out)
        raise FileNotFoundError(f"the composed model in {out} has not been fine-tuned yet: "
                                f"run `ase-moma finetune {out}` first")
    folder = Path(out) / FINETUNED
    meta = check_module_folder(folder)
    backbone = load_recorded_backbone(meta["backbone"], f"the fine-tuned composition in {folder}", device, dtype,
                                      source=read_recipe(out)["backbone"].get("source"))
    return module_from_folder(folder, meta, backbone)


def load_composed_backbone(out: str | Path, device: str | torch.device = "auto",
                           dtype: str | torch.dtype = "float32") -> Backbone:
    """The composed model in ``out`` as a backbone (energy, forces, stress, node features).

    Its weights are the fine-tuned ones when ``out`` was fine-tuned, else the
    merged ones; its fingerprint identifies them, so a hub can be built on it.
    """
    if is_finetuned(out):
        model = load_composed_model(out, device, dtype)
        backbone, adapters = model.backbone, model.adapters
    else:
        backbone = base_backbone(out, device, dtype)
        adapters = apply_merged(out, backbone)
    backbone.mark_saved(str(Path(out).resolve()), *([adapters] if adapters is not None else []))
    return backbone


class ComposedFolder(SavedModelKind):
    """An ``ase-moma compose`` output folder: the merged model, and once fine-tuned, its property model."""

    name, marker, loader = "composed", RECIPE, staticmethod(load_composed_backbone)
    description = "ase-moma compose output (recipe.json); serves its target once fine-tuned"

    @classmethod
    def property_model(cls, path: Path, device: str | torch.device = "auto",
                       dtype: str | torch.dtype = "float32") -> PropertyModel | None:
        return load_composed_model(path, device, dtype) if is_finetuned(path) else None
