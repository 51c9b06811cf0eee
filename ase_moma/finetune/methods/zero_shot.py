"""``zero_shot``: the backbone as it is (reference energies refitted where asked; a spin head may train)."""

from __future__ import annotations

from ase_moma.backbone import Backbone
from ase_moma.finetune.methods.base import FinetuneMethod, StartContext, Trainable


class ZeroShot(FinetuneMethod):
    """Trains nothing of the backbone."""

    name = "zero_shot"
    trains_backbone = False

    def start(self, backbone: Backbone, context: StartContext) -> Trainable:
        return Trainable()
