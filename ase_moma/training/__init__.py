"""The shared training machinery: one engine, its checkpoints, losses and the reference-energy fit."""

from ase_moma.training.engine import EngineResult, Schedule, TrainingEngine

__all__ = ["EngineResult", "Schedule", "TrainingEngine"]
