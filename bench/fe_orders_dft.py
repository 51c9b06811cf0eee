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

``--frames FILE.extxyz --set NAME`` instead computes a spin-configuration set (SETS): small iron cells,
each geometry in two or three collinear orders (bcc: ferromagnetic, B2, and ↑↑↓↓ double layers along
[001]; fcc: ferromagnetic and L1₀ single layers along [001]; hcp: ferromagnetic and alternating basal
planes; body-centred tetragonal: ferromagnetic and layered), with PBE energy, forces, stress and moments
(``arrays["magmoms_vector"]``, along z). Each frame is appended as it finishes, so a rerun resumes. The
sets ship in ``data/magnetic/fe_orders_pbe_{training,heldout,bain}.extxyz``: ``training`` (28 frames, about
35 minutes on one core) is what ``examples/spin_iron_md.py`` and ``bench/spin_orders.py --train`` train
on; ``heldout`` (20 frames, half an hour) and ``bain`` (6 frames, 5 minutes) are at lattice constants and
of a structure it lacks, for ``bench/spin_orders.py --heldout``. ``--heldout FILE`` is ``--frames FILE
--set heldout``.

``--set cobalt`` and ``--set cobalt_heldout`` compute cobalt, whose antiparallel orders lose their moment in
hcp and fcc while the ferromagnet keeps about 1.7 μB: each geometry ferromagnetic, antiparallel and
non-magnetic (a spin-unpolarised run, initial moments zero). They ship as
``data/magnetic/co_orders_pbe_{training,heldout}.extxyz`` for ``bench/spin_collapse.py`` (27 frames, about
50 minutes on one core; 15 frames, half an hour; an antiparallel run that collapses converges slowly, up to
13 minutes a frame).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
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


SETS = {
    # set: entries of (lattice, lattice constants in Å, supercell, k-points, {order: a moment sign per atom})
    "heldout": (
        ("bcc", (2.76, 2.80, 2.87, 2.94), (1, 1, 1), (12, 12, 12), {"ferromagnetic": "++", "B2": "+-"}),
        ("bcc", (2.80, 2.87), (1, 1, 2), (12, 12, 6), {"ferromagnetic": "++++", "B2": "+-+-", "double layers": "++--"}),
        ("fcc", (3.45, 3.55, 3.65), (1, 1, 1), (10, 10, 10), {"ferromagnetic": "++++", "L1_0": "++--"}),
    ),
    # what a user trains a spin head on: the orders of bcc, fcc and hcp iron at lattice constants none of the
    # held-out sets uses, so its order gaps are learnt from DFT that shows them. Ideal cells only (no forces
    # to learn from): a rattled 4-atom cell loses its symmetry and took over 10 minutes a frame on one core
    "training": (
        ("bcc", (2.74, 2.78, 2.85, 2.91, 2.97), (1, 1, 1), (12, 12, 12), {"ferromagnetic": "++", "B2": "+-"}),
        ("bcc", (2.82, 2.89), (1, 1, 2), (12, 12, 6), {"ferromagnetic": "++++", "B2": "+-+-", "double layers": "++--"}),
        ("fcc", (3.40, 3.50, 3.60, 3.70), (1, 1, 1), (10, 10, 10), {"ferromagnetic": "++++", "L1_0": "++--"}),
        ("hcp", (2.45, 2.55), (1, 1, 1), (12, 12, 8), {"ferromagnetic": "++", "AFM": "+-"}),
    ),
    # where moments shrink and vanish (issue 55): cobalt, whose antiparallel orders lose their moment in the
    # close-packed lattices while the ferromagnet keeps it; each geometry ferromagnetic, antiparallel and
    # non-magnetic ("0": no moment, computed spin-unpolarised)
    "cobalt": (
        ("hcp", (2.40, 2.45, 2.55, 2.60), (1, 1, 1), (12, 12, 8), {"ferromagnetic": "++", "AFM": "+-", "non-magnetic": "00"}),
        ("fcc", (3.40, 3.50, 3.60), (1, 1, 1), (10, 10, 10), {"ferromagnetic": "++++", "L1_0": "++--", "non-magnetic": "0000"}),
        ("bcc", (2.75, 2.85), (1, 1, 1), (12, 12, 12), {"ferromagnetic": "++", "B2": "+-", "non-magnetic": "00"}),
    ),
    # its held-out partner: the same lattices at lattice constants between the training ones
    "cobalt_heldout": (
        ("hcp", (2.425, 2.50), (1, 1, 1), (12, 12, 8), {"ferromagnetic": "++", "AFM": "+-", "non-magnetic": "00"}),
        ("fcc", (3.45, 3.55), (1, 1, 1), (10, 10, 10), {"ferromagnetic": "++++", "L1_0": "++--", "non-magnetic": "0000"}),
        ("bcc", (2.80,), (1, 1, 1), (12, 12, 12), {"ferromagnetic": "++", "B2": "+-", "non-magnetic": "00"}),
    ),
    # a second held-out set, of a structure the training set lacks: body-centred tetragonal cells on the Bain
    # path between bcc (c/a = 1) and fcc (c/a = √2) at 11.5 Å³/atom, ferromagnetic and in the layered order
    # (B2 at c/a = 1, L1_0 at √2). Eight-atom cells (irregular bcc orders, fcc double layers) took 10 minutes
    # a frame on one core and are left out
    "bain": (
        ("bct1.1", (2.84,), (1, 1, 1), (12, 12, 11), {"ferromagnetic": "++", "layered": "+-"}),
        ("bct1.2", (2.84,), (1, 1, 1), (12, 12, 10), {"ferromagnetic": "++", "layered": "+-"}),
        ("bct1.3", (2.84,), (1, 1, 1), (12, 12, 9), {"ferromagnetic": "++", "layered": "+-"}),
    ),
}
"""The spin-configuration sets ``--frames`` computes. A lattice "bctR" is body-centred tetragonal with c/a = R,
its lattice constant the bcc one of the same volume."""
MOMENT = {"+": 2.5, "-": -2.5, "0": 0.0}
"""Initial moment (μB) of each sign in SETS; a geometry all of whose signs are "0" is computed spin-unpolarised."""
ELEMENTS = {"cobalt": "Co", "cobalt_heldout": "Co"}
"""The element of a set (iron where not named)."""
SET_SETTINGS = (500, 0.10)  # cut-off (eV) and Fermi–Dirac width (eV): the ladder's second rung


