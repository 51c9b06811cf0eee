"""``readout``: the backbone's read-out layers only, at the base learning rate."""

from __future__ import annotations

from ase_moma.backbone import Backbone
from ase_moma.finetune.methods.base import FinetuneMethod, StartContext, Trainable, dense_trainable


class Readout(FinetuneMethod):
    """Trains ``Backbone.readout_parameters()`` in place."""

    name = "readout"
    requires = ("readout",)

    def start(self, backbone: Backbone, context: StartContext) -> Trainable:
        return dense_trainable(backbone, backbone.readout_parameters(), context)
