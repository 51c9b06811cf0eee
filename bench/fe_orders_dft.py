"""The DFT reference for bcc iron's magnetic orders: PBE energies of ferromagnetic, B2-antiferromagnetic
and non-magnetic bcc Fe at one lattice constant, with a convergence ladder, written as JSON.

The B2 (CsCl-type) antiferromagnet puts every atom's eight nearest neighbours antiparallel to it; in the
two-atom cubic cell it is the corner atom up and the body-centre atom down, and in a cubic supercell it is
alternating (001) layers, the order ``examples/spin_iron_md.py`` sets. The lattice constant defaults to
that example's 2.83 Å (near PBE's own bcc Fe minimum), so the example's predicted E(AFM) − E(FM) is
compared at the geometry it was computed for.

GPAW (plane waves, PBE, Fermi–Dirac smearing, collinear spins, no spin–orbit coupling) is not a
dependency of ase-moma; it builds from the package registry without BLAS or libxc (its own PBE):

    python -m venv /tmp/gpenv && /tmp/gpenv/bin/pip install numpy scipy ase pybind11 gpaw-data "setuptools>=75"
    CC=g++ CXX=g++ LDSHARED="g++ -shared" /tmp/gpenv/bin/pip install --no-build-isolation gpaw
    OMP_NUM_THREADS=1 /tmp/gpenv/bin/python bench/fe_orders_dft.py [-a 2.83] [-o examples/fe_bcc_orders_pbe.json]

Every rung of the ladder (cut-off, k-points, smearing) computes the three orders; the last rung is the
reference, and the larger change from the two rungs before it (a denser mesh and higher cut-off, then a
narrower smearing) is its stated numerical uncertainty. The ladder takes about 25 minutes on one core.

``--heldout FILE.extxyz`` instead computes a spin-configuration set no one in the repository had seen,
for ``bench/spin_orders.py --heldout``: small iron cells at several lattice constants, each in two or
three collinear orders at one geometry (bcc: ferromagnetic, B2, and ↑↑↓↓ double layers along [001];
fcc: ferromagnetic and L1₀ single layers along [001]), with PBE energy, forces, stress and moments
(``arrays["magmoms_vector"]``, along z). It takes about half an hour on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk

LADDER = ((400, 8, 0.10), (500, 12, 0.10), (600, 16, 0.10), (600, 16, 0.05))
"""(plane-wave cut-off in eV, k-points per axis of the two-atom cell, Fermi–Dirac width in eV); the last is the
reference. Smearing is narrowed only on the densest mesh, which carries it."""
ORDERS = {"ferromagnetic": (2.5, 2.5), "antiferromagnetic": (2.5, -2.5), "non-magnetic": (0.0, 0.0)}
"""Initial moments (μB) of the corner and body-centre atoms."""


def pbe(cutoff: float, kpoints: tuple[int, int, int], width: float, spinpol: bool = True):
    """A GPAW calculator: plane waves of ``cutoff`` eV, PBE, a ``kpoints`` mesh, Fermi–Dirac ``width`` eV."""
    from gpaw import GPAW, PW, FermiDirac

    return GPAW(mode=PW(cutoff), xc="PBE", kpts=kpoints, occupations=FermiDirac(width), spinpol=spinpol, txt=None)


def energy(order: str, lattice_constant: float, cutoff: float, kpoints: int, width: float) -> dict:
    """One self-consistent PBE run of the two-atom cubic cell: energy (eV/atom), moments (μB), seconds."""
    atoms = bulk("Fe", "bcc", lattice_constant, cubic=True)
    atoms.set_initial_magnetic_moments(ORDERS[order])  # set even when zero: GPAW otherwise starts iron magnetic
    start = time.perf_counter()
    atoms.calc = pbe(cutoff, (kpoints,) * 3, width, spinpol=order != "non-magnetic")
    total = atoms.get_potential_energy()
    moments = atoms.get_magnetic_moments() if order != "non-magnetic" else np.zeros(2)
    return {"energy_per_atom": total / len(atoms), "magmoms": [round(float(m), 4) for m in moments],
            "seconds": round(time.perf_counter() - start, 1)}


HELDOUT = (  # (lattice, lattice constants in Å, supercell, k-points, {order: a moment sign per atom})
    ("bcc", (2.76, 2.80, 2.87, 2.94), (1, 1, 1), (12, 12, 12), {"ferromagnetic": "++", "B2": "+-"}),
    ("bcc", (2.80, 2.87), (1, 1, 2), (12, 12, 6), {"ferromagnetic": "++++", "B2": "+-+-", "double layers": "++--"}),
    ("fcc", (3.45, 3.55, 3.65), (1, 1, 1), (10, 10, 10), {"ferromagnetic": "++++", "L1_0": "++--"}),
)
HELDOUT_SETTINGS = (500, 0.10)  # cut-off (eV) and Fermi–Dirac width (eV): the ladder's second rung


def heldout_frames() -> list:
    """Every (geometry, order) of HELDOUT computed with PBE: ``info["order"]``, ``info["energy"]`` (eV),
    ``arrays["forces"]``, ``info["stress"]`` (eV/Å³, Voigt) and ``arrays["magmoms_vector"]`` (μB)."""
    frames = []
    for lattice, constants, repeat, kpoints, orders in HELDOUT:
        for constant in constants:
            for order, signs in orders.items():
                atoms = bulk("Fe", lattice, constant, cubic=True).repeat(repeat)
                atoms = atoms[np.lexsort(np.round(atoms.positions, 6).T)]  # by z (then y, x): signs go layer by layer
                atoms.set_initial_magnetic_moments([2.5 if sign == "+" else -2.5 for sign in signs])
                start = time.perf_counter()
                atoms.calc = pbe(HELDOUT_SETTINGS[0], kpoints, HELDOUT_SETTINGS[1])
                energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
                moments = atoms.get_magnetic_moments()
                labelled = atoms.copy()
                labelled.calc = None
                labelled.info.update({"energy": energy, "stress": stress, "order": order, "lattice": lattice,
                                      "config_type": f"{lattice} {constant} Å {order}"})
                labelled.arrays["forces"] = forces
                labelled.arrays["magmoms_vector"] = np.stack([np.zeros_like(moments), np.zeros_like(moments), moments], 1)
                frames.append(labelled)
                print(f"{lattice} {constant} Å {order:14s} {energy / len(atoms):.4f} eV/atom, moments "
                      f"{np.round(moments, 2)}, {time.perf_counter() - start:.0f} s", flush=True)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--lattice-constant", type=float, default=2.83, help="cubic bcc lattice constant (Å)")
    parser.add_argument("-o", "--output", type=Path, default=Path("examples/fe_bcc_orders_pbe.json"))
    parser.add_argument("--heldout", type=Path, help="compute the held-out spin-configuration set into this extxyz")
    args = parser.parse_args()
    import gpaw

    if args.heldout:
        frames = heldout_frames()
        for atoms in frames:
            atoms.info["code"] = f"GPAW {gpaw.__version__} PBE, PW {HELDOUT_SETTINGS[0]} eV"
        ase.io.write(args.heldout, frames, format="extxyz")
        print(f"{len(frames)} frames: {args.heldout}")
        return

    rungs = []
    for cutoff, kpoints, width in LADDER:
        runs = {order: energy(order, args.lattice_constant, cutoff, kpoints, width) for order in ORDERS}
        ferro = runs["ferromagnetic"]["energy_per_atom"]
        gaps = {order: 1000 * (run["energy_per_atom"] - ferro) for order, run in runs.items() if order != "ferromagnetic"}
        rungs.append({"cutoff_eV": cutoff, "kpoints": kpoints, "fermi_dirac_eV": width, "runs": runs,
                      "minus_ferromagnetic_meV_per_atom": {k: round(v, 2) for k, v in gaps.items()}})
        print(f"cut-off {cutoff} eV, {kpoints}³ k, width {width} eV: "
              + ", ".join(f"E({order}) − E(FM) = {gap:+.1f} meV/atom" for order, gap in gaps.items())
              + "; moments " + ", ".join(f"{order[:4]} {runs[order]['magmoms']}" for order in runs), flush=True)
    last = rungs[-1]["minus_ferromagnetic_meV_per_atom"]
    earlier = [rung["minus_ferromagnetic_meV_per_atom"] for rung in rungs[-3:-1]]
    reference = {
        "what": "bcc Fe, two-atom cubic cell at fixed geometry: E(order) - E(ferromagnetic), meV/atom",
        "lattice_constant_angstrom": args.lattice_constant,
        "code": f"GPAW {gpaw.__version__}, plane waves, PBE (GPAW's own, no libxc), PAW setups of gpaw-data, "
                "collinear spins, no spin-orbit coupling",
        "minus_ferromagnetic_meV_per_atom": last,
        "uncertainty_meV_per_atom": {k: round(max(abs(last[k] - rung[k]) for rung in earlier), 2) for k in last},
        "moments_muB": {order: rungs[-1]["runs"][order]["magmoms"] for order in ORDERS},
        "ladder": rungs,
        "made_by": "python bench/fe_orders_dft.py" + (f" -a {args.lattice_constant}" if args.lattice_constant != 2.83 else ""),
    }
    args.output.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"reference: {args.output}")


if __name__ == "__main__":
    main()