def cell(lattice: str, constant: float, element: str = "Fe") -> Atoms:
    """The conventional cell of ``lattice`` (bcc, fcc, hcp with the ideal c/a, or bctR) at ``constant`` Å."""
    if lattice.startswith("bct"):
        ratio = float(lattice[3:])
        side = constant / ratio ** (1 / 3)  # the bcc cell's volume, stretched along z
        return Atoms(f"{element}2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[side, side, ratio * side],
                     pbc=True)
    if lattice == "hcp":
        return bulk(element, "hcp", constant, c=constant * np.sqrt(8 / 3))
    return bulk(element, lattice, constant, cubic=True)


def set_frames(name: str, done: set[str] = frozenset()) -> Iterator[Atoms]:
    """Every (geometry, order) of ``SETS[name]`` computed with PBE, one at a time: ``info["order"]``,
    ``info["energy"]`` (eV), ``arrays["forces"]``, ``info["stress"]`` (eV/Å³, Voigt) and
    ``arrays["magmoms_vector"]`` (μB). Frames whose ``config_type`` is in ``done`` are skipped."""
    for lattice, constants, repeat, kpoints, orders in SETS[name]:
        for constant in constants:
            geometry = cell(lattice, constant, ELEMENTS.get(name, "Fe")).repeat(repeat)
            geometry = geometry[np.lexsort(np.round(geometry.positions, 6).T)]  # by z (then y, x): signs go layer by layer
            for order, signs in orders.items():
                if f"{lattice} {constant} Å {order}" in done:
                    continue
                atoms = geometry.copy()
                atoms.set_initial_magnetic_moments([MOMENT[sign] for sign in signs])
                magnetic = any(sign != "0" for sign in signs)
                start = time.perf_counter()
                atoms.calc = pbe(SET_SETTINGS[0], kpoints, SET_SETTINGS[1], spinpol=magnetic)
                energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
                moments = atoms.get_magnetic_moments() if magnetic else np.zeros(len(atoms))
                labelled = atoms.copy()
                labelled.calc = None
                labelled.info.update({"energy": energy, "stress": stress, "order": order, "lattice": lattice,
                                      "config_type": f"{lattice} {constant} Å {order}"})
                labelled.arrays["forces"] = forces
                labelled.arrays["magmoms_vector"] = np.stack([np.zeros_like(moments), np.zeros_like(moments), moments], 1)
                print(f"{lattice} {constant} Å {order:14s} {energy / len(atoms):.4f} eV/atom, moments "
                      f"{np.round(moments, 2)}, {time.perf_counter() - start:.0f} s", flush=True)
                yield labelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--lattice-constant", type=float, default=2.83, help="cubic bcc lattice constant (Å)")
    parser.add_argument("-o", "--output", type=Path, default=Path("examples/fe_bcc_orders_pbe.json"))
    parser.add_argument("--frames", type=Path, help="compute the spin-configuration set --set into this extxyz")
    parser.add_argument("--set", default="heldout", choices=sorted(SETS), help="which set --frames computes")
    parser.add_argument("--heldout", type=Path, help="the same as --frames FILE --set heldout")
    args = parser.parse_args()
    import gpaw

    if args.heldout or args.frames:
        output, name = (args.heldout, "heldout") if args.heldout else (args.frames, args.set)
        done = {atoms.info["config_type"] for atoms in ase.io.read(output, ":")} if output.is_file() else set()
        for atoms in set_frames(name, done):  # each frame is appended as it is computed: a rerun resumes
            atoms.info["code"] = f"GPAW {gpaw.__version__} PBE, PW {SET_SETTINGS[0]} eV"
            atoms.info["set"] = name
            ase.io.write(output, atoms, format="extxyz", append=True)
        print(f"{len(ase.io.read(output, ':'))} frames: {output}")
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
