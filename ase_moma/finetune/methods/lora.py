"""``lora``: low-rank increments on the path weights, path by path (ELoRA's equivariant LoRA)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ase_moma.backbone import Backbone
from ase_moma.finetune.increments import IncrementMethod
from ase_moma.finetune.lora import ALPHA, RANK, low_rank_increments
from ase_moma.finetune.methods.base import MethodOptions, StartContext, Trainable


@dataclass
class LoRAOptions(MethodOptions):
    """rank r and scale α of the increments α/r · A B."""

    rank: int = RANK
    alpha: float = ALPHA

    def check(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")


class LoRA(IncrementMethod):
    """Trains the low-rank factors at the base learning rate; B starts at zero (the pretrained model)."""

    name = "lora"
    Options = LoRAOptions
    options: LoRAOptions

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--rank", type=int, default=RANK, help="LoRA rank")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> LoRAOptions:
        return LoRAOptions(rank=args.rank)

    def start(self, backbone: Backbone, context: StartContext) -> Trainable:
        torch.manual_seed(context.seed)
        increments = low_rank_increments(backbone, self.options.rank, self.options.alpha)
        return self.attach(backbone, increments, [{"params": increments.increment_parameters(), "lr": context.lr,
                                                   "weight_decay": context.weight_decay}])
