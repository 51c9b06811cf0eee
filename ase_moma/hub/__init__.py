"""The module hub: modules (one backbone fine-tuned per task) stored as safetensors + JSON.

The names below are imported on first use, so that loading a hub module
(:mod:`ase_moma.hub.module_folder`) imports no training code.
"""

from __future__ import annotations

from ase_moma.lazy_names import imported_on_first_use

_WHERE = {"Hub": "ase_moma.hub.store", "HubIntegrityError": "ase_moma.errors",
          "TrainConfig": "ase_moma.training.property_models", "train_module": "ase_moma.hub.training"}

__all__ = sorted(_WHERE)

__getattr__ = imported_on_first_use(__name__, _WHERE)
