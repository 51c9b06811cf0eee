"""Adapting a potential to new DFT energies, forces and stress.

>>> from ase_moma.finetune import FinetuneConfig, SparseOptions, finetune_potential
>>> config = FinetuneConfig(method="sparse", options=SparseOptions(preset="H"))
>>> finetune_potential("sevennet", "train.extxyz", "valid.extxyz", "OUT/", config)

Each method is a class with its own options (:mod:`ase_moma.finetune.methods`).
"""

from ase_moma.finetune.methods.lora import LoRAOptions
from ase_moma.finetune.methods.sparse import PRESETS, SparseOptions
from ase_moma.finetune.pipeline import finetune_potential
from ase_moma.finetune.trainer import METHODS, FinetuneConfig, Finetuner

__all__ = ["METHODS", "PRESETS", "FinetuneConfig", "Finetuner", "LoRAOptions", "SparseOptions", "finetune_potential"]
