"""What every training run in ase-moma is told, whatever it trains: the base of the three configs
(:class:`~ase_moma.training.property_models.TrainConfig` for property models,
:class:`~ase_moma.finetune.FinetuneConfig` for potentials, :class:`~ase_moma.modalities.fusion_training.FusionConfig`
for fusion heads), which each set their own defaults and add their own fields."""

from __future__ import annotations

from dataclasses import dataclass

from ase_moma.training.engine import Schedule


@dataclass
class RunSettings:
    """epochs: at most this many passes over the training items; batch_size: items per optimiser step;
    lr, weight_decay: the optimiser's (AdamW or its schedule-free form); patience: epochs without a
    better validation score before stopping; seed: of the initialisation and the batch order."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    seed: int = 0

    def schedule(self, **extra) -> Schedule:
        """The training engine's schedule for these settings (``extra``: max_steps, to_beat, grace)."""
        return Schedule(self.epochs, self.batch_size, self.patience, self.seed, **extra)
