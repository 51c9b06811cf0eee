"""``full``: every weight of the backbone, at the base learning rate."""

from __future__ import annotations

from ase_moma.backbone import Backbone
from ase_moma.finetune.methods.base import FinetuneMethod, StartContext, Trainable, dense_trainable


class Full(FinetuneMethod):
    """Trains every parameter of the backbone's model in place."""

    name = "full"

    def start(self, backbone: Backbone, context: StartContext) -> Trainable:
        return dense_trainable(backbone, [name for name, _ in backbone.model.named_parameters()], context)
