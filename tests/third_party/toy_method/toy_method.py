"""A third-party fine-tuning method: the read-out layers at a multiple of the base learning rate.

One class here and one line in setup.cfg's ``ase_moma.finetune_methods`` group make it
``ase-moma finetune --method readout_scaled [--lr-scale X]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ase_moma.finetune.methods.base import FinetuneMethod, MethodOptions, StartContext, Trainable, dense_trainable


@dataclass
class ScaledOptions(MethodOptions):
    lr_scale: float = 3.0

    def check(self) -> None:
        if not self.lr_scale > 0:
            raise ValueError(f"--lr-scale must be positive, got {self.lr_scale}")


class ScaledReadout(FinetuneMethod):
    name = "readout_scaled"
    Options = ScaledOptions
    requires = ("readout",)

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--lr-scale", type=float, default=3.0, help="the read-out's learning rate over --lr")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> ScaledOptions:
        return ScaledOptions(lr_scale=args.lr_scale)

    def start(self, backbone, context: StartContext) -> Trainable:
        trainable = dense_trainable(backbone, backbone.readout_parameters(), context)
        for group in trainable.groups:
            group["lr"] *= self.options.lr_scale
        return trainable
