"""The spin head prices a moment's size: generated Landau–Heisenberg data in which an order's moments vanish."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from landau import labelled_orders

from ase_moma import load_backbone
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.loss import PotentialLoss
from ase_moma.finetune.potential_data import read_potential_set

TRAIN = [2.68, 2.74, 2.80, 2.86, 2.92, 2.98]  # Å: the B2 order has no moment up to about 2.76 Å
HELD_OUT = [2.71, 2.77, 2.83, 2.89, 2.95]
LOSS = PotentialLoss(energy=1.0, forces=1.0, stress=0.0, magmoms=1.0)  # the data carry no stress


@pytest.fixture(scope="module")
def landau_sets():
    reference = load_backbone("sevennet", device="cpu", dtype="float64")
    read = lambda frames: read_potential_set(frames, forces=True, stress=False, magmoms="vector")  # noqa: E731
    held_out = labelled_orders(reference, HELD_OUT)
    return read(labelled_orders(reference, TRAIN)), read(held_out[:3]), held_out


def _predicted(landau_sets, longitudinal: bool, epochs: int = 0):
    """(energies per atom (B,) eV, mean |m| per frame (B,) μB) of the held-out frames after training."""
    train, valid, held_out = landau_sets
    tuner = Finetuner(load_backbone("sevennet", device="cpu", dtype="float64"),
                      FinetuneConfig(method="zero_shot", spin_head="vector", epochs=epochs, batch_size=18, loss=LOSS,
                                     longitudinal=longitudinal))
    tuner.fit(train, valid, progress=False)
    with torch.no_grad():
        out = tuner.model.forward(tuner.model.collate(tuner.graphs(read_potential_set(
            held_out, forces=True, stress=False, magmoms="vector"))), forces=False, stress=False)
    return out.energy.numpy() / 2, out.magmoms.norm(dim=-1).numpy().reshape(-1, 2).mean(1)


def _gaps(energies: np.ndarray) -> np.ndarray:
    """(geometries, 2) meV/atom: E(B2) − E(FM) and E(non-magnetic) − E(FM), frames in labelled_orders' order."""
    per_geometry = energies.reshape(-1, 3)
    return 1000 * (per_geometry[:, 1:] - per_geometry[:, :1])


def test_the_head_learns_the_gaps_and_where_the_moment_vanishes(landau_sets):
    _, _, held_out = landau_sets
    truth_gaps = _gaps(np.array([atoms.get_potential_energy() / 2 for atoms in held_out]))
    truth_m = np.array([np.abs(atoms.arrays["magmoms_vector"][:, 2]).mean() for atoms in held_out])
    energies, magnitudes = _predicted(landau_sets, longitudinal=True, epochs=2)
    error = np.abs(_gaps(energies) - truth_gaps)
    assert error.mean() < 0.05 * np.abs(truth_gaps).mean()  # 5 % of gaps of 130–390 meV/atom
    collapsed = (truth_m == 0) & np.array([atoms.info["order"] == "B2" for atoms in held_out])
    assert collapsed.sum() == 1 and magnitudes[collapsed].max() < 0.1  # B2 at 2.71 Å: no moment, as chosen
    magnetic = truth_m > 0
    assert np.abs(magnitudes[magnetic] - truth_m[magnetic]).mean() < 0.1
    # the ablation prices only the angle between moments: a non-magnetic state is the ferromagnet's energy
    without, _ = _predicted(landau_sets, longitudinal=False)
    assert np.abs(_gaps(without)[:, 1]).max() < 1e-6
    assert error[:, 1].mean() < 0.05 * np.abs(_gaps(without)[:, 1] - truth_gaps[:, 1]).mean()


def test_a_non_magnetic_state_is_set_with_zero_moments_and_carries_none(landau_sets):
    """Moments set and all zero: the non-magnetic state (no warning, no moment); none set: ferromagnetic."""
    train, _, _ = landau_sets
    tuner = Finetuner(load_backbone("sevennet", device="cpu", dtype="float64"),
                      FinetuneConfig(method="zero_shot", spin_head="vector", epochs=0, loss=LOSS))
    tuner.fit(train, train, progress=False)
    atoms = bulk("Fe", "bcc", 2.86, cubic=True)
    atoms.set_initial_magnetic_moments([0.0, 0.0])
    model = tuner.model
    with torch.no_grad():
        zero = model.forward(model.collate([model.graph(atoms)]), forces=False, stress=False)
        atoms.set_initial_magnetic_moments(None)
        with pytest.warns(UserWarning, match="assuming ferromagnetic order"):
            unset = model.forward(model.collate([model.graph(atoms)]), forces=False, stress=False)
    assert float(zero.magmoms.abs().max()) == 0.0 and float(unset.magmoms.norm(dim=-1).min()) > 1.0
    assert float(zero.energy[0] - unset.energy[0]) / 2 > 0.1  # eV/atom: the chosen model's 258 meV/atom
