"""The spin head's magnitudes learn how the local order shrinks a moment: generated data with a known answer.

Ideal 16-atom bcc Fe in random collinear orders, each atom's moment |m_i| = 2.3 − 0.8 f_i μB with f_i the
fraction of its eight nearest neighbours that are antiparallel (2.3 μB ferromagnetic, 1.5 μB in the B2
order: the shape of PBE's 2.19 and 1.43 μB at 2.83 Å). Every atom of an ideal lattice has the same
geometry, so a head whose magnitudes read geometry alone can only predict the mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list
from heisenberg import iron, labelled, orders

from ase_moma import load_backbone
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.finetune.potential_data import read_potential_set

FIRST_SHELL = 2.65  # Å: between bcc's first (2.46 Å) and second (2.84 Å) shells at a = 2.84 Å
LOSS = PotentialLoss(energy=1.0, forces=1.0, stress=0.0, magmoms=1.0)


def chosen_magnitudes(atoms, signs: np.ndarray) -> np.ndarray:
    """(n,) |m_i| = 2.3 − 0.8 × the fraction of i's nearest neighbours antiparallel to it (μB)."""
    first, second = neighbor_list("ij", atoms, FIRST_SHELL)
    antiparallel = np.bincount(first, signs[first] != signs[second], minlength=len(atoms))
    return 2.3 - 0.8 * antiparallel / np.bincount(first, minlength=len(atoms))


def in_orders(reference, signs_list: list[np.ndarray]) -> list:
    """Frames in the orders ``signs_list`` (±1 per atom) with the chosen magnitudes along z, labelled with
    ``reference``'s energy and forces plus a Heisenberg exchange of those moments."""
    frames = []
    for signs in signs_list:
        atoms = iron()
        moments = np.zeros((len(atoms), 3))
        moments[:, 2] = signs * chosen_magnitudes(atoms, signs)
        frames.append(labelled(reference, atoms, moments))
    return frames


@pytest.fixture(scope="module")
def order_sets():
    reference = load_backbone("sevennet", device="cpu", dtype="float64")
    rng = np.random.default_rng(3)
    signs = [rng.choice([-1.0, 1.0], size=16) for _ in range(12)]
    read = lambda part: read_potential_set(part, forces=True, stress=False, magmoms="vector")  # noqa: E731
    return read(in_orders(reference, signs[:8])), read(in_orders(reference, signs[8:]))


def _magnitude_error(order_sets, local_order: bool) -> tuple[float, float, Finetuner]:
    """(|m| MAE on the held-out orders, the training mean's MAE, the tuner) after the head's start (J is
    left out: the magnitudes' start does not read it)."""
    train, test = order_sets
    backbone = load_backbone("sevennet", device="cpu", dtype="float64")
    config = FinetuneConfig(method="zero_shot", spin_head="vector", epochs=0, loss=LOSS, exchange=False,
                            local_order=local_order)
    tuner = Finetuner(backbone, config)
    tuner.fit(train, test, progress=False)
    graphs = tuner.graphs(test)
    with torch.no_grad():
        moments = tuner.model.forward(tuner.model.collate(graphs), forces=False, stress=False).magmoms
    predicted = moments.norm(dim=-1).numpy()
    truth = np.concatenate([np.linalg.norm(m, axis=1) for m in test.magmoms])
    mean = np.concatenate([np.linalg.norm(m, axis=1) for m in train.magmoms]).mean()
    return float(np.abs(predicted - truth).mean()), float(np.abs(mean - truth).mean()), tuner


def test_magnitudes_learn_the_local_order_that_geometry_cannot_give(order_sets):
    learned, mean, tuner = _magnitude_error(order_sets, local_order=True)
    geometry_only, _, _ = _magnitude_error(order_sets, local_order=False)
    assert learned < 0.25 * mean  # the ridge start on node and order features recovers the chosen function
    assert geometry_only > 0.8 * mean  # one geometry for every atom: no better than the mean
    model = tuner.model
    with torch.no_grad():
        sizes = {name: model.forward(model.collate([model.graph(iron(moments))]), forces=False, stress=False)
                 .magmoms.norm(dim=-1).mean().item() for name, moments in orders().items()}
    assert sizes["fm"] == pytest.approx(2.3, abs=0.1) and sizes["afm"] == pytest.approx(1.5, abs=0.1)
