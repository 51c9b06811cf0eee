"""The module hub: modules (one backbone fine-tuned per task) stored as safetensors + JSON.

The names below are imported on first use, so that loading a hub module
(:mod:`ase_moma.hub.module_folder`) imports no training code.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {"Hub": "ase_moma.hub.store", "HubIntegrityError": "ase_moma.module_files", "TrainConfig": "ase_moma.fitting",
          "train_module": "ase_moma.hub.training"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
