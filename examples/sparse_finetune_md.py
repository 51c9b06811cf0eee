"""Adapt SevenNet-0 to a DFT set with sparse equivariant fine-tuning, then run MD with the result.

By default the DFT set is mlearn's silicon (its small training frames, shipped in data/mlip): a seeded
subset is split into training and validation frames, the model is sparse-tuned (STR on the path
weights; the result is a plain SevenNet-0-shaped model), its errors and the fraction of path weights
it moved are printed, and NVE molecular dynamics runs on a test structure with the tuned calculator.

    python examples/sparse_finetune_md.py [--train T.extxyz --valid V.extxyz] [--method sparse]
        [--preset L|H] [--frames 48] [--epochs 3] [--device auto] [-o OUT/]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from ase_moma import load_calculator
from ase_moma.finetune import METHODS, PRESETS, FinetuneConfig, SparseOptions, finetune_potential
from ase_moma.finetune.potential_data import split_frames

DATA = Path(__file__).resolve().parents[1] / "data"  # small real sets shipped in the repository


def adapt(train: list[Atoms] | Path, valid: list[Atoms] | Path, out: Path, *, method: str = "sparse",
          preset: str = "L", epochs: int = 3, batch_size: int = 8, device: str = "auto") -> dict:
    """Fine-tune SevenNet-0 on ``train`` (early stopping on ``valid``) into ``out``; print a summary."""
    config = FinetuneConfig(method=method, options=SparseOptions(preset=preset) if method == "sparse" else None,
                            epochs=epochs, batch_size=batch_size)
    record = finetune_potential("sevennet", train, valid, out, config, device=device, name="example",
                                overwrite=True)
    valid_errors = record["metrics"]["valid"]
    updated = record["path_weights_updated"]
    first = record["result"]["history"][0]
    print(f"tune   : {method}{'-' + preset if method == 'sparse' else ''}, {record['result']['steps']} steps; "
          f"validation energy MAE {first['energy_mae']:.2f} -> {valid_errors['energy_mae']:.2f} meV/atom, "
          f"force MAE {first['forces_mae']:.1f} -> {valid_errors['forces_mae']:.1f} meV/Å; "
          f"{100 * updated['fraction']:.2f} % of {updated['size']} path weights moved")
    return record


def run_nve(calc, atoms: Atoms, steps: int, temperature_K: float = 300.0) -> tuple[float, np.ndarray]:
    """Velocity Verlet at 1 fs from ``temperature_K`` on a copy of ``atoms``.

    Returns steps per second and the total energy per atom relative to the start (eV/atom) at each step.
    """
    atoms = atoms.copy()
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K, rng=np.random.default_rng(0))
    Stationary(atoms)
    totals = []
    dynamics = VelocityVerlet(atoms, 1.0 * units.fs)
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
    start = time.perf_counter()
    dynamics.run(steps)
    rate = steps / (time.perf_counter() - start)
    return rate, (np.array(totals) - totals[0]) / len(atoms)


def run_md(out: Path, atoms: Atoms, steps: int, device: str = "auto") -> None:
    """NVE from 300 K with the tuned calculator in ``out``; prints the energy drift."""
    rate, per_atom = run_nve(load_calculator(str(out), device=device), atoms, steps)
    print(f"MD     : tuned model, {len(atoms)} atoms, {steps} NVE steps at 1 fs, {rate:.1f} steps/s, "
          f"total-energy drift {1e3 * per_atom[-1]:+.4f} meV/atom")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="DFT training set (default: mlearn Si, data/mlip)")
    parser.add_argument("--valid", type=Path, help="DFT validation set (default: split from --train)")
    parser.add_argument("--method", default="sparse", choices=METHODS)
    parser.add_argument("--preset", default="L", choices=list(PRESETS))
    parser.add_argument("--frames", type=int, default=48, help="use at most this many training frames")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="MD steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--output", type=Path, help="where to keep the tuned model (default: a temp dir)")
    args = parser.parse_args()
    source = args.train or DATA / "mlip" / "mlearn_Si_training.extxyz"
    if not source.is_file():
        parser.error(f"no training set: {source} does not exist (pass --train)")
    frames = ase.io.read(source, ":")
    frames = [frames[i] for i in sorted(np.random.default_rng(0).permutation(len(frames))[:args.frames])]
    if args.valid:
        train, valid = frames, ase.io.read(args.valid, ":")
    else:
        train, valid, _ = split_frames(frames, (0.8, 0.2, 0.0), seed=0)
    with tempfile.TemporaryDirectory(prefix="ase_moma_tuned_") as tmp:
        out = args.output or Path(tmp) / "tuned"
        adapt(train, valid, out, method=args.method, preset=args.preset, epochs=args.epochs, device=args.device)
        run_md(out, valid[0], args.steps, args.device)


if __name__ == "__main__":
    main()
