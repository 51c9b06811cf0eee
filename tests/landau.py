"""Generated magnetic data with a known answer in which moments shrink and vanish: a Landau–Heisenberg model.

E(σ) = Σ_i [a(V) m_i² + b m_i⁴] + ½ Σ_ij J(r_ij) σ_i σ_j m_i m_j for collinear signs σ_i, at the magnitudes
m_i ≥ 0 that minimise it (as a self-consistent DFT run finds them), with a(V) rising as the cell is compressed:
where a(V) plus the antiparallel neighbours' exchange turns positive the moment is gone. Ideal two-atom bcc
cells, each in its ferromagnetic, B2 (corner against centre) and non-magnetic (every σ_i = 0) state, labelled
with the reference backbone's energy plus E(σ) − E(ferromagnetic): the backbone carries the ferromagnet, as
the pretrained models do. Computed with ASE's neighbour list and scipy, independently of the head's code.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list
from scipy.optimize import minimize

CUTOFF = 5.0  # Å: SevenNet-0's
QUARTIC = 0.02  # b, eV/μB⁴
ORDERS = {"ferromagnetic": (1.0, 1.0), "B2": (1.0, -1.0), "non-magnetic": (0.0, 0.0)}


def quadratic(lattice_constant: float) -> float:
    """a(V) in eV/μB²: −0.04 at 2.75 Å, 0.5 eV/μB²/Å more negative per Å of expansion."""
    return -0.04 - 0.5 * (lattice_constant - 2.75)


def coupling(r: np.ndarray) -> np.ndarray:
    """J(r) in eV/μB²: −20 meV/μB² (parallel favoured) at 2.45 Å, decaying over 0.3 Å, zero at the cutoff."""
    return -0.02 * np.exp(-(r - 2.45) / 0.3) * (1 - (np.minimum(r, CUTOFF) / CUTOFF) ** 2) ** 2


def landau_heisenberg(atoms: Atoms, signs: np.ndarray, lattice_constant: float) -> tuple[float, np.ndarray]:
    """(E in eV, (n,) magnitudes in μB) at the magnitudes that minimise E(σ) for the signs (n,) ±1 or 0."""
    i, j, d = neighbor_list("ijd", atoms, CUTOFF)
    weights = coupling(d) * signs[i] * signs[j]
    a = quadratic(lattice_constant)

    def energy(m: np.ndarray) -> tuple[float, np.ndarray]:
        pair = 0.5 * np.sum(weights * m[i] * m[j])
        field = np.zeros_like(m)
        np.add.at(field, i, weights * m[j])  # ∂/∂m_i of the pair sum (each pair appears both ways)
        return float(np.sum(a * m ** 2 + QUARTIC * m ** 4) + pair), 2 * a * m + 4 * QUARTIC * m ** 3 + field

    magnetic = signs != 0
    if not magnetic.any():
        return 0.0, np.zeros(len(atoms))
    start = np.where(magnetic, 2.5, 0.0)
    bounds = [(0.0, None) if s else (0.0, 0.0) for s in signs]
    result = minimize(energy, start, jac=True, bounds=bounds, method="L-BFGS-B", options={"gtol": 1e-12})
    return float(result.fun), np.where(result.x < 1e-6, 0.0, result.x)


def labelled_orders(reference, lattice_constants: list[float]) -> list[Atoms]:
    """Two-atom bcc cells at each lattice constant (Å) in every state of ORDERS, labelled with ``reference``'s
    energy and forces plus E(σ) − E(ferromagnetic); moments in ``arrays["magmoms_vector"]`` (along z), the
    state's signs as the initial moments (as a DFT run is started)."""
    frames = []
    for constant in lattice_constants:
        geometry = bulk("Fe", "bcc", constant, cubic=True)
        geometry.set_initial_magnetic_moments(None)
        out = reference.forward(reference.collate([reference.graph(geometry)]), stress=False)
        base = float(out.energy[0].detach())
        ferro, _ = landau_heisenberg(geometry, np.array(ORDERS["ferromagnetic"]), constant)
        for name, signs in ORDERS.items():
            signs = np.array(signs)
            energy, magnitudes = landau_heisenberg(geometry, signs, constant)
            atoms = geometry.copy()
            atoms.set_initial_magnetic_moments(2.5 * signs)
            atoms.calc = SinglePointCalculator(atoms, energy=base + energy - ferro,
                                               forces=out.forces.detach().numpy())
            atoms.arrays["magmoms_vector"] = np.stack([np.zeros(2), np.zeros(2), signs * magnitudes], axis=1)
            atoms.info.update({"order": name, "lattice_constant": constant})
            frames.append(atoms)
    return frames
