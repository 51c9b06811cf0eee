"""Splitting an optimiser batch into chunks of at most so many atoms, for gradient accumulation.

A batch of frames is computed chunk by chunk, each chunk's loss weighted by its
share of the batch and back-propagated at once, so the gradient is the whole
batch's (to round-off) while only one chunk's force graph is held at a time.

On a CPU the whole batch is also slower: a force graph's buffers grow with the
batch, and past glibc's mmap threshold every fresh buffer is page-faulted in
again at every step (the run spends more system time than user time).
``python bench/finetune_chunks.py`` measures a step of full fine-tuning of
SevenNet-0 on 16 frames, whole and in chunks, each in its own process.
"""

from __future__ import annotations

from typing import Sequence

import torch

# Atoms per chunk on a CPU. Measured by bench/finetune_chunks.py (2 cores; time and peak memory of a
# 16-frame step against the whole batch at once): mlearn Mo (54-atom cells) 0.47× / 0.21× at 64 atoms,
# 0.52× / 0.28× at 128, 0.61× / 0.46× at 256; generated EMT Cu–Ni–Al (32 atoms) 0.60× / 0.25×,
# 0.58× / 0.46×, 0.64× / 0.63×; alexandria_val (3–80 atoms) 0.96× / 0.40× at 64. 64 is the least
# memory and, within the ±5 % timing noise, the fastest on all three.
CPU_CHUNK_ATOMS = 64


def default_chunk_atoms(device: torch.device) -> int | None:
    """Atoms per chunk when the user sets none: CPU_CHUNK_ATOMS on a CPU; on a GPU the whole batch
    (None), which the device computes in parallel and whose memory it reports when it runs out."""
    return CPU_CHUNK_ATOMS if torch.device(device).type == "cpu" else None


def atom_chunks(counts: Sequence[int], max_atoms: int | None) -> list[list[int]]:
    """Consecutive positions 0..len(counts)-1 grouped so that each group holds at most ``max_atoms``
    atoms (``counts``: atoms per frame); a frame larger than that is a group of its own, and
    ``max_atoms`` None keeps one group."""
    if max_atoms is None:
        return [list(range(len(counts)))]
    if max_atoms < 1:
        raise ValueError(f"a chunk must hold at least one atom, got max_atoms={max_atoms}")
    chunks: list[list[int]] = []
    atoms = 0
    for position, count in enumerate(counts):
        if chunks and atoms + int(count) <= max_atoms:
            chunks[-1].append(position)
            atoms += int(count)
        else:
            chunks.append([position])
            atoms = int(count)
    return chunks


def evaluation_batches(counts: Sequence[int], max_atoms: int | None, most: int = 16) -> list[list[int]]:
    """Positions 0..len(counts)-1 in batches for evaluating a model: at most ``most`` frames each, and at most
    ``max_atoms`` atoms where given (a larger frame alone). A backbone that keeps its force graph for a second
    derivative even when evaluating (CHGNet) holds the whole batch's graph at once: 16 of mlearn's 64-atom
    cells took 7 GB on a CPU, the batches of a chunked training step a few hundred MB."""
    batches = []
    for start in range(0, len(counts), most):
        batches += [[start + i for i in chunk] for chunk in atom_chunks(counts[start:start + most], max_atoms)]
    return batches
