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


def test_grouped_probe_leaves_whole_groups_out(sevennet, hub_data):
    frames = load_task_data(hub_data["perov"], "heat_all", val_fraction=0.25, seed=0).train
    x, y = sevennet.embed(frames.frames[:10]).double().numpy(), frames.targets[:10]
    twins_x, twins_y, groups = np.repeat(x, 2, axis=0), np.repeat(y, 2), np.repeat(np.arange(10), 2)
    # Each row twice (the two equivalent atoms of a structure): left out one row at a time, its twin
    # answers for it and the error says nothing; left out a group at a time, it is a real held-out error.
    leaky, grouped = fit_ridge_probe(twins_x, twins_y), fit_ridge_probe(twins_x, twins_y, groups=groups)
    assert leaky.loo_mae < 0.1 * grouped.loo_mae
    centre, scale = twins_x.mean(axis=0), twins_x.std(axis=0)
    z = (twins_x - centre) / scale
    predictions = np.empty_like(twins_y)
    for group in range(10):  # ten groups: one per fold, leave-one-group-out
        held = groups == group
        zk, yk = z[~held], twins_y[~held]
        zc = zk - zk.mean(axis=0)
        coefficients = np.linalg.solve(zc.T @ zc + grouped.alpha * np.eye(z.shape[1]), zc.T @ (yk - yk.mean()))
        predictions[held] = yk.mean() + (z[held] - zk.mean(axis=0)) @ coefficients
    assert grouped.loo_mae == pytest.approx(np.mean(np.abs(predictions - twins_y)), rel=1e-6)
    judged = fit_ridge_probe(twins_x, twins_y, alphas=np.array([grouped.alpha]), groups=groups, readout=np.exp)
    assert judged.loo_mae == pytest.approx(np.mean(np.abs(np.exp(predictions) - np.exp(twins_y))), rel=1e-6)


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
