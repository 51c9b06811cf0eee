"""The training loop's stopping rules, on a regression whose best attainable error is known."""

from __future__ import annotations

import numpy as np
import torch

from ase_moma.training.engine import Schedule, TrainingEngine


def _run(to_beat: float | None, epochs: int = 40, patience: int | None = None, min_improvement: float = 0.0) -> tuple:
    """A linear model fitted to y = x·w + noise (noise MAE 0.08) by SGD; validation MAE on held-out rows."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 4)))
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64) + 0.1 * torch.as_tensor(rng.normal(size=200))
    weight = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    engine = TrainingEngine({"weight": weight}, torch.optim.SGD([weight], lr=0.05),
                            Schedule(epochs, 16, patience=patience or epochs, to_beat=to_beat, grace=3,
                                     min_improvement=min_improvement), score="val_mae",
                            progress=False)

    def val_mae() -> float:
        with torch.no_grad():
            return float((x[150:] @ weight - y[150:]).abs().mean())

    result = engine.run(150, lambda rows: ((x[rows] @ weight - y[rows]) ** 2).mean(), lambda: {"val_mae": val_mae()})
    return result, val_mae()


def test_a_run_that_cannot_beat_the_alternative_stops_after_its_grace_epochs():
    result, _ = _run(to_beat=0.01)  # below the noise: unreachable
    assert result.gave_up and result.epochs_run == 3


def test_a_run_that_beats_the_alternative_trains_on_to_its_best():
    result, kept = _run(to_beat=0.5)
    assert not result.gave_up and result.epochs_run == 40
    assert kept < 0.1 and kept == result.best["val_mae"]
    assert _run(to_beat=None)[0].epochs_run == 40


def test_a_run_that_creeps_down_by_less_than_its_minimum_improvement_stops():
    """Near the noise floor the validation error still falls a little each epoch: with patience 3 the plain
    rule trains on, a 5 % minimum improvement calls it flat and keeps the last epoch that improved by that."""
    plain, _ = _run(to_beat=None, patience=3)
    flat, kept = _run(to_beat=None, patience=3, min_improvement=0.05)
    assert flat.stopped_early and flat.epochs_run < plain.epochs_run
    assert kept == flat.best["val_mae"] and kept < 0.1  # it stopped near the floor, not before it
