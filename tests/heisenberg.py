"""Generated magnetic data with a known answer: a reference potential plus a chosen Heisenberg coupling.

E = E_ref + ½ Σ_ij J₀(r_ij) m_i·m_j over every ordered pair within the cutoff (so each pair once),
forces its exact negative gradient at fixed moments. Computed with ASE's neighbour list, independently
of the spin head's code.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

CUTOFF = 5.0  # Å: SevenNet-0's, the range of the head's J


def coupling(r: np.ndarray) -> np.ndarray:
    """J₀(r) in eV/μB²: 2.4 meV/μB² at bcc Fe's first shell, decaying and changing sign by the third."""
    return 0.004 * np.exp(-(r - 2.48) / 0.6) * np.cos(1.8 * (r - 2.48)) * (1 - (r / CUTOFF) ** 2) ** 2


def exchange(atoms: Atoms, moments: np.ndarray, step: float = 1e-6) -> tuple[float, np.ndarray]:
    """(E in eV, (n, 3) forces in eV/Å) of ½ Σ J₀(r_ij) m_i·m_j at fixed moments (n, 3) μB."""
    i, j, d, vectors = neighbor_list("ijdD", atoms, CUTOFF)
    products = np.einsum("ij,ij->i", moments[i], moments[j])
    slope = (coupling(d + step) - coupling(d - step)) / (2 * step)
    along = (0.5 * slope * products / d)[:, None] * vectors  # ∂E/∂(r_j − r_i) of each ordered pair
    forces = np.zeros_like(atoms.positions)
    np.add.at(forces, j, -along)
    np.add.at(forces, i, along)
    return 0.5 * float(np.sum(coupling(d) * products)), forces


def iron(moments: np.ndarray | None = None) -> Atoms:
    """Ideal bcc Fe, 16 atoms (the conventional cell twice along each axis), a = 2.84 Å."""
    atoms = bulk("Fe", "bcc", 2.84, cubic=True).repeat(2)
    if moments is not None:
        atoms.set_initial_magnetic_moments(None)
        atoms.set_initial_magnetic_moments(moments)
    return atoms


def orders(magnitude: float = 2.2) -> dict[str, np.ndarray]:
    """Ferromagnetic and B2-antiferromagnetic (corner against centre) moments of :func:`iron`."""
    atoms = iron()
    ferro = np.tile([0.0, 0.0, magnitude], (len(atoms), 1))
    corner = np.isclose(np.round(atoms.positions.sum(axis=1) / (2.84 / 2)) % 2, 0)
    return {"fm": ferro, "afm": ferro * np.where(corner, 1.0, -1.0)[:, None]}


def labelled(reference, atoms: Atoms, moments: np.ndarray) -> Atoms:
    """``atoms`` labelled with the ``reference`` backbone's energy and forces plus the exchange of ``moments``
    ((n, 3) μB, kept in ``arrays["magmoms_vector"]``)."""
    out = reference.forward(reference.collate([reference.graph(atoms)]), stress=False)
    energy, forces = exchange(atoms, moments)
    atoms.calc = SinglePointCalculator(atoms, energy=float(out.energy[0].detach()) + energy,
                                       forces=out.forces.detach().numpy() + forces)
    atoms.arrays["magmoms_vector"] = moments
    return atoms


def labelled_iron(reference, count: int, seed: int, magnitude: float = 2.2) -> list[Atoms]:
    """``count`` :func:`iron` frames with random non-collinear moments of one magnitude, :func:`labelled`."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = iron()
        directions = rng.normal(size=(len(atoms), 3))
        frames.append(labelled(reference, atoms, magnitude * directions / np.linalg.norm(directions, axis=1,
                                                                                         keepdims=True)))
    return frames
