"""The linear probe every property model starts from (LP-FT), and the leave-one-out choice of its ridge strength."""

from __future__ import annotations

import numpy as np
import pytest

from ase_moma.labelled_data import load_task_data
from ase_moma.probe import fit_ridge_probe

from hub_fixtures import TINY


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge with an unpenalised intercept on standardised columns, by the normal equations."""
    centre, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - centre) / scale
    coefficients = np.linalg.solve(z.T @ z + alpha * np.eye(x.shape[1]), z.T @ (y - y.mean()))
    weight = coefficients / scale
    return weight, float(y.mean() - centre @ weight)


def test_probe_is_ridge_and_its_leave_one_out_error_is_the_refit_one(sevennet, hub_data):
    frames = load_task_data(hub_data["perov"], "heat_all", val_fraction=0.25, seed=0).train
    x = sevennet.embed(frames.frames).double().numpy()
    y = frames.targets
    probe = fit_ridge_probe(x, y)
    weight, bias = _ridge(x, y, probe.alpha)
    np.testing.assert_allclose(probe.predict(x), x @ weight + bias, rtol=1e-8, atol=1e-10)
    # The closed-form leave-one-out error equals refitting without each row in turn (with the columns'
    # standardisation fixed from all rows, as in the closed form).
    centre, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - centre) / scale
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        zk, yk = z[keep], y[keep]
        zc = zk - zk.mean(axis=0)
        coefficients = np.linalg.solve(zc.T @ zc + probe.alpha * np.eye(z.shape[1]), zc.T @ (yk - yk.mean()))
        errors.append(abs(y[i] - (yk.mean() + (z[i] - zk.mean(axis=0)) @ coefficients)))
    assert probe.loo_mae == pytest.approx(np.mean(errors), rel=1e-6)


def test_probe_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="at least 3"):
        fit_ridge_probe(np.ones((2, 4)), np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        fit_ridge_probe(np.array([[1.0], [np.nan], [2.0]]), np.ones(3))
    with pytest.raises(ValueError, match=r"\(M, F\) features and \(M,\) targets"):
        fit_ridge_probe(np.ones((4, 2)), np.ones(3))


def test_a_module_starts_at_the_probe_and_ends_no_worse_on_validation(hub, hub_data, sevennet):
    meta = hub.read_module("heat_full")
    task = load_task_data(hub_data["perov"], "heat_all", val_fraction=TINY.val_fraction, seed=TINY.seed)
    probe = fit_ridge_probe(sevennet.embed(task.train.frames).double().numpy(), task.train.targets)
    probe_val = np.mean(np.abs(probe.predict(sevennet.embed(task.val.frames).double().numpy()) - task.val.targets))
    assert meta["training"]["start_val_mae"] == pytest.approx(probe_val, rel=1e-4)
    assert meta["metrics"]["val_mae"] <= meta["training"]["start_val_mae"] + 1e-12
