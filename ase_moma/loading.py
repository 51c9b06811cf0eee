"""Loading a model by name or folder: registered backbones and saved-model kinds, one entry point.

A name that is a registered backbone loads through the backbone registry; a
folder of a registered saved-model kind (a composition, a fine-tuned
potential, a hub module) loads through that kind, which resolves the base
backbone it records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ase_moma.backbone import Backbone
from ase_moma.devices import resolve_device, resolve_dtype
from ase_moma.process_state import kept_process_state
from ase_moma.registry import backbone_class
from ase_moma.saved_models import kind_of


def load_backbone(name: str, source: str | None = None, *, device: str | torch.device = "auto",
                  dtype: str | torch.dtype = "float32", **options: Any) -> Backbone:
    """Load backbone ``name`` from ``source`` (None: the embedded default).

    A saved model (an ``ase-moma compose`` or ``ase-moma finetune --backbone``
    output folder, or a hub module folder) loads by passing its folder as
    ``name``, or as ``source`` of the backbone it was built on. options:
    plugin-specific loading options (e.g. ``trust_pickle`` for mace).
    """
    with kept_process_state():  # an upstream import may change the environment (mace: torch.load's default)
        for folder in (name, source):
            kind = kind_of(folder)
            if kind is not None:
                backbone = kind.load_backbone(Path(folder), device=device, dtype=dtype)
                if folder != name and backbone.name != name:
                    raise ValueError(f"{source} holds a {backbone.name} model, not a {name} one")
                return backbone
        cls = backbone_class(name)
        return cls.load(source, device=resolve_device(device), dtype=resolve_dtype(dtype), **options)


def load_calculator(name: str, source: str | None = None, *, device: str = "auto",
                    dtype: str = "float32", **options: Any):
    """An ASE calculator for backbone ``name``, or for a saved model's folder.

    name: a registered backbone, or a saved model's folder. A fine-tuned
    composition or a hub module with a property head serves its target
    (``calc.get_property(target, atoms)``); any other model serves energy,
    forces, stress (and moments where it predicts them).
    source: None for the embedded default weights, else a local checkpoint path.
    device: ``"auto"`` (cuda when available), ``"cpu"`` or ``"cuda"``.
    dtype: ``"float32"`` or ``"float64"``. options: plugin-specific loading
    options (e.g. ``trust_pickle=True`` for a pickled mace ``.model`` file).
    """
    from ase_moma.calculators import MomaCalculator

    kind = kind_of(name)
    if kind is not None:
        return kind.load_calculator(Path(name), device=device, dtype=dtype)
    return MomaCalculator(load_backbone(name, source, device=device, dtype=dtype, **options))
