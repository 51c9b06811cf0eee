"""Adapting a potential to new DFT energies, forces and stress (DESIGN §6).

>>> from ase_moma.finetune import FinetuneConfig, finetune_potential
>>> finetune_potential("sevennet", "train.extxyz", "valid.extxyz", "OUT/", FinetuneConfig(method="sparse"))
"""

from ase_moma.finetune.trainer import METHODS, PRESETS, FinetuneConfig, FinetuneResult, Finetuner, finetune

__all__ = ["METHODS", "PRESETS", "FinetuneConfig", "FinetuneResult", "Finetuner", "finetune"]
