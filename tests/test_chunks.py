"""Batches computed in chunks of atoms: the grouping, and that a chunked run takes the whole batch's steps."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from potential_fixtures import emt_copper

from ase_moma import load_backbone
from ase_moma.finetune import FinetuneConfig, Finetuner
from ase_moma.finetune.chunks import CPU_CHUNK_ATOMS, atom_chunks, default_chunk_atoms, evaluation_batches
from ase_moma.finetune.potential_data import label_frames, read_potential_set


def test_chunks_hold_at_most_the_bound_and_keep_frames_whole_and_in_order():
    assert atom_chunks([4, 4, 8, 2, 2, 20, 1], 8) == [[0, 1], [2], [3, 4], [5], [6]]
    assert atom_chunks([4, 4, 8], None) == [[0, 1, 2]]
    assert atom_chunks([3], 1) == [[0]]
    with pytest.raises(ValueError, match="at least one atom"):
        atom_chunks([3], 0)
    assert default_chunk_atoms(torch.device("cpu")) == CPU_CHUNK_ATOMS
    assert default_chunk_atoms(torch.device("cuda")) is None


def test_evaluation_batches_hold_at_most_sixteen_frames_and_the_atom_bound():
    counts = [64] * 5 + [8] * 40
    batches = evaluation_batches(counts, 64)
    assert [i for batch in batches for i in batch] == list(range(len(counts)))
    assert all(len(b) <= 16 and (sum(counts[i] for i in b) <= 64 or len(b) == 1) for b in batches)
    assert batches[:5] == [[0], [1], [2], [3], [4]] and [len(b) for b in batches[5:]] == [8, 3, 8, 8, 8, 5]
    assert [len(b) for b in evaluation_batches(counts, None)] == [16, 16, 13]


def test_chunk_atoms_below_one_is_refused():
    with pytest.raises(ValueError, match="chunk_atoms=0"):
        FinetuneConfig(chunk_atoms=0).check()


def _mixed_copper():
    """Four 4-atom and two 8-atom EMT Cu cells, so that chunks differ in structures and atoms."""
    larger = []
    for seed in (11, 12):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.08, seed=seed)
        larger.append(atoms)
    frames = emt_copper(4, 3) + label_frames(larger, EMT())
    return (read_potential_set(frames, forces=True, stress=True, what="training set"),
            read_potential_set(emt_copper(2, 4), forces=True, stress=True, what="validation set"))


def test_chunked_run_takes_the_whole_batch_steps():
    """Sparse covers both accumulations: the start's one pass of ∂L/∂W and the training steps."""
    train, valid = _mixed_copper()
    states = []
    for chunk_atoms in (8, 10_000):  # chunks of 2, 2, 1, 1 frames; the whole batch of 32 atoms
        backbone = load_backbone("sevennet", device="cpu", dtype="float64")
        config = FinetuneConfig(method="sparse", batch_size=6, epochs=2, max_steps=2, chunk_atoms=chunk_atoms)
        tuner = Finetuner(backbone, config)
        tuner.fit(train, valid, progress=False)
        tuner.export()
        states.append(backbone.model.state_dict())
    chunked, whole = states
    base = load_backbone("sevennet", device="cpu", dtype="float64").model.state_dict()
    for name, value in whole.items():
        if value.is_floating_point():
            torch.testing.assert_close(chunked[name], value, rtol=0, atol=1e-10)
    assert any(not torch.equal(value, base[name]) for name, value in whole.items() if value.is_floating_point())
