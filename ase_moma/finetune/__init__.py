"""Adapting a potential to new DFT energies, forces and stress.

>>> from ase_moma.finetune import FinetuneConfig, SparseOptions, finetune_potential
>>> config = FinetuneConfig(method="sparse", options=SparseOptions(preset="H"))
>>> finetune_potential("sevennet", "train.extxyz", "valid.extxyz", "OUT/", config)

Each method is a class with its own options (:mod:`ase_moma.finetune.methods`). The names below are
imported on first use, so that reading a tuned potential back (:mod:`ase_moma.finetune.tuned_folder`)
imports no training code.
"""

from __future__ import annotations

from ase_moma.lazy_names import imported_on_first_use

_WHERE = {"METHODS": ".trainer", "FinetuneConfig": ".trainer", "Finetuner": ".trainer", "PRESETS": ".methods.sparse",
          "SparseOptions": ".methods.sparse", "LoRAOptions": ".methods.lora", "finetune_potential": ".pipeline"}

__all__ = sorted(_WHERE)

__getattr__ = imported_on_first_use(__name__, _WHERE)
