"""Adapting a potential to new DFT energies, forces and stress.

>>> from ase_moma.finetune import FinetuneConfig, finetune_potential
>>> finetune_potential("sevennet", "train.extxyz", "valid.extxyz", "OUT/", FinetuneConfig(method="sparse"))
"""

from ase_moma.finetune.pipeline import finetune_potential
from ase_moma.finetune.trainer import METHODS, PRESETS, FinetuneConfig, Finetuner

__all__ = ["METHODS", "PRESETS", "FinetuneConfig", "Finetuner", "finetune_potential"]
