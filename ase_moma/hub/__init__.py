"""The module hub: modules (one backbone fine-tuned per task) stored as safetensors + JSON."""

from ase_moma.module_files import HubIntegrityError
from ase_moma.hub.store import Hub
from ase_moma.fitting import TrainConfig
from ase_moma.hub.training import train_module

__all__ = ["Hub", "HubIntegrityError", "TrainConfig", "train_module"]
