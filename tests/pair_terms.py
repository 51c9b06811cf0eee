"""Known perturbations for learning tests, added to a real potential's labels.

A Gaussian pair energy φ(r) = ε exp(−(r − r₀)² / 2σ²) on every pair of the chosen elements within
r₀ + 5σ, and an angular three-body energy (a Stillinger–Weber-like term that a pair potential cannot
express), each with its exact forces and stress (ASE's sign, eV/Å³). Frames labelled with SevenNet-0
plus a term differ from SevenNet-0 by that term alone, so a model fine-tuned on them has a known
answer to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list


@dataclass(frozen=True)
class GaussianPair:
    """ε (eV) exp(−(r − r0)² / 2σ²) on pairs of elements ``pair`` (atomic numbers)."""

    epsilon: float
    r0: float
    sigma: float
    pair: tuple[int, int] = (14, 14)

    def calculator(self, scale: float = 1.0) -> "PairCalculator":
        return PairCalculator(self, scale)


class PairCalculator(Calculator):
    """``scale`` times a GaussianPair energy, forces and stress."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, term: GaussianPair, scale: float = 1.0) -> None:
        super().__init__()
        self.term, self.scale = term, scale

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        term = self.term
        i, j, d, vectors = neighbor_list("ijdD", self.atoms, term.r0 + 5 * term.sigma)
        numbers = self.atoms.numbers
        chosen = ((numbers[i] == term.pair[0]) & (numbers[j] == term.pair[1])) | \
                 ((numbers[i] == term.pair[1]) & (numbers[j] == term.pair[0]))
        i, j, d, vectors = i[chosen], j[chosen], d[chosen], vectors[chosen]
        gauss = self.scale * term.epsilon * np.exp(-(d - term.r0) ** 2 / (2 * term.sigma ** 2))
        slope = -gauss * (d - term.r0) / term.sigma ** 2  # dφ/dr
        share = 0.5 * (slope / d)[:, None] * vectors  # each ordered pair holds half of the pair's term
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, share)
        np.add.at(forces, j, -share)
        virial = np.einsum("pa,pb->ab", share, vectors)
        stress = virial / self.atoms.get_volume()
        self.results = {"energy": 0.5 * float(gauss.sum()), "forces": forces,
                        "stress": stress.reshape(9)[[0, 4, 8, 5, 2, 1]]}


@dataclass(frozen=True)
class AngularTriplet:
    """ε (eV) Σ_i Σ_{j<k} g(r_ij) g(r_ik) (cos θ_jik − cos θ₀)², g(r) = exp(−(r − r0)² / 2σ²), over the
    neighbours j, k of every atom i within r0 + 5σ: zero at the angle θ₀, whatever the distances."""

    epsilon: float
    r0: float
    sigma: float
    cos0: float = -1 / 3

    def calculator(self, scale: float = 1.0) -> "TripletCalculator":
        return TripletCalculator(self, scale)


class TripletCalculator(Calculator):
    """``scale`` times an AngularTriplet energy; forces and stress are its exact derivatives (autograd
    through the displacements and a homogeneous strain)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, term: AngularTriplet, scale: float = 1.0) -> None:
        super().__init__()
        self.term, self.scale = term, scale

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        import torch

        super().calculate(atoms, properties, system_changes)
        term = self.term
        i, j, vectors = neighbor_list("ijD", self.atoms, term.r0 + 5 * term.sigma)
        first, second = [], []
        for centre in np.unique(i):
            bonds = np.flatnonzero(i == centre)
            a, b = np.triu_indices(len(bonds), k=1)
            first.append(bonds[a])
            second.append(bonds[b])
        first, second = np.concatenate(first), np.concatenate(second)
        displacement = torch.zeros((len(self.atoms), 3), dtype=torch.float64, requires_grad=True)
        strain = torch.zeros((3, 3), dtype=torch.float64, requires_grad=True)
        bond = (torch.as_tensor(vectors) + displacement[j] - displacement[i]) @ (torch.eye(3, dtype=torch.float64)
                                                                                + strain)
        length = bond.norm(dim=1)
        g = torch.exp(-(length - term.r0) ** 2 / (2 * term.sigma ** 2))
        cosine = (bond[first] * bond[second]).sum(dim=1) / (length[first] * length[second])
        energy = self.scale * term.epsilon * (g[first] * g[second] * (cosine - term.cos0) ** 2).sum()
        d_displacement, d_strain = torch.autograd.grad(energy, (displacement, strain))
        stress = (0.5 * (d_strain + d_strain.T) / self.atoms.get_volume()).numpy()
        self.results = {"energy": float(energy.detach()), "forces": -d_displacement.numpy(),
                        "stress": stress.reshape(9)[[0, 4, 8, 5, 2, 1]]}


def silicon_cells(count: int, seed: int) -> list[Atoms]:
    """``count`` 8-atom diamond Si cells, strained by up to 3 % and rattled by 0.1 Å (seeded)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    return frames


def labelled(frames: list[Atoms], calculators: list[Calculator]) -> list[Atoms]:
    """Copies of ``frames`` labelled with the sum of ``calculators``' energy, forces and stress."""
    result = []
    for atoms in frames:
        parts = []
        for calc in calculators:
            copy = atoms.copy()
            copy.calc = calc
            parts.append((copy.get_potential_energy(), copy.get_forces(), copy.get_stress()))
        labelled_atoms = atoms.copy()
        labelled_atoms.calc = SinglePointCalculator(labelled_atoms, energy=sum(p[0] for p in parts),
                                                    forces=sum(p[1] for p in parts), stress=sum(p[2] for p in parts))
        result.append(labelled_atoms)
    return result
