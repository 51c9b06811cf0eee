"""Train a spin-aware head on iron, then print the predicted magnetic moments along an MD run.

A spin-polarised iron set (``--data``: extended XYZ with per-atom moment vectors in
``arrays["magmoms_vector"]``, e.g. FitSNAP's fe_spin; by default ``data/magnetic/fe_orders_pbe_training.extxyz``, 28 PBE
frames of bcc, fcc and hcp iron, each geometry in two or three collinear orders, computed with GPAW by
``bench/fe_orders_dft.py --set training`` at lattice constants the held-out sets do not use) trains a
spin head on SevenNet-0 (by default with the backbone frozen: 28 frames of ideal cells carry energies but
no forces, too little to move the backbone; ``--method sparse`` tunes it beside the head); each frame's
moment directions are its spin configuration, and the head learns the magnitudes and the exchange
between orders.
The result is saved, loaded back as an ASE calculator, and drives Langevin MD of a 16-atom bcc
iron cell at 600 K, once ferromagnetic and once antiferromagnetic (alternating (001) layers, the B2
order), set with ``set_initial_magnetic_moments`` as for a DFT code. The energy difference of the two
orders is printed beside its PBE value at the same lattice constant (``fe_bcc_orders_pbe.json``, made
by ``bench/fe_orders_dft.py`` with GPAW), then the mean moment magnitude and the total moment along MD.

    python examples/spin_iron_md.py [--data FE.extxyz] [--head collinear|vector] [--frames 48] [--epochs 2]
        [--method zero_shot] [--head-lr 1e-2] [--steps 40] [-o OUT/]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from ase_moma import load_calculator
from ase_moma.finetune import METHODS, FinetuneConfig, finetune_potential
from ase_moma.finetune.potential_data import split_frames

TRAINING = Path(__file__).resolve().parents[1] / "data" / "magnetic" / "fe_orders_pbe_training.extxyz"
REFERENCE = Path(__file__).with_name("fe_bcc_orders_pbe.json")  # bench/fe_orders_dft.py's PBE energies of the orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=TRAINING, help="spin-polarised iron (extxyz with magmoms_vector; "
                        "default: the shipped PBE orders of bcc, fcc and hcp iron)")
    parser.add_argument("--frames", type=int, default=48, help="training + validation frames (≤ 32 atoms each)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--method", default="zero_shot", choices=METHODS, help="how the backbone moves "
                        "(zero_shot: frozen, only the head trains)")
    parser.add_argument("--head", default="collinear", choices=["collinear", "vector"])
    parser.add_argument("--head-lr", type=float, default=1e-2, help="the spin head's learning rate")
    parser.add_argument("--steps", type=int, default=40, help="MD steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--output", type=Path, help="where to keep the model (default: a temp dir)")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"no iron data at {args.data}")
    frames = [atoms for atoms in ase.io.read(args.data, ":") if len(atoms) <= 32]
    frames = [frames[i] for i in sorted(np.random.default_rng(0).permutation(len(frames))[:args.frames])]
    train, valid, _ = split_frames(frames, (0.8, 0.2, 0.0), seed=0)
    config = FinetuneConfig(method=args.method, spin_head=args.head, head_lr=args.head_lr, epochs=args.epochs,
                            batch_size=8)
    with tempfile.TemporaryDirectory(prefix="ase_moma_spin_") as tmp:
        out = args.output or Path(tmp) / "fe_spin_model"
        record = finetune_potential("sevennet", train, valid, out, config, device=args.device, name="fe_spin",
                                    overwrite=True)
        errors = record["metrics"]["valid"]
        head = record["spin_head"]
        print(f"train  : {args.method} + {args.head} spin head ({head['parameters']} parameters, "
              f"{100 * head['fraction_of_backbone']:.2f} % of the backbone), {record['result']['steps']} steps; "
              f"validation moment MAE {errors['magmoms_mae']:.3f} μB (|m| {errors['magmom_magnitude_mae']:.3f} μB), "
              f"energy {errors['energy_mae']:.1f} meV/atom, forces {errors['forces_mae']:.0f} meV/Å")

        calc = load_calculator(str(out), device=args.device)
        reference = json.loads(REFERENCE.read_text())
        orders = {}
        for order in ("ferromagnetic", "antiferromagnetic"):
            atoms = bulk("Fe", "bcc", reference["lattice_constant_angstrom"], cubic=True).repeat((2, 2, 2))
            layer = np.where(np.isclose(atoms.get_scaled_positions()[:, 2] % 0.5, 0), 1.0, -1.0)
            atoms.set_initial_magnetic_moments(2.2 * (layer if order == "antiferromagnetic" else np.ones(len(atoms))))
            atoms.calc = calc
            orders[order] = atoms
        difference = orders["antiferromagnetic"].get_potential_energy() - orders["ferromagnetic"].get_potential_energy()
        print(f"orders : E(AFM) − E(FM) = {1000 * difference / 16:+.1f} meV/atom (the head's exchange term); "
              f"DFT: {reference['minus_ferromagnetic_meV_per_atom']['antiferromagnetic']:+.1f} ± "
              f"{reference['uncertainty_meV_per_atom']['antiferromagnetic']:.1f} meV/atom "
              f"({reference['code'].split(',')[0]}, PBE, {REFERENCE.name}), moments "
              f"{reference['moments_muB']['ferromagnetic'][0]:.2f} μB (FM) and ±"
              f"{abs(reference['moments_muB']['antiferromagnetic'][0]):.2f} μB (AFM)")

        for order, atoms in orders.items():
            thermalize_momenta(atoms, 600, rng=np.random.default_rng(0))
            atoms.set_constraint(FixCom())  # the centre of mass held, as ASE advises in place of fixcm
            dynamics = Langevin(atoms, 1.0 * units.fs, temperature_K=600, friction=0.02 / units.fs, fixcm=False,
                                rng=np.random.default_rng(1))

            def report(atoms=atoms, dynamics=dynamics, order=order) -> None:
                moments = atoms.get_magnetic_moments()
                sizes = np.linalg.norm(moments, axis=1) if moments.ndim == 2 else np.abs(moments)
                total = np.atleast_1d(atoms.get_magnetic_moment())
                print(f"MD {order[:4]}: step {dynamics.nsteps:4d}  T {atoms.get_temperature():5.0f} K  mean |m| "
                      f"{sizes.mean():.3f} μB  total m ({', '.join(f'{v:+.2f}' for v in total)}) μB")

            dynamics.attach(report, interval=max(1, args.steps // 4))
            dynamics.run(args.steps)


if __name__ == "__main__":
    main()
