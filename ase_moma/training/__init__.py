"""Everything that trains: the one engine, its checkpoints and work folders, the losses, the reference-energy
fit, the settings every run shares, and the fitting of property models (:mod:`.property_models`).
Potentials are fine-tuned by :mod:`ase_moma.finetune`, which runs on this engine."""

from ase_moma.training.engine import EngineResult, Schedule, TrainingEngine

__all__ = ["EngineResult", "Schedule", "TrainingEngine"]
