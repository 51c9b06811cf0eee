"""Ranking magnetic orders: the same structure given several times, each with its own spin configuration.

A user screening magnetic orders writes one frame per order (``initial_magmoms`` differing, geometry the
same); a spin-aware model evaluates each at its configuration, and the frames of one geometry are ranked
by energy per atom above the lowest of them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms

from ase_moma.structures import add_geometry

DECIMALS = 6  # Å: positions and cells equal to this many decimals are one geometry (extxyz writes 8)
ORDER_CHANGE = 0.1
"""Mean |Δ(s_i·s_j)| over atom pairs above which two spin configurations of one geometry are different orders,
not one order turned as a whole (which, without spin–orbit coupling, has one energy)."""


@dataclass(frozen=True)
class OrderRank:
    """One frame's place among the orders of its geometry: ``group`` (the geometry's number, in order of
    first appearance), ``rank`` (0: lowest energy), ``above`` (eV/atom above the group's lowest)."""

    group: int
    rank: int
    above: float


def geometry_key(atoms: Atoms) -> str:
    """A digest of the numbers, positions, cell and periodicity (not the moments)."""
    digest = hashlib.sha256()
    add_geometry(digest, atoms, decimals=DECIMALS)
    return digest.hexdigest()


def repeated_geometries(frames: Sequence[Atoms]) -> list[list[int]]:
    """The positions of the frames of each geometry that appears more than once, in order of first appearance."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, atoms in enumerate(frames):
        groups[geometry_key(atoms)].append(index)
    return [members for members in groups.values() if len(members) > 1]


def differ_in_order(spins: Sequence[np.ndarray]) -> bool:
    """Whether some two of these spin configurations of one geometry ((n, 3) unit or zero directions each)
    are different orders: their relative orientations s_i·s_j differ by more than ORDER_CHANGE on average."""
    products = [np.asarray(s, dtype=np.float64) @ np.asarray(s, dtype=np.float64).T for s in spins]
    return any(np.abs(a - b).mean() > ORDER_CHANGE for k, a in enumerate(products) for b in products[k + 1:])


def rank_orders(frames: Sequence[Atoms], energies: Sequence[float]) -> dict[int, OrderRank]:
    """``{frame index: OrderRank}`` for every frame whose geometry appears more than once.

    energies: (B,) total energies in eV of ``frames``, each at its own spin configuration.
    """
    if len(frames) != len(energies):
        raise ValueError(f"{len(frames)} frames but {len(energies)} energies")
    ranks: dict[int, OrderRank] = {}
    for number, members in enumerate(repeated_geometries(frames)):
        per_atom = np.array([energies[i] / len(frames[i]) for i in members])
        order = np.argsort(per_atom, kind="stable")
        for rank, position in enumerate(order):
            ranks[members[position]] = OrderRank(number, rank, float(per_atom[position] - per_atom[order[0]]))
    return ranks
